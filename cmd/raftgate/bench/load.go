package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// loadSpec is one load run: the same generator settings for every target.
type loadSpec struct {
	Threads  int
	Conns    int
	Duration time.Duration
}

// loadResult is what one run measured.
type loadResult struct {
	RPS      float64
	P50ms    float64
	P99ms    float64
	Requests int64
	Errors   int64 // socket errors and non-2xx answers
}

// generator runs load against url with Host header host.
type generator interface {
	name() string
	run(ctx context.Context, url, host string, s loadSpec) (loadResult, error)
}

// wrkGen drives wrk (https://github.com/wg/wrk) with --latency.
type wrkGen struct{ path string }

func (g wrkGen) name() string { return "wrk" }

func (g wrkGen) run(ctx context.Context, url, host string, s loadSpec) (loadResult, error) {
	args := []string{fmt.Sprintf("-t%d", s.Threads), fmt.Sprintf("-c%d", s.Conns),
		fmt.Sprintf("-d%ds", max(1, int(s.Duration.Round(time.Second)/time.Second))), "--latency"}
	if host != "" {
		args = append(args, "-H", "Host: "+host)
	}
	args = append(args, url)
	out, err := exec.CommandContext(ctx, g.path, args...).CombinedOutput()
	if err != nil {
		return loadResult{}, fmt.Errorf("wrk %s: %w\n%s", url, err, out)
	}
	return parseWrk(string(out))
}

var (
	wrkRPS     = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkPct     = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s|m)\s*$`)
	wrkTotal   = regexp.MustCompile(`(\d+) requests in`)
	wrkNon2xx  = regexp.MustCompile(`Non-2xx or 3xx responses:\s+(\d+)`)
	wrkSockErr = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

// parseWrk reads requests/s, the 50th and 99th percentile and the error
// counts from wrk --latency output.
func parseWrk(out string) (loadResult, error) {
	var r loadResult
	m := wrkRPS.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("wrk output has no Requests/sec line:\n%s", out)
	}
	r.RPS, _ = strconv.ParseFloat(m[1], 64)
	for _, p := range wrkPct.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(p[2], 64)
		switch p[3] {
		case "us":
			v /= 1000
		case "s":
			v *= 1000
		case "m":
			v *= 60000
		}
		if p[1] == "50" {
			r.P50ms = v
		} else {
			r.P99ms = v
		}
	}
	if m := wrkTotal.FindStringSubmatch(out); m != nil {
		r.Requests, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := wrkNon2xx.FindStringSubmatch(out); m != nil {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		r.Errors += n
	}
	if m := wrkSockErr.FindStringSubmatch(out); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.ParseInt(s, 10, 64)
			r.Errors += n
		}
	}
	return r, nil
}

// goGen is the built-in load loop used when wrk is not installed: Conns
// goroutines, each with its own keep-alive connection, for Duration.
type goGen struct{}

func (goGen) name() string { return "go-loop" }

func (goGen) run(ctx context.Context, url, host string, s loadSpec) (loadResult, error) {
	tr := &http.Transport{MaxIdleConnsPerHost: s.Conns, MaxConnsPerHost: s.Conns, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	ctx, cancel := context.WithTimeout(ctx, s.Duration)
	defer cancel()
	var errs, total atomic.Int64
	lat := make([][]time.Duration, s.Conns)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < s.Conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			if host != "" {
				req.Host = host
			}
			local := make([]time.Duration, 0, 4096)
			for ctx.Err() == nil {
				t0 := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						errs.Add(1)
					}
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				local = append(local, time.Since(t0))
				total.Add(1)
				if resp.StatusCode >= 300 {
					errs.Add(1)
				}
			}
			lat[i] = local
		}()
	}
	wg.Wait()
	el := time.Since(start)
	var all []float64
	for _, l := range lat {
		all = append(all, durationsMS(l)...)
	}
	if len(all) == 0 {
		return loadResult{}, fmt.Errorf("go load loop against %s: no request completed (%d errors)", url, errs.Load())
	}
	return loadResult{RPS: float64(total.Load()) / el.Seconds(), P50ms: quantile(all, 0.5), P99ms: quantile(all, 0.99),
		Requests: total.Load(), Errors: errs.Load()}, nil
}

// pickGenerator returns wrk when installed, unless force names one.
func pickGenerator(force string) (generator, error) {
	switch force {
	case "go":
		return goGen{}, nil
	case "wrk", "":
		if p, err := exec.LookPath("wrk"); err == nil {
			return wrkGen{path: p}, nil
		}
		if force == "wrk" {
			return nil, errors.New("--load wrk: wrk is not installed")
		}
		return goGen{}, nil
	}
	return nil, fmt.Errorf("unknown --load %q: use wrk or go", force)
}

// backendHandler answers every request with the same body, as the
// benchmark backend.
func backendHandler(body []byte) http.Handler {
	clen := strconv.Itoa(len(body))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Content-Type"] = []string{"text/plain"}
		h["Content-Length"] = []string{clen}
		_, _ = w.Write(body)
	})
}

// serveBackend serves the benchmark backend on ln until ctx ends.
func serveBackend(ctx context.Context, ln net.Listener, bodySize int) error {
	srv := &http.Server{Handler: backendHandler([]byte(strings.Repeat("x", bodySize))), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("benchmark backend: %w", err)
	}
	return nil
}

// RunBackend is the hidden `raftgate bench backend` process: it serves a
// body of --body bytes on --addr and prints "listening ADDR".
func RunBackend(ctx context.Context, addr string, bodySize int, stdout io.Writer) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("benchmark backend: %w", err)
	}
	fmt.Fprintf(stdout, "listening %s\n", ln.Addr())
	return serveBackend(ctx, ln, bodySize)
}
