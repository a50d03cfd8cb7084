package proxy

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestH1StaleConnectionRetried(t *testing.T) {
	be := newBackend(t, "a")
	f := newFront(t, Config{}, newTable(1).add(route{id: "r1", domains: []string{"a.test"}, backend: be.URL}).build())
	for i := range 3 {
		if r := f.get(t, "a.test", "/"); r.code != 200 {
			t.Fatalf("round %d: %d", i, r.code)
		}
		// The backend drops its keep-alive connections, as a restarting
		// or idle-timing-out server does.
		be.CloseClientConnections()
	}
}

func TestH1ResponseFraming(t *testing.T) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/chunked":
			for i := range 3 {
				_, _ = io.WriteString(w, strings.Repeat(string(rune('a'+i)), 10))
				w.(http.Flusher).Flush()
			}
			w.Header().Set(http.TrailerPrefix+"X-Checksum", "abc")
		case "/unbounded":
			conn, brw, _ := http.NewResponseController(w).Hijack()
			_, _ = brw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close")
			_ = brw.Flush()
			conn.Close()
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		default:
			w.Header().Set("Content-Length", "5")
			_, _ = io.WriteString(w, "hello")
		}
	}))
	defer be.Close()
	f := newFront(t, Config{}, newTable(1).add(route{id: "r1", domains: []string{"a.test"}, backend: be.URL}).build())
	for i := range 2 { // twice: each kind must leave the pool usable
		if r := f.get(t, "a.test", "/chunked"); r.code != 200 || r.body != strings.Repeat("a", 10)+strings.Repeat("b", 10)+strings.Repeat("c", 10) {
			t.Fatalf("chunked %d: %d %q", i, r.code, r.body)
		}
		if r := f.get(t, "a.test", "/unbounded"); r.code != 200 || r.body != "until close" {
			t.Fatalf("unbounded %d: %d %q", i, r.code, r.body)
		}
		if r := f.get(t, "a.test", "/empty"); r.code != 204 || r.body != "" {
			t.Fatalf("204 %d: %d %q", i, r.code, r.body)
		}
		if r := f.do(t, "HEAD", "a.test", "/fixed", nil, nil); r.code != 200 || r.header.Get("Content-Length") != "5" {
			t.Fatalf("HEAD %d: %d %v", i, r.code, r.header)
		}
		if r := f.get(t, "a.test", "/fixed"); r.body != "hello" {
			t.Fatalf("fixed %d: %q", i, r.body)
		}
	}
}

func TestWriteRequestDropsLineBreaks(t *testing.T) {
	req, _ := http.NewRequest("GET", "http://b/x%20y?q=1", nil)
	req.Header["X-Ok"] = []string{"fine"}
	req.Header["X-Bad"] = []string{"a\r\nInjected: yes"}
	req.Header["User-Agent"] = []string{""}
	var sb strings.Builder
	bw := bufio.NewWriter(&sb)
	if err := writeRequest(bw, req); err != nil {
		t.Fatal(err)
	}
	got := sb.String()
	if !strings.HasPrefix(got, "GET /x%20y?q=1 HTTP/1.1\r\nHost: b\r\n") || !strings.Contains(got, "X-Ok: fine\r\n") ||
		strings.Contains(got, "Injected") || strings.Contains(got, "User-Agent") || !strings.HasSuffix(got, "\r\n\r\n") {
		t.Fatalf("request:\n%s", got)
	}
}
