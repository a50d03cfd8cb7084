package client

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestRegisterSendsExactLine(t *testing.T) {
	srv := newFakeServer(t)
	cfg := testConfig(srv.addr)
	cfg.MaintenancePort = 8080
	cfg.Metadata = []byte(`{"team": "a|b",
		"v": 2}`)
	c := newTestClient(t, cfg)
	if got, want := c.SessionID(), "svc-1"; got != want {
		t.Fatalf("SessionID = %q, want %q", got, want)
	}
	want := `REGISTER|svc|i1|8080|{"team":"a\u007cb","v":2}`
	if got := srv.received(); len(got) != 1 || got[0] != want {
		t.Fatalf("server received %q, want [%q]", got, want)
	}
	if c.ConnectedTo() != srv.addr {
		t.Fatalf("ConnectedTo = %q, want %q", c.ConnectedTo(), srv.addr)
	}
}

func TestRegisterRejectedIsFinal(t *testing.T) {
	srv := newFakeServer(t)
	srv.handle(func(fc *fakeConn, line string, f []string) bool {
		if f[0] == "REGISTER" {
			fc.send("ERROR|invalid service name")
			return true
		}
		return false
	})
	cfg := testConfig(srv.addr)
	_, err := New(ctxT(t), cfg)
	var se *ServerError
	if !errors.As(err, &se) || se.Msg != "invalid service name" {
		t.Fatalf("New error = %v, want ServerError invalid service name", err)
	}
	if n := len(srv.receivedWith("REGISTER")); n != 1 {
		t.Fatalf("REGISTER sent %d times, want 1 (no retry of a refused registration)", n)
	}
}

// script answers commands by word from a map and records nothing else.
func script(answers map[string]string) func(fc *fakeConn, line string, f []string) bool {
	return func(fc *fakeConn, line string, f []string) bool {
		if a, ok := answers[f[0]]; ok {
			fc.send(a)
			return true
		}
		return false
	}
}

