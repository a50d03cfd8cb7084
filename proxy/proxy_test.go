package proxy

import (
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/raftgate/raftgate/fsm"
)

func TestServeBasicAnd404(t *testing.T) {
	b1 := newBackend(t, "one")
	f := newFront(t, Config{}, newTable(7).
		add(route{id: "r1", domains: []string{"example.com"}, path: "/api", backend: b1.URL}).build())
	if f.p.TableIndex() != 7 {
		t.Fatalf("TableIndex = %d", f.p.TableIndex())
	}
	r := f.get(t, "example.com", "/api/x?q=1")
	if r.code != 200 || r.body != "one /api/x" {
		t.Fatalf("got %d %q", r.code, r.body)
	}
	if q := b1.lastRequest().URL.RawQuery; q != "q=1" {
		t.Errorf("query = %q", q)
	}
	for _, c := range [][2]string{{"example.com", "/other"}, {"nothing.test", "/api"}} {
		r := f.get(t, c[0], c[1])
		if r.code != 404 || !strings.HasPrefix(r.body, "404") || len(r.body) > 100 {
			t.Errorf("%v: got %d %q", c, r.code, r.body)
		}
	}
}

func TestHeadersAndForwarded(t *testing.T) {
	b1 := newBackend(t, "one")
	st := settings(func(s *fsm.RouteSettings) {
		s.ResponseHeaders = []fsm.Header{{Name: "x-frame-options", Value: "DENY"}, {Name: "X-Backend", Value: "overridden"}}
		s.RequestHeaders = []fsm.Header{{Name: "X-Api-Key", Value: "secret"}}
	})
	tbl := newTable(1).add(route{id: "r1", domains: []string{"example.com"}, backend: b1.URL, settings: st}).build()

	t.Run("untrusted peer", func(t *testing.T) {
		f := newFront(t, Config{}, tbl)
		r := f.do(t, "GET", "example.com", "/h", map[string]string{
			"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.test",
			"Connection": "X-Hop", "X-Hop": "1", "Keep-Alive": "timeout=5",
		}, nil)
		if r.code != 200 {
			t.Fatalf("code %d", r.code)
		}
		if got := r.header.Get("X-Frame-Options"); got != "DENY" {
			t.Errorf("response header = %q", got)
		}
		if got := r.header.Get("X-Backend"); got != "overridden" {
			t.Errorf("configured header should override the backend's: %q", got)
		}
		in := b1.lastRequest()
		want := map[string]string{
			"X-Api-Key": "secret", "X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "http",
			"X-Forwarded-Host": "example.com", "X-Hop": "", "Keep-Alive": "",
		}
		for k, v := range want {
			if got := in.Header.Get(k); got != v {
				t.Errorf("backend saw %s = %q, want %q", k, got, v)
			}
		}
		if in.Host == "example.com" {
			t.Errorf("host should be the backend's without preserve_host, got %q", in.Host)
		}
	})
	t.Run("trusted peer", func(t *testing.T) {
		f := newFront(t, Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}, tbl)
		f.do(t, "GET", "example.com", "/h", map[string]string{
			"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "public.test",
		}, nil)
		in := b1.lastRequest()
		if got := in.Header.Get("X-Forwarded-For"); got != "203.0.113.9, 127.0.0.1" {
			t.Errorf("X-Forwarded-For = %q", got)
		}
		if in.Header.Get("X-Forwarded-Proto") != "https" || in.Header.Get("X-Forwarded-Host") != "public.test" {
			t.Errorf("trusted proto/host not kept: %v", in.Header)
		}
	})
}

func TestOptionsHostAndPath(t *testing.T) {
	b1 := newBackend(t, "one")
	opt := func(fn func(o *fsm.Options)) *fsm.RouteSettings {
		return settings(func(s *fsm.RouteSettings) { fn(&s.Options) })
	}
	f := newFront(t, Config{}, newTable(1).
		add(route{id: "r1", domains: []string{"keep.test"}, path: "/api", backend: b1.URL,
			settings: opt(func(o *fsm.Options) { o.PreserveHost = true; o.StripPrefix = true })}).
		add(route{id: "r2", domains: []string{"base.test"}, path: "/", backend: b1.URL + "/base"}).
		build())
	r := f.get(t, "keep.test", "/api/users")
	if r.body != "one /users" {
		t.Errorf("strip_prefix: %q", r.body)
	}
	if h := b1.lastRequest().Host; h != "keep.test" {
		t.Errorf("preserve_host: backend saw host %q", h)
	}
	if r := f.get(t, "keep.test", "/api"); r.body != "one /" {
		t.Errorf("strip to root: %q", r.body)
	}
	if r := f.get(t, "base.test", "/x"); r.body != "one /base/x" {
		t.Errorf("backend base path: %q", r.body)
	}
}

