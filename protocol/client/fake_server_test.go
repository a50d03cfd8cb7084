package client

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeServer is a scripted control-protocol server on 127.0.0.1:0. Each
// connection is served by one goroutine that reads a line, records it and
// passes it to the handler; lines the handler does not take get the
// default answers (REGISTER, RECONNECT, PING, CLUSTER_STATUS).
type fakeServer struct {
	t    *testing.T
	ln   net.Listener
	addr string

	mu       sync.Mutex
	handler  func(fc *fakeConn, line string, f []string) bool
	lines    []string
	conns    []*fakeConn
	sessions int
	closed   bool
	refusing bool   // hang up every connection at once (see refuse)
	cluster  string // CLUSTER_OK payload

	wg sync.WaitGroup
}

// fakeConn is the server side of one client connection.
type fakeConn struct {
	srv    *fakeServer
	nc     net.Conn
	wmu    sync.Mutex
	closed chan struct{} // closed when the client side hung up
}

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	s := &fakeServer{t: t, ln: ln, addr: ln.Addr().String(), cluster: `{"leader":"n1","term":1,"nodes":[]}`}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(s.close)
	return s
}

// handle installs the handler; it returns true for lines it answered.
func (s *fakeServer) handle(fn func(fc *fakeConn, line string, f []string) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handler = fn
}

func (s *fakeServer) accept() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		fc := &fakeConn{srv: s, nc: nc, closed: make(chan struct{})}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return
		}
		if s.refusing {
			s.mu.Unlock()
			nc.Close()
			continue
		}
		s.conns = append(s.conns, fc)
		s.mu.Unlock()
		s.wg.Add(1)
		go s.serve(fc)
	}
}

func (s *fakeServer) serve(fc *fakeConn) {
	defer s.wg.Done()
	defer close(fc.closed)
	defer fc.nc.Close()
	br := bufio.NewReader(fc.nc)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		s.mu.Lock()
		s.lines = append(s.lines, line)
		h := s.handler
		s.mu.Unlock()
		f := strings.Split(line, "|")
		if h != nil && h(fc, line, f) {
			continue
		}
		s.defaultAnswer(fc, f)
	}
}

func (s *fakeServer) defaultAnswer(fc *fakeConn, f []string) {
	switch f[0] {
	case "REGISTER":
		s.mu.Lock()
		s.sessions++
		id := fmt.Sprintf("%s-%d", f[1], s.sessions)
		s.mu.Unlock()
		fc.send("ACK|" + id)
	case "RECONNECT":
		fc.send("OK")
	case "PING":
		fc.send("PONG")
	case "CLUSTER_STATUS":
		s.mu.Lock()
		payload := s.cluster
		s.mu.Unlock()
		fc.send("CLUSTER_OK|" + payload)
	default:
		fc.send("ERROR|unknown command: " + f[0])
	}
}

// send writes lines in one write, so the client reads them back to back.
func (fc *fakeConn) send(lines ...string) {
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	_, _ = io.WriteString(fc.nc, strings.Join(lines, "\n")+"\n")
}

// hangUp closes the connection from the server side.
func (fc *fakeConn) hangUp() { _ = fc.nc.Close() }

func (s *fakeServer) close() {
	s.mu.Lock()
	s.closed = true
	conns := append([]*fakeConn(nil), s.conns...)
	s.mu.Unlock()
	s.ln.Close()
	for _, fc := range conns {
		fc.nc.Close()
	}
	s.wg.Wait()
}

// refuse makes the node unreachable while keeping its port: it hangs up
// every connection, open or new. Closing the listener instead would free
// the port for another test process, whose server would then answer the
// client's reconnects.
func (s *fakeServer) refuse() {
	s.mu.Lock()
	s.refusing = true
	conns := append([]*fakeConn(nil), s.conns...)
	s.mu.Unlock()
	for _, fc := range conns {
		fc.hangUp()
	}
}

// received returns every line received so far, in order.
func (s *fakeServer) received() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lines...)
}

// receivedWith returns the received lines starting with prefix.
func (s *fakeServer) receivedWith(prefix string) []string {
	var out []string
	for _, l := range s.received() {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return out
}

// connections returns the server sides of every accepted connection.
func (s *fakeServer) connections() []*fakeConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*fakeConn(nil), s.conns...)
}

// waitLimit bounds every wait in the tests, so that a lost wake-up fails
// the test with a message instead of hanging the binary until -timeout.
const waitLimit = 10 * time.Second

// recv returns the next value from ch, or fails the test after waitLimit.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	timer := time.NewTimer(waitLimit)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("timed out after %v waiting for %s", waitLimit, what)
		panic("unreachable")
	}
}

// waitGroup waits for wg, or fails the test after waitLimit.
func waitGroup(t *testing.T, wg *sync.WaitGroup, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	recv(t, done, what)
}

// hold blocks a server handler until release is closed, for at most
// waitLimit: a handler stuck forever would hang the server's cleanup.
func hold(release <-chan struct{}) {
	timer := time.NewTimer(waitLimit)
	defer timer.Stop()
	select {
	case <-release:
	case <-timer.C:
	}
}

// currentConn returns the client's current connection, nil while there is
// none.
func currentConn(c *Client) *conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur
}

// currentQueueLen is the number of commands waiting for a response on the
// current connection, or -1 while there is none.
func currentQueueLen(c *Client) int {
	cn := currentConn(c)
	if cn == nil {
		return -1
	}
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return len(cn.queue)
}

// maintWaits is the number of maintenance waits the client holds.
func maintWaits(c *Client) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.maint)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitLine waits until s received exactly line.
func (s *fakeServer) waitLine(t *testing.T, line string) {
	t.Helper()
	waitFor(t, "line "+line, func() bool {
		for _, l := range s.received() {
			if l == line {
				return true
			}
		}
		return false
	})
}

// testLogger discards logs unless RAFTGATE_CLIENT_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("RAFTGATE_CLIENT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testConfig is a Config for the fake servers: short timeouts and backoff,
// no discovery (so the recorded lines are exactly the test's commands).
func testConfig(addrs ...string) Config {
	return Config{
		Addrs:            addrs,
		Service:          "svc",
		Instance:         "i1",
		DialTimeout:      time.Second,
		CommandTimeout:   5 * time.Second,
		MinBackoff:       5 * time.Millisecond,
		MaxBackoff:       50 * time.Millisecond,
		DisableDiscovery: true,
		Logger:           testLogger(),
	}
}

// newTestClient registers a client and closes it when the test ends.
func newTestClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := New(ctx, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// ctxT is a context for one test command. Call it on the test goroutine:
// it registers a cleanup.
func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

// mustJSON marshals v for a scripted response.
func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