func TestCommandLines(t *testing.T) {
	type tc struct {
		name  string
		call  func(ctx context.Context, c *Client) (any, error)
		line  string // "S" is replaced by the session ID
		reply string
		want  any
	}
	cases := []tc{
		{"Ping", func(ctx context.Context, c *Client) (any, error) { return nil, c.Ping(ctx) }, "PING|S", "PONG", nil},
		{"RouteAdd", func(ctx context.Context, c *Client) (any, error) {
			return c.RouteAdd(ctx, RouteSpec{Domains: []string{"a.example.com", "*.b.example.com"}, Path: "/api", BackendURL: "http://10.0.0.1:8080", Priority: 5})
		}, "ROUTE_ADD|S|a.example.com,*.b.example.com|/api|http://10.0.0.1:8080|5", "ROUTE_OK|r7", "r7"},
		{"RouteAddBulk", func(ctx context.Context, c *Client) (any, error) {
			return c.RouteAddBulk(ctx, []RouteSpec{{Domains: []string{"a.com"}, Path: "/", BackendURL: "http://b:1"}, {Domains: []string{"c.com"}, Path: "/x", BackendURL: "ws://d:2", Priority: 1}})
		}, `ROUTE_ADD_BULK|S|[{"domains":["a.com"],"path":"/","backend_url":"http://b:1","priority":0},{"domains":["c.com"],"path":"/x","backend_url":"ws://d:2","priority":1}]`,
			`ROUTE_BULK_OK|[{"route_id":"r1","status":"ok"},{"route_id":"r2","status":"ok"}]`,
			[]BulkResult{{"r1", "ok"}, {"r2", "ok"}}},
		{"RouteUpdate", func(ctx context.Context, c *Client) (any, error) {
			return nil, c.RouteUpdate(ctx, "r1", RouteFieldPriority, "3")
		}, "ROUTE_UPDATE|S|r1|priority|3", "ROUTE_OK", nil},
		{"RouteRemove", func(ctx context.Context, c *Client) (any, error) { return nil, c.RouteRemove(ctx, "r1") }, "ROUTE_REMOVE|S|r1", "ROUTE_OK", nil},
		{"HeadersSet", func(ctx context.Context, c *Client) (any, error) {
			return nil, c.HeadersSet(ctx, TargetAll, "request:X-Env", "prod env")
		}, "HEADERS_SET|S|ALL|request:X-Env|prod env", "HEADERS_OK", nil},
		{"HeadersRemove", func(ctx context.Context, c *Client) (any, error) { return nil, c.HeadersRemove(ctx, "r2", "X-A") }, "HEADERS_REMOVE|S|r2|X-A", "HEADERS_OK", nil},
		{"OptionsSet", func(ctx context.Context, c *Client) (any, error) {
			return nil, c.OptionsSet(ctx, "r1", "timeout", "5s")
		}, "OPTIONS_SET|S|r1|timeout|5s", "OPTIONS_OK", nil},
		{"OptionsRemove", func(ctx context.Context, c *Client) (any, error) { return nil, c.OptionsRemove(ctx, "ALL", "retries") }, "OPTIONS_REMOVE|S|ALL|retries", "OPTIONS_OK", nil},
		{"HealthSet", func(ctx context.Context, c *Client) (any, error) {
			return nil, c.HealthSet(ctx, "r1", "/healthz", 10*time.Second, 1500*time.Millisecond)
		}, "HEALTH_SET|S|r1|/healthz|10s|1.5s", "HEALTH_OK", nil},
		{"RateLimitSet", func(ctx context.Context, c *Client) (any, error) {
			return nil, c.RateLimitSet(ctx, TargetAll, 100, time.Minute)
		}, "RATELIMIT_SET|S|ALL|100|1m0s", "RATELIMIT_OK", nil},
		{"CircuitBreakerSet", func(ctx context.Context, c *Client) (any, error) {
			return nil, c.CircuitBreakerSet(ctx, "r3", 5, 30*time.Second, 2)
		}, "CIRCUIT_BREAKER_SET|S|r3|5|30s|2", "CIRCUIT_OK", nil},
		{"CircuitBreakerReset", func(ctx context.Context, c *Client) (any, error) { return nil, c.CircuitBreakerReset(ctx, "r3") }, "CIRCUIT_BREAKER_RESET|S|r3", "CIRCUIT_OK", nil},
		{"ConfigValidate", func(ctx context.Context, c *Client) (any, error) { return nil, c.ConfigValidate(ctx) }, "CONFIG_VALIDATE|S", "OK", nil},
		{"ConfigApply", func(ctx context.Context, c *Client) (any, error) { return nil, c.ConfigApply(ctx) }, "CONFIG_APPLY|S", "OK", nil},
		{"ConfigRollback", func(ctx context.Context, c *Client) (any, error) { return nil, c.ConfigRollback(ctx) }, "CONFIG_ROLLBACK|S", "OK", nil},
		{"ConfigApplyPartial", func(ctx context.Context, c *Client) (any, error) {
			return nil, c.ConfigApplyPartial(ctx, ScopeRoutes, ScopeHeaders)
		}, "CONFIG_APPLY_PARTIAL|S|routes,headers", "OK", nil},
		{"DrainStart", func(ctx context.Context, c *Client) (any, error) { return c.DrainStart(ctx, 90*time.Second) },
			"DRAIN_START|S|1m30s", "DRAIN_OK|2025-03-01T10:01:30Z", time.Date(2025, 3, 1, 10, 1, 30, 0, time.UTC)},
		{"DrainCancel", func(ctx context.Context, c *Client) (any, error) { return nil, c.DrainCancel(ctx) }, "DRAIN_CANCEL|S", "DRAIN_OK", nil},
		{"Subscribe", func(ctx context.Context, c *Client) (any, error) { return nil, c.Subscribe(ctx, EventConfigApplied) }, "SUBSCRIBE|S|config_applied", "SUBSCRIBE_OK", nil},
		{"Unsubscribe", func(ctx context.Context, c *Client) (any, error) { return nil, c.Unsubscribe(ctx, EventAll) }, "UNSUBSCRIBE|S|all", "UNSUBSCRIBE_OK", nil},
		{"StatsGetOne", func(ctx context.Context, c *Client) (any, error) { return c.StatsGet(ctx, "r1") },
			"STATS_GET|S|r1", `STATS_OK|{"route_id":"r1","requests":10,"errors":1,"avg_latency_ms":1.5,"p95_latency_ms":3,"p99_latency_ms":9.5,"bytes_sent":100,"bytes_received":50,"status_codes":{"200":9,"502":1},"nodes_reporting":3}`,
			[]RouteStats{{RouteID: "r1", Requests: 10, Errors: 1, AvgLatencyMS: 1.5, P95LatencyMS: 3, P99LatencyMS: 9.5, BytesSent: 100, BytesReceived: 50, StatusCodes: map[string]int64{"200": 9, "502": 1}, NodesReporting: 3}}},
		{"StatsGetAll", func(ctx context.Context, c *Client) (any, error) { return c.StatsGet(ctx, "") },
			"STATS_GET|S", `STATS_OK|[{"route_id":"r1","requests":1},{"route_id":"r2","requests":2}]`,
			[]RouteStats{{RouteID: "r1", Requests: 1}, {RouteID: "r2", Requests: 2}}},
		{"BackendTestOK", func(ctx context.Context, c *Client) (any, error) { return c.BackendTest(ctx, "https://b:443") },
			"BACKEND_TEST|S|https://b:443", `BACKEND_OK|{"reachable":true,"response_time_ms":4,"status_code":200,"tls_valid":true}`,
			&BackendTestResult{OK: true, Reachable: true, ResponseTimeMS: 4, StatusCode: 200, TLSValid: true}},
		{"BackendTestFail", func(ctx context.Context, c *Client) (any, error) { return c.BackendTest(ctx, "http://b:1") },
			"BACKEND_TEST|S|http://b:1", `BACKEND_FAIL|{"reachable":false,"error":"connection refused"}`,
			&BackendTestResult{OK: false, Error: "connection refused"}},
		{"MaintStatus", func(ctx context.Context, c *Client) (any, error) { return c.MaintStatus(ctx) },
			"MAINT_STATUS|S", `MAINT_STATUS_OK|{"in_maintenance":["r2"],"maintenance_backend":"http://m:80","entered_at":"2025-03-01T10:00:00Z"}`,
			&MaintStatus{InMaintenance: []string{"r2"}, MaintenanceBackend: "http://m:80", EnteredAt: time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)}},
		{"MaintStatusNone", func(ctx context.Context, c *Client) (any, error) { return c.MaintStatus(ctx) },
			"MAINT_STATUS|S", `MAINT_STATUS_OK|{"in_maintenance":[],"maintenance_backend":"","entered_at":""}`,
			&MaintStatus{InMaintenance: []string{}}},
	}
	srv := newFakeServer(t)
	c := newTestClient(t, testConfig(srv.addr))
	s := c.SessionID()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			word := strings.SplitN(tc.line, "|", 2)[0]
			srv.handle(script(map[string]string{word: tc.reply}))
			before := len(srv.received())
			got, err := tc.call(ctxT(t), c)
			if err != nil {
				t.Fatalf("error: %v", err)
			}
			lines := srv.received()[before:]
			wantLine := strings.Replace(tc.line, "|S", "|"+s, 1)
			if len(lines) != 1 || lines[0] != wantLine {
				t.Fatalf("sent %q, want %q", lines, wantLine)
			}
			if tc.want != nil && !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("result = %#v, want %#v", got, tc.want)
			}
		})
	}
}