func TestMaxBodyBytes(t *testing.T) {
	var got int
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		got = len(b)
		_, _ = io.WriteString(w, "ok")
	}))
	defer be.Close()
	f := newFront(t, Config{}, newTable(1).add(route{id: "r1", domains: []string{"a.test"}, backend: be.URL,
		settings: settings(func(s *fsm.RouteSettings) { s.Options.MaxBodyBytes = 100 })}).build())
	if r := f.do(t, "POST", "a.test", "/", nil, strings.NewReader(strings.Repeat("x", 100))); r.code != 200 || got != 100 {
		t.Fatalf("at the limit: %d, backend read %d", r.code, got)
	}
	if r := f.do(t, "POST", "a.test", "/", nil, strings.NewReader(strings.Repeat("x", 101))); r.code != 413 {
		t.Fatalf("declared over the limit: %d", r.code)
	}
	// Chunked: no Content-Length, the limit trips while streaming.
	body := io.MultiReader(strings.NewReader(strings.Repeat("y", 150)))
	if r := f.do(t, "POST", "a.test", "/", nil, body); r.code != 413 {
		t.Fatalf("chunked over the limit: %d", r.code)
	}
}

func TestErrors502And504(t *testing.T) {
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(release)
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	f := newFront(t, Config{}, newTable(1).
		add(route{id: "r1", domains: []string{"slow.test"}, backend: slow.URL,
			settings: settings(func(s *fsm.RouteSettings) { s.Options.Timeout = 100 * time.Millisecond })}).
		add(route{id: "r2", domains: []string{"dead.test"}, backend: deadURL}).
		build())
	start := time.Now()
	r := f.get(t, "slow.test", "/")
	if r.code != 504 || r.body != msgTimeout {
		t.Errorf("timeout: %d %q", r.code, r.body)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("timeout took %v", el)
	}
	r = f.get(t, "dead.test", "/")
	if r.code != 502 || r.body != msgBadGateway {
		t.Errorf("refused: %d %q", r.code, r.body)
	}
	if st := f.p.RouteStats("r2"); st.Errors != 1 || st.StatusCodes[502] != 1 {
		t.Errorf("stats after 502: %+v", st)
	}
}

func TestRetriesGoToNextBackend(t *testing.T) {
	bad := newBackend(t, "bad")
	bad.fail.Store(500)
	good := newBackend(t, "good")
	st := settings(func(s *fsm.RouteSettings) { s.Options.Retries = 2 })
	f := newFront(t, Config{}, newTable(1).
		add(route{id: "r1", session: "s1", domains: []string{"a.test"}, backend: bad.URL, settings: st}).
		add(route{id: "r2", session: "s2", domains: []string{"a.test"}, backend: good.URL, settings: st}).
		build())
	for i := range 6 {
		if r := f.get(t, "a.test", "/"); r.code != 200 || !strings.HasPrefix(r.body, "good") {
			t.Fatalf("GET %d: %d %q", i, r.code, r.body)
		}
	}
	// A POST is not idempotent: it is not retried, so the bad backend's
	// 500 reaches the client when round robin lands on it.
	saw500 := false
	for range 4 {
		if r := f.do(t, "POST", "a.test", "/", nil, strings.NewReader("x")); r.code == 500 {
			saw500 = true
		}
	}
	if !saw500 {
		t.Error("POST was retried")
	}
}

