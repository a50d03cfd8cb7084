package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// frontMaxHead bounds a request head the fast loop reads itself; longer
// ones go to net/http with its own limit.
const frontMaxHead = 64 << 10

// FrontServer serves the proxy's clients over HTTP/1.1 with its own
// keep-alive loop for the common case (GET/HEAD without a body, origin-form
// target, plain headers) and hands every other connection, from the first
// request that is not such a one, to a standard http.Server. Per request
// the fast loop saves what net/http spends on a background-read goroutine,
// deadline updates, a response object and a header snapshot.
//
// Unlike net/http, the fast loop does not watch the client while the
// backend works on an answer: a client that hangs up is noticed when its
// answer is written (or by the route timeout), as with a proxy that
// ignores client aborts.
type FrontServer struct {
	p        *Proxy
	fallback *http.Server
	fbLn     *chanListener
	// ReadHeaderTimeout bounds reading one request head; IdleTimeout the
	// wait for the next request on a kept-alive connection.
	readHeaderTimeout time.Duration
	idleTimeout       time.Duration

	mu     sync.Mutex
	lns    []net.Listener
	conns  map[*frontConn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// NewFrontServer makes a FrontServer for p. fallback serves the
// connections the fast loop hands over; its Handler is set to p when nil,
// and its ReadHeaderTimeout and IdleTimeout (defaults 30 s and 2 min) also
// apply to the fast loop.
func NewFrontServer(p *Proxy, fallback *http.Server) *FrontServer {
	if fallback == nil {
		fallback = &http.Server{}
	}
	if fallback.Handler == nil {
		fallback.Handler = p
	}
	s := &FrontServer{p: p, fallback: fallback, readHeaderTimeout: fallback.ReadHeaderTimeout,
		idleTimeout: fallback.IdleTimeout, conns: map[*frontConn]struct{}{}}
	if s.readHeaderTimeout <= 0 {
		s.readHeaderTimeout = 30 * time.Second
	}
	if s.idleTimeout <= 0 {
		s.idleTimeout = 2 * time.Minute
	}
	s.fbLn = newChanListener()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = fallback.Serve(s.fbLn)
	}()
	return s
}

// Serve accepts connections on ln until it fails or the server is shut
// down (then it returns http.ErrServerClosed).
func (s *FrontServer) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return http.ErrServerClosed
	}
	s.lns = append(s.lns, ln)
	s.mu.Unlock()
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return http.ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("accept proxy connection: %w", err)
		}
		c := &frontConn{s: s, nc: nc}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = nc.Close()
			return http.ErrServerClosed
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go c.serve()
	}
}

// Shutdown stops accepting, closes idle connections, lets requests in
// progress finish (until ctx ends, then closes them) and shuts the
// fallback server down the same way.
func (s *FrontServer) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	for _, ln := range s.lns {
		_ = ln.Close()
	}
	for c := range s.conns {
		c.closeIfIdle()
	}
	s.mu.Unlock()
	err := s.fallback.Shutdown(ctx)
	_ = s.fbLn.Close() // hand-overs from here on are refused and closed
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	for {
		select {
		case <-done:
			return err
		case <-ctx.Done():
			s.mu.Lock()
			for c := range s.conns {
				_ = c.nc.Close()
			}
			s.mu.Unlock()
			<-done
			return fmt.Errorf("front server shutdown: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
			// Connections that finished a request since the last look
			// are idle now.
			s.mu.Lock()
			for c := range s.conns {
				c.closeIfIdle()
			}
			s.mu.Unlock()
		}
	}
}