func TestServerErrorsAreTyped(t *testing.T) {
	srv := newFakeServer(t)
	c := newTestClient(t, testConfig(srv.addr))
	msgs := map[string]string{
		"ROUTE_REMOVE": "ERROR|route not found",
		"CONFIG_APPLY": "ERROR|no leader: election in progress",
		"DRAIN_STATUS": "ERROR|no drain in progress",
		"PING":         "ERROR|session not found",
		"ROUTE_UPDATE": "ERROR|invalid format: ROUTE_UPDATE needs session|route_id|field|value",
	}
	srv.handle(script(msgs))
	ctx := ctxT(t)

	err := c.RouteRemove(ctx, "r9")
	var se *ServerError
	if !errors.As(err, &se) || se.Msg != "route not found" || se.Command != "ROUTE_REMOVE" {
		t.Fatalf("RouteRemove error = %#v", err)
	}
	if !IsNotFound(err) || !IsRouteNotFound(err) || IsSessionNotFound(err) {
		t.Fatalf("route not found helpers wrong for %v", err)
	}
	if err := c.ConfigApply(ctx); !IsNoLeader(err) {
		t.Fatalf("ConfigApply error = %v, want no leader", err)
	}
	if _, err := c.DrainStatus(ctx); !IsNoDrain(err) {
		t.Fatalf("DrainStatus error = %v, want no drain", err)
	}
	if err := c.Ping(ctx); !IsSessionNotFound(err) || !IsNotFound(err) {
		t.Fatalf("Ping error = %v, want session not found", err)
	}
	if err := c.RouteUpdate(ctx, "r1", "path", "/x"); !IsInvalidFormat(err) {
		t.Fatalf("RouteUpdate error = %v, want invalid format", err)
	}
	if IsNotFound(errors.New("route not found")) {
		t.Fatal("IsNotFound matched a non-server error")
	}
	// An unexpected code is a protocol error, not a success.
	srv.handle(script(map[string]string{"CONFIG_ROLLBACK": "ROUTE_OK|r1"}))
	if err := c.ConfigRollback(ctx); !errors.Is(err, ErrProtocol) {
		t.Fatalf("ConfigRollback error = %v, want ErrProtocol", err)
	}
}

