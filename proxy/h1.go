package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// h1Client is the proxy's fast path to plain-HTTP/1.1 backends. Unlike
// http.Transport, which hands every request to a writer goroutine and
// every response to a reader goroutine, it writes the request and reads
// the response headers on the caller's goroutine over a pooled keep-alive
// connection. Profiles of the proxy on two cores showed those hand-offs,
// not parsing, as the largest cost per request.
//
// It takes only requests that are safe to send again on a fresh
// connection when a pooled one turns out to be stale (bodiless GET, HEAD,
// OPTIONS, TRACE without Upgrade or Expect); everything else goes to the
// fallback transport, which handles request bodies, 100-continue and
// protocol switches.
type h1Client struct {
	addr     string
	dialer   *net.Dialer
	timeout  time.Duration // response-header timeout; 0 none
	fallback *http.Transport

	mu     sync.Mutex
	idle   []*h1Conn // LIFO: the most recently used connection is warmest
	closed bool
}

const (
	h1MaxIdle     = 1024
	h1IdleTimeout = 60 * time.Second
)

type h1Conn struct {
	nc       net.Conn
	br       *bufio.Reader // reads through dr
	bw       *bufio.Writer
	dr       deadlineReader
	fast     h1Fast // the fast path's response, reused
	lastUsed time.Time
}

// h1WatchSlice bounds how long a read on a backend connection blocks
// before it looks at the request's context again. A read deadline that is
// only refreshed when half used up replaces a context.AfterFunc per
// request (five allocations and a lock on the server's context); the
// price is that a client hanging up is noticed up to one slice late.
const h1WatchSlice = 500 * time.Millisecond

// deadlineReader is the backend connection as its bufio.Reader sees it:
// reads that hit the rolling deadline are resumed unless the request's
// context is done or the response-header deadline (hard) has passed.
type deadlineReader struct {
	nc   net.Conn
	ctx  context.Context // of the request using the connection; nil when idle
	hard time.Time       // response-header deadline; zero: none
	dl   time.Time       // read deadline currently set on nc
}

// arm makes sure a read deadline no later than hard and not about to
// expire is set, touching the socket only when the current one is not.
func (d *deadlineReader) arm(now time.Time) {
	want := now.Add(h1WatchSlice)
	if !d.hard.IsZero() && d.hard.Before(want) {
		want = d.hard
	}
	if d.dl.IsZero() || d.dl.After(want) || d.dl.Sub(now) < h1WatchSlice/2 {
		_ = d.nc.SetReadDeadline(want)
		d.dl = want
	}
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	for {
		n, err := d.nc.Read(p)
		if n > 0 || err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
			return n, err
		}
		if d.ctx != nil {
			if cerr := d.ctx.Err(); cerr != nil {
				return 0, fmt.Errorf("waiting for backend: %w", cerr)
			}
		}
		now := time.Now()
		if !d.hard.IsZero() && !now.Before(d.hard) {
			return 0, err // a net.Error whose Timeout() is true: 504
		}
		d.dl = time.Time{}
		d.arm(now)
	}
}

func newH1Client(addr string, timeout time.Duration, fallback *http.Transport) *h1Client {
	dialTimeout := 10 * time.Second
	if timeout > 0 && timeout < dialTimeout {
		dialTimeout = timeout
	}
	return &h1Client{
		addr:     addr,
		dialer:   &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second},
		timeout:  timeout,
		fallback: fallback,
	}
}

func fastEligible(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
	default:
		return false
	}
	if r.Body != nil && r.Body != http.NoBody || r.ContentLength != 0 {
		return false
	}
	_, up := r.Header["Upgrade"]
	_, exp := r.Header["Expect"]
	return !up && !exp && !r.Close
}

// RoundTrip implements http.RoundTripper.
func (c *h1Client) RoundTrip(r *http.Request) (*http.Response, error) {
	if !fastEligible(r) {
		return c.fallback.RoundTrip(r)
	}
	return c.forward(r, nil)
}

func isStale(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe")
}

// forward sends r to the backend over a pooled connection and reads the
// response headers. With fr it writes the outgoing head straight from r and
// the route (no outgoing *http.Request); without, r is already the
// outgoing request. A pooled connection the backend closed while idle fails
// before any byte of answer; the request is replayable, so it dials afresh
// once. r must satisfy fastEligible.
func (c *h1Client) forward(r *http.Request, fr *fastReq) (*http.Response, error) {
	ctx := r.Context()
	for attempt := 0; ; attempt++ {
		pc, reused, err := c.get(ctx)
		if err != nil {
			return nil, err
		}
		resp, err := c.exchange(ctx, pc, r, fr)
		if err == nil {
			return resp, nil
		}
		_ = pc.nc.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if reused && attempt == 0 && isStale(err) {
			continue
		}
		return nil, err
	}
}

