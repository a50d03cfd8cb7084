package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// BackendTestResult is the outcome of TestBackend, in the JSON form of the
// BACKEND_TEST response. TLSValid is set only for https/wss backends.
type BackendTestResult struct {
	Reachable      bool   `json:"reachable"`
	ResponseTimeMS int64  `json:"response_time_ms,omitempty"`
	StatusCode     int    `json:"status_code,omitempty"`
	TLSValid       *bool  `json:"tls_valid,omitempty"`
	Error          string `json:"error,omitempty"`
}

// TestBackend sends one GET to backendURL (ws and wss map to http and
// https) within timeout and reports what happened. A backend whose
// certificate does not verify is reachable with TLSValid false. It changes
// nothing and keeps no connection.
func TestBackend(ctx context.Context, backendURL string, timeout time.Duration) BackendTestResult {
	u, err := url.Parse(backendURL)
	if err != nil || u.Host == "" {
		return BackendTestResult{Error: "invalid backend url"}
	}
	switch u.Scheme {
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	case "http", "https":
	default:
		return BackendTestResult{Error: "unsupported scheme"}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res, err := testGet(ctx, u.String(), false)
	if err == nil || u.Scheme != "https" || !isCertError(err) {
		if err != nil {
			return BackendTestResult{Error: shortError(err)}
		}
		if u.Scheme == "https" {
			valid := true
			res.TLSValid = &valid
		}
		return res
	}
	res, err = testGet(ctx, u.String(), true)
	if err != nil {
		return BackendTestResult{Error: shortError(err)}
	}
	valid := false
	res.TLSValid = &valid
	return res
}

func testGet(ctx context.Context, u string, skipVerify bool) (BackendTestResult, error) {
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: skipVerify}, //nolint:gosec // only after a verified attempt failed, to report reachability
		DisableKeepAlives: true,
		Proxy:             nil,
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return BackendTestResult{}, err
	}
	req.Header.Set("User-Agent", "raftgate-backend-test")
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return BackendTestResult{}, err
	}
	elapsed := time.Since(start)
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	return BackendTestResult{Reachable: true, ResponseTimeMS: elapsed.Milliseconds(), StatusCode: resp.StatusCode}, nil
}

func isCertError(err error) bool {
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		verify   *tls.CertificateVerificationError
	)
	return errors.As(err, &unknown) || errors.As(err, &hostname) || errors.As(err, &invalid) || errors.As(err, &verify)
}

// shortError turns a dial or HTTP error into the short lower-case text the
// protocol shows users; never a Go error dump.
func shortError(err error) string {
	var (
		dnsErr *net.DNSError
		netErr net.Error
	)
	switch {
	case err == nil:
		return ""
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "host unreachable"
	case errors.As(err, &dnsErr):
		return "no such host"
	case isCertError(err):
		return "tls certificate invalid"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed by backend"
	case strings.Contains(err.Error(), "tls:"):
		return "tls handshake failed"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return "unreachable"
}