func TestFieldValidation(t *testing.T) {
	srv := newFakeServer(t)
	c := newTestClient(t, testConfig(srv.addr))
	ctx := ctxT(t)
	before := len(srv.received())
	checks := []struct {
		name  string
		field string
		err   error
	}{
		{"path with bar", "path", func() error {
			_, err := c.RouteAdd(ctx, RouteSpec{Domains: []string{"a.com"}, Path: "/a|b", BackendURL: "http://b"})
			return err
		}()},
		{"domain with comma", "domains", func() error {
			_, err := c.RouteAdd(ctx, RouteSpec{Domains: []string{"a.com,b.com"}, Path: "/", BackendURL: "http://b"})
			return err
		}()},
		{"backend with newline", "backend_url", func() error {
			_, err := c.RouteAdd(ctx, RouteSpec{Domains: []string{"a.com"}, Path: "/", BackendURL: "http://b\nPING"})
			return err
		}()},
		{"header value CR", "value", c.HeadersSet(ctx, TargetAll, "X-A", "v\r")},
		{"bulk domain bar", "domains", func() error {
			_, err := c.RouteAddBulk(ctx, []RouteSpec{{Domains: []string{"a|b"}, Path: "/"}})
			return err
		}()},
		{"maint target", "target", c.MaintEnter(ctx, "ALL\n", "")},
		{"scope comma", "scope", c.ConfigApplyPartial(ctx, "routes,headers")},
		{"subscribe type", "type", c.Subscribe(ctx, "all|x")},
	}
	for _, ch := range checks {
		var fe *FieldError
		if !errors.As(ch.err, &fe) || fe.Field != ch.field || !errors.Is(ch.err, ErrInvalidField) {
			t.Errorf("%s: error = %v, want FieldError on %s", ch.name, ch.err, ch.field)
		}
	}
	if got := srv.received()[before:]; len(got) != 0 {
		t.Fatalf("invalid commands reached the server: %q", got)
	}

	// Bad REGISTER fields fail before dialing anything.
	for _, cfg := range []Config{
		{Addrs: []string{srv.addr}, Service: "a|b"},
		{Addrs: []string{srv.addr}, Service: "a", Metadata: []byte(`{"x":`)},
		{Addrs: []string{srv.addr}, Service: "a", MaintenancePort: 70000},
	} {
		if _, err := New(ctx, cfg); !errors.Is(err, ErrInvalidField) {
			t.Errorf("New(%+v) error = %v, want ErrInvalidField", cfg, err)
		}
	}
	if n := len(srv.receivedWith("REGISTER")); n != 1 {
		t.Fatalf("REGISTER lines = %d, want 1", n)
	}
}