func TestCompression(t *testing.T) {
	text := strings.Repeat("hello gzip ", 100)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, text)
	}))
	defer be.Close()
	f := newFront(t, Config{}, newTable(1).
		add(route{id: "r1", domains: []string{"z.test"}, backend: be.URL,
			settings: settings(func(s *fsm.RouteSettings) { s.Options.Compression = true })}).
		add(route{id: "r2", domains: []string{"plain.test"}, backend: be.URL}).build())
	r := f.do(t, "GET", "z.test", "/", map[string]string{"Accept-Encoding": "gzip"}, nil)
	if r.header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("not compressed: %v", r.header)
	}
	zr, err := gzip.NewReader(strings.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := io.ReadAll(zr)
	if string(plain) != text || len(r.body) >= len(text) {
		t.Errorf("gzip body wrong: %d bytes -> %d", len(text), len(r.body))
	}
	if r := f.do(t, "GET", "z.test", "/", nil, nil); r.header.Get("Content-Encoding") != "" || r.body != text {
		t.Errorf("compressed for a client that did not ask")
	}
	if r := f.do(t, "GET", "plain.test", "/", map[string]string{"Accept-Encoding": "gzip"}, nil); r.header.Get("Content-Encoding") != "" {
		t.Errorf("compressed without the option")
	}
}

func TestLoadBalancingPolicies(t *testing.T) {
	bs := []*backend{newBackend(t, "a"), newBackend(t, "b"), newBackend(t, "c")}
	for _, policy := range []string{"round_robin", "least_conn", "ip_hash", "random"} {
		t.Run(policy, func(t *testing.T) {
			st := settings(func(s *fsm.RouteSettings) { s.Options.LBPolicy = policy })
			tb := newTable(1)
			for i, b := range bs {
				// Three sessions of one service share the pool.
				tb.add(route{id: "r" + string(rune('1'+i)), session: "s" + b.name, domains: []string{"lb.test"}, backend: b.URL, settings: st})
			}
			f := newFront(t, Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}, tb.build())
			count := map[string]int{}
			for i := range 60 {
				hdr := map[string]string{"X-Forwarded-For": "10.0.0.1"}
				if policy != "ip_hash" {
					hdr["X-Forwarded-For"] = "10.0.0." + string(rune('0'+i%10))
				}
				r := f.do(t, "GET", "lb.test", "/", hdr, nil)
				count[strings.Fields(r.body)[0]]++
			}
			switch policy {
			case "round_robin", "least_conn":
				// Sequential requests: least_conn ties rotate like round robin.
				for _, b := range bs {
					if count[b.name] != 20 {
						t.Errorf("%s: %v", policy, count)
					}
				}
			case "ip_hash":
				if len(count) != 1 {
					t.Errorf("ip_hash spread one client: %v", count)
				}
			case "random":
				for _, b := range bs {
					if count[b.name] < 5 {
						t.Errorf("random: %v", count)
					}
				}
			}
		})
	}
}

func TestLeastConnPrefersIdle(t *testing.T) {
	hold := make(chan struct{})
	entered := make(chan struct{}, 1)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-hold
		_, _ = io.WriteString(w, "slow")
	}))
	defer slow.Close()
	fast := newBackend(t, "fast")
	st := settings(func(s *fsm.RouteSettings) { s.Options.LBPolicy = "least_conn" })
	f := newFront(t, Config{}, newTable(1).
		add(route{id: "r1", session: "s1", domains: []string{"lc.test"}, backend: slow.URL, settings: st}).
		add(route{id: "r2", session: "s2", domains: []string{"lc.test"}, backend: fast.URL, settings: st}).build())
	done := make(chan reply, 1)
	go func() { done <- f.get(t, "lc.test", "/") }()
	<-entered
	if n := f.p.SessionInFlight("s1"); n != 1 {
		t.Errorf("in flight for s1 = %d", n)
	}
	for range 5 {
		if r := f.get(t, "lc.test", "/"); !strings.HasPrefix(r.body, "fast") {
			t.Fatalf("least_conn sent to the busy backend: %q", r.body)
		}
	}
	close(hold)
	if r := <-done; r.body != "slow" {
		t.Fatalf("slow: %q", r.body)
	}
	if n := f.p.SessionInFlight("s1"); n != 0 {
		t.Errorf("in flight after = %d", n)
	}
}

