package client

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"errors"
	"reflect"
	"testing"
	"time"
)

// compress gzips and base64-encodes s as a node does for `compressed`.
func compress(t *testing.T, s string) string {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(buf.Bytes())
}

const routeListJSON = `[{"route_id":"r1","id":"r1","domains":["a.com","b.com"],"path":"/api","backend":"http://b:80","priority":2,"status":"active","pending_update":true},` +
	`{"id":"r2","domains":"c.com, d.com","path":"/","backend":"ws://w:1","priority":0,"status":"pending_removal"}]`

var wantRoutes = []Route{
	{ID: "r1", Domains: []string{"a.com", "b.com"}, Path: "/api", Backend: "http://b:80", Priority: 2, Status: RouteActive, PendingUpdate: true},
	{ID: "r2", Domains: []string{"c.com", "d.com"}, Path: "/", Backend: "ws://w:1", Status: RoutePendingRemoval},
}

func TestRouteListPlainAndCompressed(t *testing.T) {
	srv := newFakeServer(t)
	c := newTestClient(t, testConfig(srv.addr))
	srv.handle(script(map[string]string{"ROUTE_LIST": "ROUTE_LIST_OK|" + routeListJSON}))
	got, err := c.RouteList(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, wantRoutes) {
		t.Fatalf("RouteList = %+v\nwant %+v", got, wantRoutes)
	}

	cfg := testConfig(srv.addr)
	cfg.Compressed = true
	cc := newTestClient(t, cfg)
	srv.handle(script(map[string]string{
		"ROUTE_LIST": "ROUTE_LIST_OK|" + compress(t, routeListJSON),
		"STATS_GET":  "STATS_OK|" + compress(t, `[{"route_id":"r1","requests":3,"status_codes":{"200":3}}]`),
	}))
	got, err = cc.RouteList(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, wantRoutes) {
		t.Fatalf("compressed RouteList = %+v", got)
	}
	stats, err := cc.StatsGet(ctxT(t), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(stats) != 1 || stats[0].Requests != 3 || stats[0].StatusCodes["200"] != 3 {
		t.Fatalf("compressed StatsGet = %+v", stats)
	}
	s := cc.SessionID()
	if got := srv.receivedWith("ROUTE_LIST|" + s); len(got) != 1 || got[0] != "ROUTE_LIST|"+s+"|compressed" {
		t.Fatalf("sent %q", got)
	}
	if got := srv.receivedWith("STATS_GET|" + s); len(got) != 1 || got[0] != "STATS_GET|"+s+"|ALL|compressed" {
		t.Fatalf("sent %q", got)
	}

	// A corrupt compressed payload is a protocol error, not garbage routes.
	srv.handle(script(map[string]string{"ROUTE_LIST": "ROUTE_LIST_OK|H4sIAAAA"}))
	if _, err := cc.RouteList(ctxT(t)); !errors.Is(err, ErrProtocol) {
		t.Fatalf("corrupt payload = %v, want ErrProtocol", err)
	}
}

func TestSessionInfoDecoding(t *testing.T) {
	srv := newFakeServer(t)
	c := newTestClient(t, testConfig(srv.addr))
	payload := `{"session_id":"svc-1","service_name":"svc","instance_name":"i1","maintenance_port":8081,"connected":false,` +
		`"node":"n2","connected_at":"2025-03-01T10:00:00Z","uptime_seconds":12.5,"routes_active":3,"routes_staged":1,` +
		`"last_apply":"","last_activity":"2025-03-01T10:00:05.5Z","metadata":{"team":"x"},"expires_at":"2025-03-01T10:05:05Z"}`
	srv.handle(script(map[string]string{"SESSION_INFO": "SESSION_OK|" + payload}))
	got, err := c.SessionInfo(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	want := &SessionInfo{
		SessionID: "svc-1", ServiceName: "svc", InstanceName: "i1", MaintenancePort: 8081, Node: "n2",
		ConnectedAt: time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC), UptimeSeconds: 12.5, RoutesActive: 3, RoutesStaged: 1,
		LastActivity: time.Date(2025, 3, 1, 10, 0, 5, 5e8, time.UTC), Metadata: []byte(`{"team":"x"}`),
		ExpiresAt: time.Date(2025, 3, 1, 10, 5, 5, 0, time.UTC),
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("SessionInfo = %+v\nwant %+v", got, want)
	}
	srv.handle(script(map[string]string{"SESSION_INFO": "SESSION_OK|{not json"}))
	if _, err := c.SessionInfo(ctxT(t)); !errors.Is(err, ErrProtocol) {
		t.Fatalf("bad JSON = %v, want ErrProtocol", err)
	}
}

func TestConfigDiffDecoding(t *testing.T) {
	srv := newFakeServer(t)
	c := newTestClient(t, testConfig(srv.addr))
	payload := `{"routes":{"added":["r3",{"route_id":"r4","path":"/x"}],"removed":[{"id":"r1"}],"modified":[]},` +
		`"headers":{"added":2,"removed":1},"options":{"modified":3},"health":{"modified":0},"ratelimit":{"modified":1},"circuit_breaker":{"modified":4}}`
	srv.handle(script(map[string]string{"CONFIG_DIFF": "DIFF_OK|" + payload}))
	d, err := c.ConfigDiff(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	ids := func(rs []DiffRoute) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.RouteID)
		}
		return out
	}
	if got := ids(d.Routes.Added); !reflect.DeepEqual(got, []string{"r3", "r4"}) {
		t.Fatalf("added = %q", got)
	}
	if got := ids(d.Routes.Removed); !reflect.DeepEqual(got, []string{"r1"}) {
		t.Fatalf("removed = %q", got)
	}
	if string(d.Routes.Added[1].Raw) != `{"route_id":"r4","path":"/x"}` {
		t.Fatalf("raw = %s", d.Routes.Added[1].Raw)
	}
	if d.Headers.Added != 2 || d.Headers.Removed != 1 || d.Options.Modified != 3 || d.RateLimit.Modified != 1 || d.CircuitBreaker.Modified != 4 {
		t.Fatalf("counts = %+v", d)
	}
	if d.Empty() {
		t.Fatal("diff reported empty")
	}
	srv.handle(script(map[string]string{"CONFIG_DIFF": `DIFF_OK|{"routes":{"added":[],"removed":[],"modified":[]},"headers":{"added":0,"removed":0}}`}))
	if d, err := c.ConfigDiff(ctxT(t)); err != nil || !d.Empty() {
		t.Fatalf("empty diff = %+v, %v", d, err)
	}
}