// TestConcurrentPipelining runs 100 goroutines against one connection while
// the server interleaves events between responses; every caller must get
// the answer to its own command.
func TestConcurrentPipelining(t *testing.T) {
	srv := newFakeServer(t)
	var mu sync.Mutex
	sentEvents := 0
	srv.handle(func(fc *fakeConn, line string, f []string) bool {
		switch f[0] {
		case "ROUTE_ADD":
			// Echo the path into the ID so the client's matching is checked.
			id := "r" + strings.TrimPrefix(f[3], "/")
			mu.Lock()
			sentEvents++
			n := sentEvents
			mu.Unlock()
			fc.send(fmt.Sprintf(`EVENT|config_applied|{"n":%d,"note":"a|b"}`, n), "ROUTE_OK|"+id)
			return true
		case "STATS_GET":
			fc.send(`STATS_OK|{"route_id":"` + f[2] + `","requests":1}`)
			return true
		}
		return false
	})
	c := newTestClient(t, testConfig(srv.addr))
	var evMu sync.Mutex
	var events []Event
	c.OnEvent(func(ev Event) {
		evMu.Lock()
		events = append(events, ev)
		evMu.Unlock()
	})

	const goroutines, perG = 100, 5
	ctx := ctxT(t)
	errs := make(chan error, goroutines*perG)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range perG {
				key := fmt.Sprintf("%d-%d", g, j)
				if j%2 == 0 {
					id, err := c.RouteAdd(ctx, RouteSpec{Domains: []string{"a.com"}, Path: "/" + key, BackendURL: "http://b"})
					if err != nil || id != "r"+key {
						errs <- fmt.Errorf("RouteAdd %s: id %q err %v", key, id, err)
					}
				} else {
					st, err := c.StatsGet(ctx, "r"+key)
					if err != nil || len(st) != 1 || st[0].RouteID != "r"+key {
						errs <- fmt.Errorf("StatsGet %s: %+v err %v", key, st, err)
					}
				}
			}
		}()
	}
	waitGroup(t, &wg, "the pipelined callers")
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	wantEvents := goroutines * ((perG + 1) / 2)
	waitFor(t, "all events delivered", func() bool {
		evMu.Lock()
		defer evMu.Unlock()
		return len(events) == wantEvents
	})
	evMu.Lock()
	defer evMu.Unlock()
	for i, ev := range events {
		want := fmt.Sprintf(`{"n":%d,"note":"a|b"}`, i+1)
		if ev.Type != EventConfigApplied || string(ev.Data) != want {
			t.Fatalf("event %d = %s %s, want config_applied %s (in order)", i, ev.Type, ev.Data, want)
		}
	}
}

