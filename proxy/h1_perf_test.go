package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/raftgate/raftgate/fsm"
)

// TestWriteOutHeadMatchesOutRequest checks that the fast path sends the
// same request line and headers as the general path (outRequest, then
// writeRequest) for the cases outRequest handles.
func TestWriteOutHeadMatchesOutRequest(t *testing.T) {
	cases := []struct {
		name    string
		raw     string
		tgt     target
		trusted bool
		opts    fsm.Options
		reqHdr  []fsm.Header
		reqHost string
		pool    string
	}{
		{name: "plain", raw: "GET /a/b?x=1 HTTP/1.1\r\nHost: a.test\r\nUser-Agent: ua\r\nAccept: */*\r\n\r\n",
			tgt: target{scheme: "http", host: "10.0.0.1:8080"}},
		{name: "hop-by-hop and connection tokens",
			raw: "GET / HTTP/1.1\r\nHost: a.test\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: 5\r\n" +
				"Te: trailers, gzip\r\nProxy-Authorization: p\r\nX-Keep: k\r\n\r\n",
			tgt: target{scheme: "http", host: "b:1"}},
		{name: "untrusted forward headers replaced",
			raw: "GET / HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\n" +
				"X-Forwarded-Host: evil\r\nForwarded: for=1.2.3.4\r\nX-Real-Ip: 1.2.3.4\r\n\r\n",
			tgt: target{scheme: "http", host: "b:1"}},
		{name: "trusted forward headers kept and appended",
			raw: "GET / HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-For: 1.2.3.4, 5.6.7.8\r\nX-Forwarded-For: 9.9.9.9\r\n" +
				"X-Forwarded-Proto: https\r\nForwarded: for=1.2.3.4\r\nX-Real-Ip: 1.2.3.4\r\n\r\n",
			tgt: target{scheme: "http", host: "b:1"}, trusted: true},
		{name: "base path, query and strip prefix",
			raw: "GET /api/users?id=7 HTTP/1.1\r\nHost: a.test\r\n\r\n",
			tgt: target{scheme: "http", host: "b:1", path: "/v2", query: "k=v"}, opts: fsm.Options{StripPrefix: true}, pool: "/api"},
		{name: "escaped path", raw: "GET /x%20y/%2Fz?q HTTP/1.1\r\nHost: a.test\r\n\r\n",
			tgt: target{scheme: "http", host: "b:1", path: "/base"}},
		{name: "route headers and host override",
			raw: "HEAD /h HTTP/1.1\r\nHost: a.test\r\nX-Route: client\r\nUser-Agent: ua\r\n\r\n",
			tgt: target{scheme: "http", host: "b:1"}, reqHdr: []fsm.Header{{Name: "X-Route", Value: "route"}, {Name: "X-Forwarded-Proto", Value: "wss"}},
			reqHost: "internal.test"},
		{name: "preserve host", raw: "OPTIONS /o HTTP/1.1\r\nHost: A.test:8080\r\n\r\n",
			tgt: target{scheme: "http", host: "b:1"}, opts: fsm.Options{PreserveHost: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rc := &routeCfg{target: tc.tgt, opts: tc.opts, reqHdr: tc.reqHdr, reqHost: tc.reqHost}
			fc := &fwdCtx{peer: netip.MustParseAddr("10.1.2.3"), trusted: tc.trusted, pool: &pool{path: tc.pool}}
			slow := parseSent(t, func(bw *bufio.Writer) error {
				r := mustReadRequest(t, tc.raw)
				return writeRequest(bw, (&Proxy{}).outRequest(r, rc, &rc.target, fc, false))
			})
			fast := parseSent(t, func(bw *bufio.Writer) error {
				return writeOutHead(bw, mustReadRequest(t, tc.raw), &fastReq{rc: rc, tgt: &rc.target, fc: fc})
			})
			if slow.Method != fast.Method || slow.RequestURI != fast.RequestURI || slow.Host != fast.Host {
				t.Fatalf("request line: general %s %s (host %s), fast %s %s (host %s)",
					slow.Method, slow.RequestURI, slow.Host, fast.Method, fast.RequestURI, fast.Host)
			}
			if !reflect.DeepEqual(slow.Header, fast.Header) {
				t.Fatalf("headers differ:\ngeneral %v\nfast    %v", slow.Header, fast.Header)
			}
		})
	}
}

func mustReadRequest(t *testing.T, raw string) *http.Request {
	t.Helper()
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
	if err != nil {
		t.Fatal(err)
	}
	r.RemoteAddr = "10.1.2.3:5555"
	return r
}

func parseSent(t *testing.T, write func(*bufio.Writer) error) *http.Request {
	t.Helper()
	var sb strings.Builder
	if err := write(bufio.NewWriter(&sb)); err != nil {
		t.Fatal(err)
	}
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(sb.String())))
	if err != nil {
		t.Fatalf("parse %q: %v", sb.String(), err)
	}
	return r
}