func TestCircuitAndDrainStatusDecoding(t *testing.T) {
	srv := newFakeServer(t)
	c := newTestClient(t, testConfig(srv.addr))
	t0 := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	asArray := `{"state":"open","failures":5,"last_failure":"2025-03-01T10:00:00Z","next_attempt":null,` +
		`"nodes":[{"node":"n1","state":"open","failures":5,"last_failure":"2025-03-01T10:00:00Z","next_attempt":""},{"node":"n2","state":"closed","failures":0}]}`
	asMap := `{"state":"open","failures":5,"last_failure":"2025-03-01T10:00:00Z",` +
		`"nodes":{"n2":{"state":"closed","failures":0},"n1":{"state":"open","failures":5,"last_failure":"2025-03-01T10:00:00Z"}}}`
	want := &CircuitStatus{State: "open", Failures: 5, LastFailure: t0, Nodes: []NodeCircuitStatus{
		{Node: "n1", State: "open", Failures: 5, LastFailure: t0},
		{Node: "n2", State: "closed"},
	}}
	for _, payload := range []string{asArray, asMap} {
		srv.handle(script(map[string]string{"CIRCUIT_BREAKER_STATUS": "CIRCUIT_STATUS_OK|" + payload}))
		got, err := c.CircuitBreakerStatus(ctxT(t), "r1")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("CircuitBreakerStatus(%s) = %+v\nwant %+v", payload, got, want)
		}
	}

	srv.handle(script(map[string]string{"DRAIN_STATUS": `DRAIN_STATUS_OK|{"active":true,"started_at":"2025-03-01T10:00:00Z","duration_seconds":60,"elapsed_seconds":15.5,"remaining_seconds":44.5,"traffic_percent":74.2,"in_flight":3}`}))
	ds, err := c.DrainStatus(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	wantDS := &DrainStatus{Active: true, StartedAt: t0, DurationSeconds: 60, ElapsedSeconds: 15.5, RemainingSeconds: 44.5, TrafficPercent: 74.2, InFlight: 3}
	if !reflect.DeepEqual(ds, wantDS) {
		t.Fatalf("DrainStatus = %+v", ds)
	}
	srv.handle(script(map[string]string{"DRAIN_START": "DRAIN_OK|soon"}))
	if _, err := c.DrainStart(ctxT(t), time.Minute); !errors.Is(err, ErrProtocol) {
		t.Fatalf("DrainStart with bad time = %v, want ErrProtocol", err)
	}
}

func TestEncodeJSONField(t *testing.T) {
	got, err := encodeJSONField("m", []byte("{\n  \"a\": \"x|y\",\n  \"b\": [1, 2]\n}"))
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"a":"x\u007cy","b":[1,2]}`; got != want {
		t.Fatalf("encodeJSONField = %s, want %s", got, want)
	}
	if got, err := encodeJSONField("m", nil); err != nil || got != "" {
		t.Fatalf("empty metadata = %q, %v", got, err)
	}
}

func TestTooLargeAnswerRetriedCompressed(t *testing.T) {
	srv := newFakeServer(t)
	c := newTestClient(t, testConfig(srv.addr))
	srv.handle(func(fc *fakeConn, line string, f []string) bool {
		if f[0] != "ROUTE_LIST" {
			return false
		}
		if f[len(f)-1] != "compressed" {
			fc.send("ERROR|response too large (max 65536 bytes): ask with |compressed")
			return true
		}
		fc.send("ROUTE_LIST_OK|" + compress(t, routeListJSON))
		return true
	})
	got, err := c.RouteList(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, wantRoutes) {
		t.Fatalf("RouteList = %+v", got)
	}
	s := c.SessionID()
	want := []string{"ROUTE_LIST|" + s, "ROUTE_LIST|" + s + "|compressed"}
	if got := srv.receivedWith("ROUTE_LIST"); !reflect.DeepEqual(got, want) {
		t.Fatalf("sent %q, want %q", got, want)
	}
}

func TestUnknownOutcomeHelpers(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&ServerError{Command: "ROUTE_ADD", Msg: "timeout: the cluster did not answer in time"}, true},
		{errors.Join(errors.New("ROUTE_ADD"), ErrConnectionLost), true},
		{&ServerError{Msg: "no leader: no quorum"}, false},
		{ErrUnavailable, false},
		{nil, false},
	} {
		if got := IsUnknownOutcome(tc.err); got != tc.want {
			t.Errorf("IsUnknownOutcome(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
	if !errors.Is(&ServerError{Msg: maintTimeoutMsg}, ErrMaintenanceTimeout) || errors.Is(&ServerError{Msg: "x"}, ErrMaintenanceTimeout) {
		t.Fatal("ErrMaintenanceTimeout matching is wrong")
	}
}