func (s *FrontServer) forget(c *frontConn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// frontConn is one client connection in the fast loop.
type frontConn struct {
	s  *FrontServer
	nc net.Conn
	br *bufio.Reader
	bw *bufio.Writer

	mu     sync.Mutex
	active bool // a request is being read or served
	closed bool

	raw        []byte        // the current request head as received, for a hand-over
	head       h1Fast        // parsed keys and values
	closeAfter bool          // the client asked to close after this answer
	dl         time.Time     // read deadline set on nc
	req        *http.Request // reused for every request of the connection
	u          url.URL
	w          frontWriter
}

func (c *frontConn) closeIfIdle() {
	c.mu.Lock()
	if !c.active && !c.closed {
		c.closed = true
		_ = c.nc.Close()
	}
	c.mu.Unlock()
}

func (c *frontConn) setActive(a bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.active = a
	return true
}

func (c *frontConn) serve() {
	handedOver := false
	defer func() {
		if !handedOver {
			_ = c.bw.Flush() // whatever was answered, even if cut short
			_ = c.nc.Close()
		}
		c.s.forget(c)
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.req = (&http.Request{}).WithContext(ctx)
	if _, isTLS := c.nc.(*tls.Conn); isTLS {
		// r.TLS and the handshake belong to net/http.
		handedOver = c.s.fbLn.deliver(c.nc)
		return
	}
	c.br = bufio.NewReaderSize(c.nc, 4<<10)
	c.bw = bufio.NewWriterSize(c.nc, 4<<10)
	remote := c.nc.RemoteAddr().String()
	for {
		if !c.awaitRequest() || !c.setActive(true) {
			return
		}
		ok, err := c.readRequest(remote)
		if err != nil {
			return
		}
		if !ok {
			_ = c.nc.SetReadDeadline(time.Time{}) // net/http sets its own
			handedOver = c.handOver()
			return
		}
		if !c.serveOne() || c.closeAfter {
			return
		}
		if !c.setActive(false) {
			return
		}
	}
}

// awaitRequest waits for the first byte of the next request, for up to
// the idle timeout. One rolling read deadline serves both limits: it is
// moved to now+ReadHeaderTimeout only when less than that minus a second
// is left (half of it when that is shorter), so a head is read within
// ReadHeaderTimeout while the socket's
// deadline changes about once a second instead of three times a request;
// an idle wait that reaches it simply re-arms until the idle timeout.
func (c *frontConn) awaitRequest() bool {
	margin := min(time.Second, c.s.readHeaderTimeout/2)
	now := time.Now()
	idleSince := now
	for {
		if c.dl.Sub(now) < c.s.readHeaderTimeout-margin {
			c.dl = now.Add(c.s.readHeaderTimeout)
			_ = c.nc.SetReadDeadline(c.dl)
		}
		_, err := c.br.Peek(1)
		if err == nil {
			return true
		}
		now = time.Now()
		if !errors.Is(err, os.ErrDeadlineExceeded) || now.Sub(idleSince) >= c.s.idleTimeout {
			return false
		}
	}
}

// handOver gives the connection, with the bytes already read, to the
// fallback server.
func (c *frontConn) handOver() bool {
	// Answers to pipelined requests before this one may still be buffered.
	if err := c.bw.Flush(); err != nil {
		return false
	}
	pre := make([]byte, 0, len(c.raw)+c.br.Buffered())
	pre = append(pre, c.raw...)
	buffered, _ := c.br.Peek(c.br.Buffered())
	pre = append(pre, buffered...)
	return c.s.fbLn.deliver(&prefixConn{Conn: c.nc, pre: pre})
}

// readRequest reads one request head into c.req. ok is false when the
// request is not one for the fast loop; the head is then in c.raw.
func (c *frontConn) readRequest(remote string) (ok bool, err error) {
	c.raw = c.raw[:0]
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			c.raw = append(c.raw, line...)
			return false, nil
		}
		return false, fmt.Errorf("read request line: %w", err)
	}
	c.raw = append(c.raw, line...)
	method, target, fast := parseRequestLine(line)
	if !fast {
		return false, nil
	}
	// Anything unusual in the head hands the connection over at once,
	// with what was read so far, and net/http takes it from there (limits,
	// 400s and 431s included).
	f := &c.head
	f.scratch, f.kv = f.scratch[:0], f.kv[:0]
	for {
		hl, err := c.br.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				c.raw = append(c.raw, hl...)
				return false, nil
			}
			return false, fmt.Errorf("read request header: %w", err)
		}
		c.raw = append(c.raw, hl...)
		hl = bytes.TrimRight(hl, "\r\n")
		if len(hl) == 0 {
			break
		}
		colon := bytes.IndexByte(hl, ':')
		if colon <= 0 || len(c.raw) > frontMaxHead || !plainHeaderLine(hl, colon) {
			return false, nil
		}
		ks := len(f.scratch)
		f.scratch = appendCanonicalKey(f.scratch, hl[:colon])
		ke := len(f.scratch)
		f.scratch = append(f.scratch, bytes.TrimSpace(hl[colon+1:])...)
		f.kv = append(f.kv, kvSpan{ks: ks, ke: ke, vs: ke, ve: len(f.scratch)})
	}
	if f.hdr == nil {
		f.hdr = make(http.Header, 16)
	} else {
		clear(f.hdr)
	}
	f.fillHeader()
	h := f.hdr
	hosts := h["Host"]
	if len(hosts) != 1 || hosts[0] == "" {
		return false, nil
	}
	for _, k := range [...]string{"Content-Length", "Transfer-Encoding", "Upgrade", "Expect", "Trailer"} {
		if _, bad := h[k]; bad {
			return false, nil
		}
	}
	c.closeAfter = false
	if conn, ok := h["Connection"]; ok {
		// keep-alive (the default) and close are all the fast loop knows.
		for _, v := range conn {
			for v != "" {
				var tok string
				tok, v, _ = strings.Cut(v, ",")
				switch tok = strings.TrimSpace(tok); {
				case asciiEqualFold(tok, "keep-alive"):
				case asciiEqualFold(tok, "close"):
					c.closeAfter = true
				default:
					return false, nil
				}
			}
		}
	}
	delete(h, "Host")
	c.u = url.URL{}
	path, query, _ := strings.Cut(target, "?")
	if strings.IndexByte(path, '%') >= 0 {
		return false, nil // escaped paths: let net/http decode them
	}
	c.u.Path, c.u.RawQuery = path, query
	// Field by field: the request keeps the connection's context, which
	// only WithContext (an allocation) could set again.
	r := c.req
	r.Method, r.URL, r.Proto, r.ProtoMajor, r.ProtoMinor = method, &c.u, "HTTP/1.1", 1, 1
	r.Header, r.Body, r.GetBody, r.ContentLength, r.TransferEncoding = h, http.NoBody, nil, 0, nil
	r.Close, r.Host, r.Form, r.PostForm, r.MultipartForm, r.Trailer = false, hosts[0], nil, nil, nil, nil
	r.RemoteAddr, r.RequestURI, r.TLS, r.Response, r.Pattern = remote, target, nil, nil, ""
	return true, nil
}