func TestMaintenance(t *testing.T) {
	b1 := newBackend(t, "live")
	mb := newBackend(t, "maint")
	f := newFront(t, Config{}, newTable(1).
		add(route{id: "r1", domains: []string{"page.test"}, backend: b1.URL, maint: true}).
		add(route{id: "r2", domains: []string{"mb.test"}, backend: b1.URL, maint: true, maintBackend: mb.URL}).build())
	r := f.get(t, "page.test", "/x")
	if r.code != 503 || r.header.Get("Retry-After") == "" || !strings.Contains(r.body, "<html") {
		t.Errorf("built-in page: %d %v %q", r.code, r.header, r.body)
	}
	if r := f.get(t, "mb.test", "/x"); r.code != 200 || r.body != "maint /x" {
		t.Errorf("maintenance backend: %d %q", r.code, r.body)
	}
	if b1.hits.Load() != 0 {
		t.Errorf("live backend got %d requests in maintenance", b1.hits.Load())
	}
}

func TestDrainWeights(t *testing.T) {
	a, b := newBackend(t, "a"), newBackend(t, "b")
	clk := newClock()
	start := clk.Now().UnixNano()
	drain := &fsm.Drain{StartedAt: start, Duration: int64(100 * time.Second)}
	tbl := newTable(1).
		add(route{id: "r1", session: "sa", domains: []string{"d.test"}, backend: a.URL, drain: drain}).
		add(route{id: "r2", session: "sb", domains: []string{"d.test"}, backend: b.URL}).
		add(route{id: "r3", session: "sa", domains: []string{"alone.test"}, backend: a.URL, drain: drain}).build()
	f := newFront(t, Config{Now: clk.Now}, tbl)

	share := func(host string, n int) (toA, refused int) {
		for range n {
			r := f.get(t, host, "/")
			switch {
			case r.code == 503:
				refused++
				if r.header.Get("Retry-After") == "" {
					t.Fatal("503 without Retry-After")
				}
			case strings.HasPrefix(r.body, "a"):
				toA++
			}
		}
		return
	}
	// At the start the draining session still takes its full half.
	if toA, _ := share("d.test", 40); toA != 20 {
		t.Errorf("t=0: a got %d of 40", toA)
	}
	clk.Add(50 * time.Second) // share 0.5: a keeps ~25% of the pool's requests
	if toA, _ := share("d.test", 400); toA < 60 || toA > 140 {
		t.Errorf("t=50%%: a got %d of 400, want ~100", toA)
	}
	if toA, refused := share("alone.test", 400); refused < 140 || refused > 260 || toA+refused != 400 {
		t.Errorf("t=50%% alone: a %d refused %d, want ~200 each", toA, refused)
	}
	clk.Add(60 * time.Second) // drained
	if toA, _ := share("d.test", 20); toA != 0 {
		t.Errorf("drained: a got %d", toA)
	}
	if _, refused := share("alone.test", 5); refused != 5 {
		t.Errorf("drained alone: refused %d of 5", refused)
	}
}

func TestInFlightNotCutByUpdate(t *testing.T) {
	hold := make(chan struct{})
	entered := make(chan struct{})
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-hold
		_, _ = io.WriteString(w, "finished")
	}))
	defer be.Close()
	f := newFront(t, Config{}, newTable(1).add(route{id: "r1", domains: []string{"a.test"}, backend: be.URL}).build())
	done := make(chan reply, 1)
	go func() { done <- f.get(t, "a.test", "/") }()
	<-entered
	f.p.Update(newTable(2).build()) // the route is gone
	if r := f.get(t, "a.test", "/"); r.code != 404 {
		t.Errorf("new request after removal: %d", r.code)
	}
	close(hold)
	if r := <-done; r.code != 200 || r.body != "finished" {
		t.Errorf("in-flight request: %d %q", r.code, r.body)
	}
}

func TestClientGone499(t *testing.T) {
	entered := make(chan struct{})
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done()
	}))
	defer be.Close()
	f := newFront(t, Config{}, newTable(1).add(route{id: "r1", domains: []string{"a.test"}, backend: be.URL}).build())
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", f.srv.URL+"/", nil)
	req.Host = "a.test"
	errc := make(chan error, 1)
	go func() {
		resp, err := f.client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	<-entered
	cancel() // the client hangs up
	if err := <-errc; err == nil {
		t.Fatal("request succeeded after cancel")
	}
	waitFor(t, "499 recorded", 5*time.Second, func() bool { return f.p.RouteStats("r1").StatusCodes[499] == 1 })
}
