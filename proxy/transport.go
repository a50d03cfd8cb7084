package proxy

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// transportKey is everything that makes two backends need different
// transports. Routes to the same backend with the same options share one,
// and with it their pool of keep-alive connections.
type transportKey struct {
	scheme     string
	host       string
	skipVerify bool
	h2         bool
	timeout    time.Duration
}

type transportEntry struct {
	t  *http.Transport
	h1 *h1Client // plain-HTTP/1.1 backends: the fast path in front of t
}

func (te *transportEntry) closeIdle() {
	if te.h1 != nil {
		te.h1.CloseIdleConnections()
		return
	}
	te.t.CloseIdleConnections()
}

// forwarder is the round tripper requests use: the fast HTTP/1.1 client
// when the backend allows it, the standard transport otherwise.
func (te *transportEntry) forwarder() http.RoundTripper {
	if te.h1 != nil {
		return te.h1
	}
	return te.t
}

// newTransport builds a transport tuned for proxying: a deep idle pool per
// host (the default of 2 makes every burst above 2 concurrent requests
// dial), no transparent gzip (responses pass through as the backend sent
// them), and the route timeout as the response-header timeout, which costs
// nothing per request unlike a context deadline.
func newTransport(k transportKey) *http.Transport {
	dialTimeout := 10 * time.Second
	if k.timeout > 0 && k.timeout < dialTimeout {
		dialTimeout = k.timeout
	}
	d := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	t := &http.Transport{
		Proxy:                  nil,
		DialContext:            d.DialContext,
		MaxIdleConns:           0,
		MaxIdleConnsPerHost:    1024,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    10 * time.Second,
		ExpectContinueTimeout:  time.Second,
		ResponseHeaderTimeout:  k.timeout,
		DisableCompression:     true,
		WriteBufferSize:        16 << 10,
		ReadBufferSize:         16 << 10,
		MaxResponseHeaderBytes: 1 << 20,
	}
	if k.scheme == "https" {
		t.TLSClientConfig = &tls.Config{InsecureSkipVerify: k.skipVerify} //nolint:gosec // the tls_skip_verify route option asks for it
	}
	var protos http.Protocols
	switch {
	case k.h2 && k.scheme == "https":
		protos.SetHTTP1(true)
		protos.SetHTTP2(true)
	case k.h2:
		// Plain-text HTTP/2 with prior knowledge (h2c).
		protos.SetUnencryptedHTTP2(true)
	default:
		protos.SetHTTP1(true)
	}
	t.Protocols = &protos
	return t
}

// transportLocked returns the shared transport entry for k. p.mu is held.
func (p *Proxy) transportLocked(k transportKey, used map[transportKey]bool) *transportEntry {
	used[k] = true
	if te, ok := p.transports[k]; ok {
		return te
	}
	te := &transportEntry{t: newTransport(k)}
	if k.scheme == "http" && !k.h2 {
		te.h1 = newH1Client(hostPort(k.host), k.timeout, te.t)
	}
	p.transports[k] = te
	return te
}

// hostPort adds the default port to a backend host.
func hostPort(h string) string {
	if _, _, err := net.SplitHostPort(h); err == nil {
		return h
	}
	return net.JoinHostPort(strings.Trim(h, "[]"), "80")
}

// parseTarget parses a backend URL, mapping ws/wss to http/https.
func parseTarget(raw string) (target, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return target{}, fmt.Errorf("parse backend url %q: %w", raw, err)
	}
	scheme := u.Scheme
	switch scheme {
	case "ws":
		scheme = "http"
	case "wss":
		scheme = "https"
	case "http", "https":
	default:
		return target{}, fmt.Errorf("backend url %q: unsupported scheme %q", raw, u.Scheme)
	}
	if u.Host == "" {
		return target{}, fmt.Errorf("backend url %q: no host", raw)
	}
	return target{scheme: scheme, host: u.Host, path: strings.TrimSuffix(u.Path, "/"), query: u.RawQuery}, nil
}

// String is the URL of the target's root.
func (t target) String() string {
	return t.scheme + "://" + t.host + t.path
}