// rawBackend answers each request head it reads with the next canned
// response, closing the connection after one when asked to.
type rawBackend struct {
	ln    net.Listener
	mu    sync.Mutex
	resps map[string]string // request path → raw response
	wg    sync.WaitGroup
}

func newRawBackend(t *testing.T, resps map[string]string) *rawBackend {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &rawBackend{ln: ln, resps: resps}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					r, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					b.mu.Lock()
					resp := b.resps[r.URL.Path]
					b.mu.Unlock()
					if _, err := io.WriteString(c, strings.TrimSuffix(resp, "<close>")); err != nil || strings.HasSuffix(resp, "<close>") {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); b.wg.Wait() })
	return b
}

func TestFastResponseParsing(t *testing.T) {
	be := newRawBackend(t, map[string]string{
		"/folded":   "HTTP/1.1 200 OK\r\nX-Long: a\r\n  b\r\nContent-Length: 2\r\n\r\nok",
		"/dupcl":    "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
		"/chunked":  "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Sum: 5\r\n\r\n",
		"/http10":   "HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nold!",
		"/eof":      "HTTP/1.1 200 OK\r\n\r\nuntil close<close>",
		"/continue": "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx",
		"/badcl":    "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
		"/gzipte":   "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
		"/garbage":  "SPDY/3 200 OK\r\n\r\n",
		"/short":    "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc<close>",
		"/closehdr": "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi",
	})
	f := newFront(t, Config{}, newTable(1).add(route{id: "r1", domains: []string{"a.test"}, backend: "http://" + be.ln.Addr().String()}).build())
	for round := range 2 { // twice: every kind must leave the pool usable
		for _, c := range []struct {
			path, body string
			code       int
			hdr        string
			val        string
		}{
			{"/folded", "ok", 200, "X-Long", "a b"},
			{"/dupcl", "abc", 200, "Content-Length", "3"},
			{"/chunked", "abcde", 200, "", ""},
			{"/http10", "old!", 200, "", ""},
			{"/eof", "until close", 200, "", ""},
			{"/continue", "x", 201, "", ""},
			{"/closehdr", "hi", 200, "", ""},
			{"/badcl", msgBadGateway, 502, "", ""},
			{"/gzipte", msgBadGateway, 502, "", ""},
			{"/garbage", msgBadGateway, 502, "", ""},
		} {
			r := f.get(t, "a.test", c.path)
			if r.code != c.code || r.body != c.body {
				t.Fatalf("round %d %s: %d %q, want %d %q", round, c.path, r.code, r.body, c.code, c.body)
			}
			if c.hdr != "" {
				if got := r.header.Get(c.hdr); got != c.val {
					t.Fatalf("round %d %s: %s = %q, want %q (header %v)", round, c.path, c.hdr, r.header.Get(c.hdr), c.val, r.header)
				}
			}
		}
	}
	// The chunked body's trailer reaches the client.
	resp, err := f.client.Do(mustNewRequest(t, f.srv.URL+"/chunked", "a.test"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(b) != "abcde" || resp.Trailer.Get("X-Sum") != "5" {
		t.Fatalf("chunked with trailer: %q %v, trailer %v", b, err, resp.Trailer)
	}
	// A body cut short must not reach the client as complete.
	resp, err = f.client.Do(mustNewRequest(t, f.srv.URL+"/short", "a.test"))
	if err == nil {
		b, rerr := io.ReadAll(resp.Body)
		resp.Body.Close()
		if rerr == nil {
			t.Fatalf("truncated body delivered as complete: %q", b)
		}
	}
}

func mustNewRequest(t *testing.T, url, host string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	return req
}

// TestFastPathSlowHeadersTimeout checks the rolling read deadline: a
// backend slower than the route timeout is a 504, and one slower than a
// watch slice but within the timeout is served.
func TestFastPathSlowHeadersTimeout(t *testing.T) {
	release := make(chan struct{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer func() { ln.Close(); wg.Wait() }()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				r, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				if r.URL.Path == "/slow" {
					select {
					case <-release:
					case <-time.After(5 * time.Second):
					}
				} else {
					time.Sleep(h1WatchSlice + 200*time.Millisecond) // the backend's think time under test
				}
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}()
		}
	}()
	st := settings(func(s *fsm.RouteSettings) { s.Options.Timeout = 3 * h1WatchSlice })
	f := newFront(t, Config{}, newTable(1).add(route{id: "r1", domains: []string{"a.test"}, backend: "http://" + ln.Addr().String(), settings: st}).build())
	if r := f.get(t, "a.test", "/thinks"); r.code != 200 || r.body != "ok" {
		t.Fatalf("backend slower than a watch slice: %d %q", r.code, r.body)
	}
	start := time.Now()
	r := f.get(t, "a.test", "/slow")
	close(release)
	if r.code != 504 {
		t.Fatalf("slow backend: %d %q", r.code, r.body)
	}
	if el := time.Since(start); el < 3*h1WatchSlice || el > 3*h1WatchSlice+2*time.Second {
		t.Fatalf("504 after %v, want about %v", el, 3*h1WatchSlice)
	}
}