func TestContextCancelKeepsResponsesMatched(t *testing.T) {
	srv := newFakeServer(t)
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock) // runs before the server's cleanup
	srv.handle(func(fc *fakeConn, line string, f []string) bool {
		if f[0] == "ROUTE_ADD" {
			hold(release)
			fc.send("ROUTE_OK|r1")
			return true
		}
		return false
	})
	c := newTestClient(t, testConfig(srv.addr))

	// The context ends only once the command is surely written: a short
	// timeout could end it before the write on a loaded machine, and this
	// test is about a command abandoned after it went out.
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	addErr := make(chan error, 1)
	go func() {
		_, err := c.RouteAdd(ctx, RouteSpec{Domains: []string{"a.com"}, Path: "/", BackendURL: "http://b"})
		addErr <- err
	}()
	waitFor(t, "ROUTE_ADD at the server", func() bool { return len(srv.receivedWith("ROUTE_ADD|")) == 1 })
	cancel()
	if err := recv(t, addErr, "RouteAdd to give up"); !errors.Is(err, context.Canceled) {
		t.Fatalf("RouteAdd error = %v, want canceled", err)
	}

	// The abandoned command's answer comes first and must be discarded,
	// not handed to the Ping.
	pingCtx := ctxT(t)
	pingErr := make(chan error, 1)
	go func() { pingErr <- c.Ping(pingCtx) }()
	// The server reads the PING only after answering the ROUTE_ADD, so
	// wait until the client has both commands queued.
	waitFor(t, "PING queued behind the abandoned command", func() bool { return currentQueueLen(c) == 2 })
	unblock()
	if err := recv(t, pingErr, "Ping"); err != nil {
		t.Fatalf("Ping after abandoned command: %v", err)
	}
	if n := len(srv.receivedWith("RECONNECT")); n != 0 {
		t.Fatalf("RECONNECT sent %d times: the abandoned command cost the connection", n)
	}
	// A context canceled while waiting for a connection leaves no goroutine
	// behind either (goleak in TestMain checks).
	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	if err := c.Ping(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Ping with canceled ctx = %v", err)
	}
}

// pastDeadlineCtx has a deadline that has already passed but does not
// report it through Err yet, as a context does in the moment between its
// deadline and its timer firing. It lets a test land exactly in the window
// between call's own ctx check and the write.
type pastDeadlineCtx struct{ context.Context }

func (pastDeadlineCtx) Deadline() (time.Time, bool) { return time.Now().Add(-time.Second), true }

// TestDeadlinePassedAtWriteKeepsConnection: on a loaded machine a short
// deadline can pass between the command's start and its write. Nothing was
// written, so the command fails as not sent (safe to retry) and the
// connection, with every command pipelined on it, lives on.
func TestDeadlinePassedAtWriteKeepsConnection(t *testing.T) {
	srv := newFakeServer(t)
	c := newTestClient(t, testConfig(srv.addr))
	cn := currentConn(c)

	err := c.Ping(pastDeadlineCtx{ctxT(t)})
	if !errors.Is(err, errNotSent) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Ping with a passed deadline = %v, want not sent, deadline exceeded", err)
	}
	if IsUnknownOutcome(err) {
		t.Fatalf("Ping that was never written reports an unknown outcome: %v", err)
	}
	if err := c.Ping(ctxT(t)); err != nil {
		t.Fatalf("next Ping: %v", err)
	}
	if currentConn(c) != cn || cn.dead() {
		t.Fatal("the connection was replaced after a command that was not written")
	}
	if got := srv.received(); len(got) != 2 || got[1] != "PING|svc-1" {
		t.Fatalf("server received %q, want REGISTER and one PING", got)
	}
	if n := currentQueueLen(c); n != 0 {
		t.Fatalf("%d waiters left queued, want 0", n)
	}
}

