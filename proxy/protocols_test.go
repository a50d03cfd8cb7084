package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/raftgate/raftgate/fsm"
)

// echoUpgradeServer accepts an Upgrade: websocket request, switches
// protocols and echoes every line back.
func echoUpgradeServer(t *testing.T) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "no upgrade", http.StatusBadRequest)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		_ = brw.Flush()
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			_, _ = brw.WriteString("echo " + line)
			_ = brw.Flush()
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func TestWebSocketUpgrade(t *testing.T) {
	be := echoUpgradeServer(t)
	wsURL := "ws" + strings.TrimPrefix(be.URL, "http")
	f := newFront(t, Config{}, newTable(1).
		add(route{id: "r1", domains: []string{"ws.test"}, backend: wsURL}).
		add(route{id: "r2", domains: []string{"opt.test"}, backend: be.URL,
			settings: settings(func(s *fsm.RouteSettings) { s.Options.WebSocket = true })}).
		add(route{id: "r3", domains: []string{"off.test"}, backend: be.URL}).build())

	for _, host := range []string{"ws.test", "opt.test"} {
		conn, err := net.Dial("tcp", f.srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.WriteString(conn, "GET /chat HTTP/1.1\r\nHost: "+host+"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: read 101: %v", host, err)
		}
		if resp.StatusCode != 101 {
			t.Fatalf("%s: status %d", host, resp.StatusCode)
		}
		for _, msg := range []string{"hello\n", "again\n"} {
			_, _ = io.WriteString(conn, msg)
			got, err := br.ReadString('\n')
			if err != nil || got != "echo "+msg {
				t.Fatalf("%s: echo %q, %v", host, got, err)
			}
		}
		conn.Close()
	}
	// Without the option the upgrade headers are hop-by-hop and dropped.
	r := f.do(t, "GET", "off.test", "/chat", map[string]string{"Upgrade": "websocket", "Connection": "Upgrade"}, nil)
	if r.code != 400 {
		t.Errorf("upgrade without websocket option: %d", r.code)
	}
}

func protoServer(t *testing.T, h2c, tls bool) *httptest.Server {
	t.Helper()
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Proto)
	}))
	if h2c {
		var p http.Protocols
		p.SetHTTP1(true)
		p.SetUnencryptedHTTP2(true)
		s.Config.Protocols = &p
	}
	if tls {
		s.EnableHTTP2 = true
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
	return s
}

func TestHTTP2AndTLS(t *testing.T) {
	h2c := protoServer(t, true, false)
	tlsSrv := protoServer(t, false, true)
	opts := func(h2, skip bool) *fsm.RouteSettings {
		return settings(func(s *fsm.RouteSettings) { s.Options.HTTP2 = h2; s.Options.TLSSkipVerify = skip })
	}
	f := newFront(t, Config{}, newTable(1).
		add(route{id: "r1", domains: []string{"h2c.test"}, backend: h2c.URL, settings: opts(true, false)}).
		add(route{id: "r2", domains: []string{"h1.test"}, backend: h2c.URL, settings: opts(false, false)}).
		add(route{id: "r3", domains: []string{"h2tls.test"}, backend: tlsSrv.URL, settings: opts(true, true)}).
		add(route{id: "r4", domains: []string{"h1tls.test"}, backend: tlsSrv.URL, settings: opts(false, true)}).
		add(route{id: "r5", domains: []string{"verify.test"}, backend: tlsSrv.URL, settings: opts(false, false)}).build())
	want := map[string]string{"h2c.test": "HTTP/2.0", "h1.test": "HTTP/1.1", "h2tls.test": "HTTP/2.0", "h1tls.test": "HTTP/1.1"}
	for host, proto := range want {
		if r := f.get(t, host, "/"); r.code != 200 || r.body != proto {
			t.Errorf("%s: %d %q, want %s", host, r.code, r.body, proto)
		}
	}
	if r := f.get(t, "verify.test", "/"); r.code != 502 {
		t.Errorf("self-signed backend without tls_skip_verify: %d", r.code)
	}
}