// parseRequestLine accepts only "GET|HEAD /origin-form HTTP/1.1". The
// target is copied: line points into the reader's buffer.
func parseRequestLine(line []byte) (method, target string, ok bool) {
	line = bytes.TrimRight(line, "\r\n")
	var m []byte
	switch {
	case bytes.HasPrefix(line, []byte("GET /")):
		method, m = http.MethodGet, line[4:]
	case bytes.HasPrefix(line, []byte("HEAD /")):
		method, m = http.MethodHead, line[5:]
	default:
		return "", "", false
	}
	if !bytes.HasSuffix(m, []byte(" HTTP/1.1")) {
		return "", "", false
	}
	m = m[:len(m)-len(" HTTP/1.1")]
	for _, ch := range m {
		if ch <= ' ' || ch >= 0x7f || ch == '#' {
			return "", "", false
		}
	}
	return method, string(m), true
}

// plainHeaderLine reports whether a header line has a token name and a
// value free of control characters.
func plainHeaderLine(hl []byte, colon int) bool {
	for _, ch := range hl[:colon] {
		if !isTokenByte(ch) {
			return false
		}
	}
	for _, ch := range hl[colon+1:] {
		if (ch < ' ' && ch != '\t') || ch == 0x7f {
			return false
		}
	}
	return true
}

// serveOne runs the proxy on c.req and finishes the answer. It reports
// whether the connection may carry another request.
func (c *frontConn) serveOne() (keep bool) {
	w := &c.w
	w.reset(c.bw, c.req.Method == http.MethodHead)
	w.closing = c.closeAfter
	aborted := false
	func() {
		defer func() {
			if v := recover(); v != nil {
				aborted = true
				if v != http.ErrAbortHandler {
					c.s.p.log.Error("panic serving request", "panic", fmt.Sprint(v))
				}
			}
		}()
		c.s.p.ServeHTTP(w, c.req)
	}()
	if aborted || w.err != nil {
		return false
	}
	if !w.finish() {
		return false
	}
	if c.br.Buffered() == 0 || c.closeAfter {
		// Pipelined requests already waiting share the next write.
		if err := c.bw.Flush(); err != nil {
			return false
		}
	}
	return true
}

// frontWriter is the http.ResponseWriter of the fast loop: the status line
// and headers go into the connection's buffer at the first write, a body
// of known length follows as it is, anything else is chunked.
type frontWriter struct {
	bw          *bufio.Writer
	hdr         http.Header
	head        bool
	closing     bool // answer with Connection: close
	wroteHeader bool
	status      int
	chunked     bool
	noBody      bool
	length      int64 // declared Content-Length, -1 none
	written     int64
	err         error
}