func TestCloseFailsInFlightAndLaterCalls(t *testing.T) {
	srv := newFakeServer(t)
	got := make(chan struct{})
	srv.handle(func(fc *fakeConn, line string, f []string) bool {
		if f[0] == "CONFIG_APPLY" {
			close(got)
			return true // never answered
		}
		return false
	})
	cfg := testConfig(srv.addr)
	cfg.CommandTimeout = -1 // only Close can end the call
	c, err := New(ctxT(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() }) // if the test fails before its own Close
	res := make(chan error, 1)
	go func() { res <- c.ConfigApply(context.Background()) }()
	recv(t, got, "CONFIG_APPLY at the server")
	c.Close()
	if err := recv(t, res, "ConfigApply to fail"); !errors.Is(err, ErrConnectionLost) {
		t.Fatalf("in-flight ConfigApply after Close = %v, want ErrConnectionLost", err)
	}
	if err := c.Ping(ctxT(t)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Ping after Close = %v, want ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
}

func TestDialBare(t *testing.T) {
	srv := newFakeServer(t)
	srv.mu.Lock()
	srv.cluster = `{"leader":"n2","term":7,"nodes":[{"id":"n1","control_addr":"10.0.0.1:81","proxy_addr":"10.0.0.1:80","raft_state":"Follower","applied_index":41,"alive":true},{"id":"n2","control_addr":"10.0.0.2:81","proxy_addr":"10.0.0.2:80","raft_state":"Leader","applied_index":42,"alive":false}]}`
	srv.mu.Unlock()
	c, err := Dial(ctxT(t), srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := ctxT(t)
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := c.ClusterStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := &ClusterStatus{Leader: "n2", Term: 7, Nodes: []NodeStatus{
		{ID: "n1", ControlAddr: "10.0.0.1:81", ProxyAddr: "10.0.0.1:80", RaftState: "Follower", AppliedIndex: 41, Alive: true},
		{ID: "n2", ControlAddr: "10.0.0.2:81", ProxyAddr: "10.0.0.2:80", RaftState: "Leader", AppliedIndex: 42},
	}}
	if !reflect.DeepEqual(st, want) {
		t.Fatalf("ClusterStatus = %+v, want %+v", st, want)
	}
	if _, err := c.RouteAdd(ctx, RouteSpec{Domains: []string{"a.com"}, Path: "/", BackendURL: "http://b"}); !errors.Is(err, ErrNoSession) {
		t.Fatalf("RouteAdd on Dial client = %v, want ErrNoSession", err)
	}
	// Dial also sends CLUSTER_STATUS by itself to learn the other nodes;
	// every line must be session-less.
	got := srv.received()
	pings, statuses := 0, 0
	for _, l := range got {
		switch l {
		case "PING":
			pings++
		case "CLUSTER_STATUS":
			statuses++
		default:
			t.Fatalf("server received %q, want only bare PING and CLUSTER_STATUS", got)
		}
	}
	if pings != 1 || statuses < 1 {
		t.Fatalf("server received %q, want one PING and CLUSTER_STATUS", got)
	}
	if got := c.Addrs(); len(got) != 3 || got[1] != "10.0.0.1:81" || got[2] != "10.0.0.2:81" {
		t.Fatalf("learned addrs = %q", got)
	}
}

func TestResponseLineTooLongKillsConnection(t *testing.T) {
	srv := newFakeServer(t)
	srv.handle(func(fc *fakeConn, line string, f []string) bool {
		if f[0] == "ROUTE_LIST" {
			fc.send("ROUTE_LIST_OK|" + strings.Repeat("A", maxResponseLine+10))
			return true
		}
		return false
	})
	c := newTestClient(t, testConfig(srv.addr))
	if _, err := c.RouteList(ctxT(t)); !errors.Is(err, ErrConnectionLost) || !errors.Is(err, ErrProtocol) {
		t.Fatalf("RouteList with oversize line = %v, want ErrConnectionLost wrapping ErrProtocol", err)
	}
	// The client reconnects and the session goes on.
	if err := c.Ping(ctxT(t)); err != nil {
		t.Fatalf("Ping after reconnect: %v", err)
	}
	if n := len(srv.receivedWith("RECONNECT|svc-1")); n != 1 {
		t.Fatalf("RECONNECT lines = %d, want 1", n)
	}
}
