package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// workDir returns dir/name (created) or a new temporary directory, and a
// cleanup that removes only what it created.
func workDir(dir, name string) (string, func(), error) {
	if dir != "" {
		d := dir + "/" + name
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", nil, fmt.Errorf("work dir: %w", err)
		}
		return d, func() {}, nil
	}
	d, err := os.MkdirTemp("", "raftgate-bench-"+name+"-")
	if err != nil {
		return "", nil, fmt.Errorf("work dir: %w", err)
	}
	// Peers that drop privileges (nginx workers) must reach their files.
	_ = os.Chmod(d, 0o755)
	return d, func() { os.RemoveAll(d) }, nil
}

var probeClient = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16, DisableCompression: true}}

// get does one GET with Host header host and returns the status code.
func get(ctx context.Context, c *http.Client, url, host string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, fmt.Errorf("request %s: %w", url, err)
	}
	if host != "" {
		req.Host = host
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// waitOK polls url until it answers 200.
func waitOK(ctx context.Context, url, host string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last string
	for time.Now().Before(deadline) {
		code, err := get(ctx, probeClient, url, host)
		if err == nil && code == http.StatusOK {
			return nil
		}
		last = fmt.Sprint(code, err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s (Host %s) not answering 200 after %s: last %s", url, host, limit, last)
}