func (w *frontWriter) reset(bw *bufio.Writer, head bool) {
	hdr := w.hdr
	if hdr == nil {
		hdr = make(http.Header, 8)
	} else {
		clear(hdr)
	}
	*w = frontWriter{bw: bw, hdr: hdr, head: head, length: -1}
}

// Header implements http.ResponseWriter.
func (w *frontWriter) Header() http.Header { return w.hdr }

// WriteHeader implements http.ResponseWriter.
func (w *frontWriter) WriteHeader(code int) {
	if w.wroteHeader || code < 200 {
		return // informational answers are not relayed by the fast loop
	}
	w.wroteHeader = true
	w.status = code
	bw := w.bw
	_, _ = bw.WriteString("HTTP/1.1 ")
	_, _ = bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(code), 10))
	_ = bw.WriteByte(' ')
	_, _ = bw.WriteString(http.StatusText(code))
	_, _ = bw.WriteString("\r\n")
	w.noBody = w.head || code == http.StatusNoContent || code == http.StatusNotModified
	if cl := w.hdr["Content-Length"]; len(cl) == 1 {
		if n, err := strconv.ParseInt(cl[0], 10, 64); err == nil && n >= 0 {
			w.length = n
		}
	}
	if w.length < 0 && !w.noBody {
		w.chunked = true
		delete(w.hdr, "Content-Length")
		_, _ = bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if w.closing {
		_, _ = bw.WriteString("Connection: close\r\n")
	}
	if _, ok := w.hdr["Date"]; !ok {
		_, _ = bw.WriteString("Date: ")
		_, _ = bw.Write(time.Now().UTC().AppendFormat(bw.AvailableBuffer(), http.TimeFormat))
		_, _ = bw.WriteString("\r\n")
	}
	for k, vv := range w.hdr {
		if strings.HasPrefix(k, http.TrailerPrefix) || k == "Transfer-Encoding" || k == "Connection" {
			continue
		}
		if k == "Content-Length" && w.noBody && !w.head {
			continue
		}
		for _, v := range vv {
			if !hasLineBreak(v) {
				writeHeaderLine(bw, k, v)
			}
		}
	}
	_, _ = bw.WriteString("\r\n")
}

// Write implements http.ResponseWriter.
func (w *frontWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.noBody {
		return len(b), nil
	}
	if w.length >= 0 && w.written+int64(len(b)) > w.length {
		w.err = http.ErrContentLength
		return 0, w.err
	}
	if w.chunked {
		if len(b) == 0 {
			return 0, nil
		}
		_, _ = w.bw.Write(strconv.AppendInt(w.bw.AvailableBuffer(), int64(len(b)), 16))
		_, _ = w.bw.WriteString("\r\n")
	}
	n, err := w.bw.Write(b)
	w.written += int64(n)
	if w.chunked && err == nil {
		_, err = w.bw.WriteString("\r\n")
	}
	if err != nil {
		w.err = err
	}
	return n, err
}

// Flush implements http.Flusher.
func (w *frontWriter) Flush() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err == nil {
		if err := w.bw.Flush(); err != nil {
			w.err = err
		}
	}
}

// finish completes the answer; false means the connection must close
// (a body shorter than declared, or a failed write).
func (w *frontWriter) finish() bool {
	if !w.wroteHeader {
		if _, ok := w.hdr["Content-Length"]; !ok && !w.head {
			w.hdr["Content-Length"] = []string{"0"}
		}
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return false
	}
	if w.chunked {
		_, _ = w.bw.WriteString("0\r\n")
		for k, vv := range w.hdr {
			if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
				for _, v := range vv {
					if !hasLineBreak(v) {
						writeHeaderLine(w.bw, name, v)
					}
				}
			}
		}
		_, err := w.bw.WriteString("\r\n")
		return err == nil
	}
	return w.noBody || w.length < 0 || w.written == w.length
}

// prefixConn is a connection whose first bytes were already read.
type prefixConn struct {
	net.Conn
	pre []byte
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.pre) > 0 {
		n := copy(b, p.pre)
		p.pre = p.pre[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// chanListener feeds handed-over connections to the fallback server.
type chanListener struct {
	ch     chan net.Conn
	done   chan struct{}
	closed sync.Once
}

func newChanListener() *chanListener {
	return &chanListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) deliver(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.closed.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return frontAddr{} }

type frontAddr struct{}

func (frontAddr) Network() string { return "front" }
func (frontAddr) String() string  { return "front-fallback" }
