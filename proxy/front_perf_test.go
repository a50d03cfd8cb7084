package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/raftgate/raftgate/fsm"
)

// startFront serves p through a FrontServer on a loopback port.
func startFront(tb testing.TB, p *Proxy) (addr string, stop func()) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := NewFrontServer(p, &http.Server{ReadHeaderTimeout: 5 * time.Second})
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			tb.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != http.ErrServerClosed {
			tb.Errorf("serve: %v", err)
		}
	}
	tb.Cleanup(stop)
	return ln.Addr().String(), stop
}

func BenchmarkProxyFront(b *testing.B) {
	be := benchBackend(b)
	p := New(Config{})
	defer p.Close()
	p.Update(newTable(1).add(route{id: "r1", domains: []string{"bench.test"}, backend: be.URL}).build())
	addr, stop := startFront(b, p)
	defer stop()
	loadLoop(b, "http://"+addr+"/bench", "bench.test")
}

// TestFrontServerMatchesNetHTTP sends the same requests through the
// FrontServer and through net/http serving the same Proxy, and compares
// what the client gets.
func TestFrontServerMatchesNetHTTP(t *testing.T) {
	be := newBackend(t, "a")
	stream := newRawBackend(t, map[string]string{
		"/stream": "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 3\r\n\r\n",
	})
	tbl := newTable(1).
		add(route{id: "r1", domains: []string{"a.test"}, backend: be.URL,
			settings: settings(func(s *fsm.RouteSettings) {
				s.ResponseHeaders = []fsm.Header{{Name: "X-Served-By", Value: "raftgate"}}
			})}).
		add(route{id: "r2", domains: []string{"s.test"}, backend: "http://" + stream.ln.Addr().String()}).
		build()
	f := newFront(t, Config{}, tbl)
	addr, _ := startFront(t, f.p)
	tr := &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	type answer struct {
		code             int
		body, hdr, trail string
	}
	send := func(base, method, host, path, body string) answer {
		t.Helper()
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, err := http.NewRequest(method, base+path, rd)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s %s: %v", base, method, path, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return answer{code: resp.StatusCode, body: string(b),
			hdr:   resp.Header.Get("X-Served-By") + "|" + resp.Header.Get("Content-Type") + "|" + resp.Header.Get("Content-Length"),
			trail: resp.Trailer.Get("X-Sum")}
	}
	for i := range 3 { // keep-alive: the same connections carry every round
		for _, rq := range []struct{ method, host, path, body string }{
			{"GET", "a.test", "/x?q=1", ""},
			{"HEAD", "a.test", "/x", ""},
			{"GET", "nowhere.test", "/", ""},
			{"POST", "a.test", "/post", "payload"}, // handed over to net/http
			{"GET", "a.test", "/after-handover", ""},
			{"GET", "a.test", "/esc%20aped", ""},
			{"GET", "s.test", "/stream", ""},
		} {
			want := send(f.srv.URL, rq.method, rq.host, rq.path, rq.body)
			got := send("http://"+addr, rq.method, rq.host, rq.path, rq.body)
			if got != want {
				t.Fatalf("round %d %s %s%s: front %+v, net/http %+v", i, rq.method, rq.host, rq.path, got, want)
			}
		}
	}
	if r := be.lastRequest(); r.Header.Get("X-Forwarded-For") != "127.0.0.1" || r.URL.RawQuery != "" && r.URL.Path == "" {
		t.Fatalf("backend saw %v", r.Header)
	}
}

// TestFrontServerPipelinedAndMalformed writes raw bytes: two pipelined
// requests answered in order on one connection, then a malformed request
// answered with net/http's 400.
func TestFrontServerPipelinedAndMalformed(t *testing.T) {
	be := newBackend(t, "a")
	f := newFront(t, Config{}, newTable(1).add(route{id: "r1", domains: []string{"a.test"}, backend: be.URL}).build())
	addr, _ := startFront(t, f.p)
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	// The third request is handed over to net/http after the first two
	// are answered by the fast loop; their answers must come first.
	_, _ = io.WriteString(conn, "GET /one HTTP/1.1\r\nHost: a.test\r\n\r\nGET /two HTTP/1.1\r\nHost: a.test\r\n\r\n"+
		"POST /three HTTP/1.1\r\nHost: a.test\r\nContent-Length: 2\r\n\r\nhi")
	br := bufio.NewReader(conn)
	for _, want := range []string{"/one", "/two", "/three"} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), "a") {
			t.Fatalf("%s: %d %q", want, resp.StatusCode, b)
		}
	}
	_, _ = io.WriteString(conn, "GET /three HTTP/1.1\r\nHost: a.test\r\nBad Header: x\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("malformed request: %d", resp.StatusCode)
	}
}

// TestFrontServerShutdownWaitsForRequest checks that Shutdown lets a
// request in progress finish and closes idle connections.
func TestFrontServerShutdownWaitsForRequest(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	be := newRawBackendFunc(t, func(path string) string {
		if path == "/slow" {
			entered <- struct{}{}
			<-release
		}
		return "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone"
	})
	f := newFront(t, Config{}, newTable(1).add(route{id: "r1", domains: []string{"a.test"}, backend: be}).build())
	addr, stop := startFront(t, f.p)
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	errc := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest("GET", "http://"+addr+"/slow", nil)
		req.Host = "a.test"
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != "done" {
				err = fmt.Errorf("body %q", b)
			}
		}
		errc <- err
	}()
	<-entered
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	_ = idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); err == nil {
		t.Fatal("idle connection not closed by shutdown")
	}
	select {
	case <-stopped:
		t.Fatal("shutdown returned with a request in progress")
	default:
	}
	close(release)
	if err := <-errc; err != nil {
		t.Fatalf("request in progress: %v", err)
	}
	<-stopped
}

// newRawBackendFunc is a raw HTTP/1.1 backend answering with answer(path).
func newRawBackendFunc(t *testing.T, answer func(path string) string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					r, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					if _, err := io.WriteString(c, answer(r.URL.Path)); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return "http://" + ln.Addr().String()
}

func TestFrontServerConnectionClose(t *testing.T) {
	be := newBackend(t, "a")
	f := newFront(t, Config{}, newTable(1).add(route{id: "r1", domains: []string{"a.test"}, backend: be.URL}).build())
	addr, _ := startFront(t, f.p)
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(conn, "GET /one HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || !resp.Close || len(b) == 0 {
		t.Fatalf("answer: %d close=%v %q %v", resp.StatusCode, resp.Close, b, err)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("connection still open after Connection: close (%v)", err)
	}
}

func TestFrontServerTimeouts(t *testing.T) {
	p := New(Config{})
	defer p.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewFrontServer(p, &http.Server{ReadHeaderTimeout: 300 * time.Millisecond, IdleTimeout: 600 * time.Millisecond})
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	defer func() {
		_ = s.Shutdown(context.Background())
		<-done
	}()
	for _, tc := range []struct {
		name     string
		send     string
		min, max time.Duration
	}{
		{"idle", "", 600 * time.Millisecond, 3 * time.Second},
		{"slow head", "GET / HTTP/1.1\r\nHost: a", 300 * time.Millisecond, 3 * time.Second},
	} {
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, _ = io.WriteString(conn, tc.send)
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = io.ReadAll(conn)
		el := time.Since(start)
		conn.Close()
		if err != nil || el < tc.min || el > tc.max {
			t.Fatalf("%s: closed after %v (err %v), want between %v and %v", tc.name, el, err, tc.min, tc.max)
		}
	}
}

func BenchmarkCPUProxyFront(b *testing.B) {
	reportCPU(b, func() { BenchmarkProxyFront(b) })
}