// exchange writes the request on pc (from fr when set, else r as it is)
// and reads the response headers. The returned body gives pc back to the
// pool once read to the end.
func (c *h1Client) exchange(ctx context.Context, pc *h1Conn, r *http.Request, fr *fastReq) (*http.Response, error) {
	var err error
	if fr != nil {
		err = writeOutHead(pc.bw, r, fr)
	} else {
		err = writeRequest(pc.bw, r)
	}
	if err != nil {
		return nil, fmt.Errorf("write request: %w", err)
	}
	now := time.Now()
	d := &pc.dr
	d.ctx = ctx
	d.hard = time.Time{}
	if c.timeout > 0 {
		d.hard = now.Add(c.timeout)
	}
	if dl, ok := ctx.Deadline(); ok && (d.hard.IsZero() || dl.Before(d.hard)) {
		d.hard = dl
	}
	d.arm(now)
	if fr != nil {
		return c.readFastResponse(pc, r.Method)
	}
	var resp *http.Response
	for {
		resp, err = http.ReadResponse(pc.br, r)
		if err != nil {
			return nil, fmt.Errorf("read response: %w", err)
		}
		// 1xx informational answers precede the real one.
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
	}
	// The route timeout bounds the wait for headers only, not the body.
	d.hard = time.Time{}
	reusable := !resp.Close
	if resp.Body == http.NoBody {
		c.put(pc, reusable)
		return resp, nil
	}
	resp.Body = &h1Body{rc: resp.Body, pc: pc, c: c, reusable: reusable}
	return resp, nil
}

// writeRequest writes r's request line and headers. Header values come
// from net/http's server or from validated route settings; a value with a
// line break is dropped anyway rather than trusted.
func writeRequest(bw *bufio.Writer, r *http.Request) error {
	_, _ = bw.WriteString(r.Method)
	_ = bw.WriteByte(' ')
	_, _ = bw.WriteString(r.URL.EscapedPath())
	if r.URL.RawQuery != "" {
		_ = bw.WriteByte('?')
		_, _ = bw.WriteString(r.URL.RawQuery)
	}
	_, _ = bw.WriteString(" HTTP/1.1\r\nHost: ")
	host := r.Host
	if host == "" {
		host = r.URL.Host
	}
	_, _ = bw.WriteString(host)
	_, _ = bw.WriteString("\r\n")
	for k, vv := range r.Header {
		if k == "Host" || k == "Content-Length" {
			continue
		}
		for _, v := range vv {
			if (v == "" && k == "User-Agent") || strings.ContainsAny(v, "\r\n") {
				continue
			}
			_, _ = bw.WriteString(k)
			_, _ = bw.WriteString(": ")
			_, _ = bw.WriteString(v)
			_, _ = bw.WriteString("\r\n")
		}
	}
	_, _ = bw.WriteString("\r\n")
	return bw.Flush()
}

func (c *h1Client) get(ctx context.Context) (*h1Conn, bool, error) {
	now := time.Now()
	c.mu.Lock()
	for n := len(c.idle); n > 0; n = len(c.idle) {
		pc := c.idle[n-1]
		c.idle[n-1] = nil
		c.idle = c.idle[:n-1]
		if now.Sub(pc.lastUsed) < h1IdleTimeout {
			c.mu.Unlock()
			return pc, true, nil
		}
		_ = pc.nc.Close()
	}
	c.mu.Unlock()
	nc, err := c.dialer.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return nil, false, fmt.Errorf("dial backend: %w", err)
	}
	pc := &h1Conn{nc: nc, bw: bufio.NewWriterSize(nc, 4<<10)}
	pc.dr.nc = nc
	pc.br = bufio.NewReaderSize(&pc.dr, 16<<10)
	return pc, false, nil
}

func (c *h1Client) put(pc *h1Conn, reusable bool) {
	if !reusable {
		_ = pc.nc.Close()
		return
	}
	pc.lastUsed = time.Now()
	pc.dr.ctx = nil // an idle connection must not keep a finished request alive
	c.mu.Lock()
	if c.closed || len(c.idle) >= h1MaxIdle {
		c.mu.Unlock()
		_ = pc.nc.Close()
		return
	}
	c.idle = append(c.idle, pc)
	c.mu.Unlock()
}

// CloseIdleConnections closes the pooled connections; connections in use
// close when their response ends.
func (c *h1Client) CloseIdleConnections() {
	c.mu.Lock()
	idle := c.idle
	c.idle = nil
	c.mu.Unlock()
	for _, pc := range idle {
		_ = pc.nc.Close()
	}
	c.fallback.CloseIdleConnections()
}

// h1Body returns its connection to the pool when the body has been read to
// the end, and closes it when abandoned early (the rest of the body would
// otherwise be read as the next response).
type h1Body struct {
	rc       io.ReadCloser
	pc       *h1Conn
	c        *h1Client
	reusable bool
	done     bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.finish(true)
	} else if err != nil {
		b.finish(false)
	}
	return n, err
}

func (b *h1Body) Close() error {
	if !b.done {
		b.finish(false)
	}
	return nil
}

func (b *h1Body) finish(complete bool) {
	b.done = true
	ok := complete && b.reusable
	if ok {
		b.c.put(b.pc, true)
	} else {
		_ = b.pc.nc.Close()
	}
}
