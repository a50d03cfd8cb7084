package app

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/raftgate/raftgate/fsm"
)

// echoBackend answers with its name, the path it saw and the value of the
// X-Req header the proxy should add.
func echoBackend(t *testing.T, name string) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s path=%s xreq=%s", name, r.URL.Path, r.Header.Get("X-Req"))
	}))
	t.Cleanup(s.Close)
	return s
}

// jsonKeys returns the sorted top-level keys of a JSON object.
func jsonKeys(t *testing.T, payload string) []string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(payload), &m); err != nil {
		t.Fatalf("not a JSON object: %q: %v", payload, err)
	}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func wantKeys(t *testing.T, payload string, want ...string) {
	t.Helper()
	sort.Strings(want)
	if got := jsonKeys(t, payload); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("keys = %v, want %v (payload %s)", got, want, payload)
	}
}

// TestEveryCommandFromFreshConnections registers on one connection and then
// drives the session through every command, each on a fresh connection, as
// a shell client with `nc -w 1` would.
func TestEveryCommandFromFreshConnections(t *testing.T) {
	tc := startCluster(t, 1)
	addr := tc.nodes[0].ControlAddr()
	backend := echoBackend(t, "A")
	s, attached := register(t, addr, "web", "i1")
	one := func(line string) string { return once(t, addr, strings.ReplaceAll(line, "|S", "|"+s)) }

	rid := expect(t, one("ROUTE_ADD|S|Example.com,www.example.com|/api|"+backend.URL+"|10"), "ROUTE_OK|")
	if rid != "r1" {
		t.Fatalf("first route id %q", rid)
	}
	expect(t, one("CONFIG_VALIDATE|S"), "OK")
	list := expect(t, one("ROUTE_LIST|S"), "ROUTE_LIST_OK|")
	var routes []map[string]any
	if err := json.Unmarshal([]byte(list), &routes); err != nil || len(routes) != 1 {
		t.Fatalf("ROUTE_LIST payload %q: %v", list, err)
	}
	if routes[0]["status"] != "staged" || routes[0]["id"] != "r1" || routes[0]["route_id"] != "r1" {
		t.Fatalf("route before apply: %v", routes[0])
	}
	if d := routes[0]["domains"].([]any); d[0] != "example.com" {
		t.Fatalf("domains not lower-cased: %v", d)
	}
	diff := expect(t, one("CONFIG_DIFF|S"), "DIFF_OK|")
	wantKeys(t, diff, "routes", "headers", "options", "health", "ratelimit", "circuit_breaker")
	if !strings.Contains(diff, `"added":["r1"]`) {
		t.Fatalf("diff does not list r1 as added: %s", diff)
	}
	expect(t, one("HEADERS_SET|S|ALL|X-Served-By|raftgate"), "HEADERS_OK")
	expect(t, one("HEADERS_SET|S|r1|request:X-Req|hello"), "HEADERS_OK")
	expect(t, one("OPTIONS_SET|S|r1|timeout|5s"), "OPTIONS_OK")
	expect(t, one("OPTIONS_SET|S|ALL|retries|1"), "OPTIONS_OK")
	expect(t, one("OPTIONS_REMOVE|S|ALL|retries"), "OPTIONS_OK")
	expect(t, one("HEALTH_SET|S|r1|/|5s|1s"), "HEALTH_OK")
	expect(t, one("RATELIMIT_SET|S|r1|1000|1s"), "RATELIMIT_OK")
	expect(t, one("CIRCUIT_BREAKER_SET|S|r1|5|30s|1"), "CIRCUIT_OK")
	expect(t, one("CONFIG_APPLY|S"), "OK")

	// With a health check configured a new backend serves after its first
	// passing probe, which the proxy runs as soon as the route appears.
	eventually(t, 10*time.Second, "first passing health probe", func() bool {
		return statusOf(t, tc.nodes[0].HTTPAddr(), "example.com", "/api/x") == 200
	})
	resp, body := httpGet(t, tc.nodes[0].HTTPAddr(), "example.com", "/api/x")
	if resp.StatusCode != 200 || body != "A path=/api/x xreq=hello" || resp.Header.Get("X-Served-By") != "raftgate" {
		t.Fatalf("proxied answer %d %q headers %v", resp.StatusCode, body, resp.Header)
	}

	info := expect(t, one("SESSION_INFO|S"), "SESSION_OK|")
	wantKeys(t, info, "session_id", "service_name", "instance_name", "maintenance_port", "connected", "node",
		"connected_at", "uptime_seconds", "routes_active", "routes_staged", "last_apply", "last_activity", "metadata")
	if !strings.Contains(info, `"connected":true`) || !strings.Contains(info, `"routes_active":1`) {
		t.Fatalf("session info: %s", info)
	}
	cb := expect(t, one("CIRCUIT_BREAKER_STATUS|S|r1"), "CIRCUIT_STATUS_OK|")
	wantKeys(t, cb, "state", "failures", "last_failure", "next_attempt", "nodes")
	if !strings.Contains(cb, `"state":"closed"`) {
		t.Fatalf("breaker status: %s", cb)
	}
	expect(t, one("CIRCUIT_BREAKER_RESET|S|r1"), "CIRCUIT_OK")

	// Rollback of a staged removal keeps the route.
	expect(t, one("ROUTE_REMOVE|S|r1"), "ROUTE_OK")
	expect(t, one("CONFIG_ROLLBACK|S"), "OK")
	if got := statusOf(t, tc.nodes[0].HTTPAddr(), "example.com", "/api/x"); got != 200 {
		t.Fatalf("after rollback the route answers %d", got)
	}

	end := expect(t, one("DRAIN_START|S|30s"), "DRAIN_OK|")
	if _, err := time.Parse(time.RFC3339, end); err != nil {
		t.Fatalf("drain end %q: %v", end, err)
	}
	ds := expect(t, one("DRAIN_STATUS|S"), "DRAIN_STATUS_OK|")
	wantKeys(t, ds, "active", "started_at", "duration_seconds", "elapsed_seconds", "remaining_seconds", "traffic_percent", "in_flight")
	expect(t, one("DRAIN_CANCEL|S"), "DRAIN_OK")
	expect(t, one("DRAIN_STATUS|S"), "ERROR|no drain in progress")

	// MAINT_ENTER answers ACK on the connection that sent it; MAINT_OK
	// arrives on the attached connection.
	expect(t, one("MAINT_ENTER|S|ALL|"), "ACK")
	if got := attached.read(); got != "MAINT_OK|ALL" {
		t.Fatalf("attached connection got %q, want MAINT_OK|ALL", got)
	}
	ms := expect(t, one("MAINT_STATUS|S"), "MAINT_STATUS_OK|")
	wantKeys(t, ms, "in_maintenance", "maintenance_backend", "entered_at")
	if !strings.Contains(ms, `"in_maintenance":["r1"]`) {
		t.Fatalf("maint status: %s", ms)
	}
	resp, _ = httpGet(t, tc.nodes[0].HTTPAddr(), "example.com", "/api/x")
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("maintenance page: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	expect(t, one("MAINT_EXIT|S|ALL"), "ACK")
	if got := attached.read(); got != "MAINT_OK|ALL" {
		t.Fatalf("attached connection got %q after MAINT_EXIT", got)
	}
	if got := statusOf(t, tc.nodes[0].HTTPAddr(), "example.com", "/api/x"); got != 200 {
		t.Fatalf("after MAINT_EXIT the route answers %d", got)
	}

	stats := expect(t, one("STATS_GET|S|r1"), "STATS_OK|")
	wantKeys(t, stats, "route_id", "requests", "errors", "avg_latency_ms", "p95_latency_ms", "p99_latency_ms",
		"bytes_sent", "bytes_received", "status_codes", "nodes_reporting")
	var st struct {
		Requests    int            `json:"requests"`
		StatusCodes map[string]int `json:"status_codes"`
	}
	_ = json.Unmarshal([]byte(stats), &st)
	// Requests before the first passing probe answered 503 too, so count
	// from the status codes themselves.
	if st.Requests < 5 || st.StatusCodes["200"] < 4 || st.StatusCodes["503"] < 1 || st.Requests != sum(st.StatusCodes) {
		t.Fatalf("stats after 4 served requests and a maintenance page: %s", stats)
	}
	all := expect(t, one("STATS_GET|S|ALL|compressed"), "STATS_OK|")
	zr, err := gzip.NewReader(base64.NewDecoder(base64.StdEncoding, strings.NewReader(all)))
	if err != nil {
		t.Fatalf("compressed stats are not gzip+base64: %v", err)
	}
	raw, _ := io.ReadAll(zr)
	if !bytes.HasPrefix(raw, []byte(`[{"route_id":"r1"`)) {
		t.Fatalf("decompressed stats: %s", raw)
	}

	bt := expect(t, one("BACKEND_TEST|S|"+backend.URL), "BACKEND_OK|")
	if !strings.Contains(bt, `"reachable":true`) || !strings.Contains(bt, `"status_code":200`) {
		t.Fatalf("backend test: %s", bt)
	}
	bf := expect(t, one("BACKEND_TEST|S|http://127.0.0.1:1"), "BACKEND_FAIL|")
	if !strings.Contains(bf, `"reachable":false`) || !strings.Contains(bf, `"error":"connection refused"`) {
		t.Fatalf("backend test failure: %s", bf)
	}
	expect(t, one("PING|S"), "PONG")
	expect(t, one("PING"), "PONG")
	expect(t, one("SUBSCRIBE|S|config_applied"), "SUBSCRIBE_OK")
	expect(t, one("UNSUBSCRIBE|S|all"), "UNSUBSCRIBE_OK")
	cs := expect(t, one("CLUSTER_STATUS"), "CLUSTER_OK|")
	wantKeys(t, cs, "leader", "term", "nodes")

	// RECONNECT from a fresh connection moves the attachment there.
	fresh := dialCtl(t, addr)
	expect(t, fresh.send("RECONNECT|"+s), "OK")
	expect(t, fresh.send("RECONNECT|web-doesnotexist"), "REREGISTER")

	expect(t, fresh.send("CLIENT_SHUTDOWN|"+s), "SHUTDOWN_OK")
	if got := statusOf(t, tc.nodes[0].HTTPAddr(), "example.com", "/api/x"); got != 404 {
		t.Fatalf("after CLIENT_SHUTDOWN the route answers %d, want 404", got)
	}
	expect(t, one("SESSION_INFO|S"), "ERROR|session not found")
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// TestTransactionIDsAndPipelining sends several commands in one write and
// checks each answer comes back in order with its txn ID.
func TestTransactionIDsAndPipelining(t *testing.T) {
	tc := startCluster(t, 1)
	s, c := register(t, tc.nodes[0].ControlAddr(), "svc", "a")
	c.write(fmt.Sprintf("ROUTE_ADD|%[1]s|txn-1|a.com|/|http://127.0.0.1:9|0\nROUTE_REMOVE|%[1]s|txn-2|r999\nPING|%[1]s|txn-3\nCONFIG_APPLY|%[1]s|txn-4", s))
	for _, want := range []string{"ROUTE_OK|txn-1|r", "ERROR|txn-2|route not found", "PONG|txn-3", "OK|txn-4"} {
		expect(t, c.read(), want)
	}
}

// TestSessionRulesThroughTheProtocol covers isolation, takeover, replacement
// and expiry of a detached session.
func TestSessionRulesThroughTheProtocol(t *testing.T) {
	tc := startCluster(t, 1, withGrace(time.Second))
	addr, proxyAddr := tc.nodes[0].ControlAddr(), tc.nodes[0].HTTPAddr()
	backend := echoBackend(t, "A")
	a, ca := register(t, addr, "billing", "i1")
	rid := expect(t, ca.send(fmt.Sprintf("ROUTE_ADD|%s|example.com|/api|%s|0", a, backend.URL)), "ROUTE_OK|")
	expect(t, ca.send("CONFIG_APPLY|"+a), "OK")

	// Isolation: another session sees "route not found".
	b, cb := register(t, addr, "search", "i1")
	for _, cmd := range []string{"ROUTE_REMOVE|%s|" + rid, "ROUTE_UPDATE|%s|" + rid + "|priority|3", "CIRCUIT_BREAKER_STATUS|%s|" + rid, "HEADERS_SET|%s|" + rid + "|X-A|1"} {
		expect(t, cb.send(fmt.Sprintf(cmd, b)), "ERROR|route not found")
	}
	// Takeover by another service is refused, naming the route and owner.
	r2 := expect(t, cb.send(fmt.Sprintf("ROUTE_ADD|%s|example.com|/api|%s|0", b, backend.URL)), "ROUTE_OK|")
	want := fmt.Sprintf("ERROR|route %s: example.com/api is served by service billing", r2)
	expect(t, cb.send("CONFIG_VALIDATE|"+b), want)
	expect(t, cb.send("CONFIG_APPLY|"+b), want)

	// Re-REGISTER of the same service+instance replaces the old session.
	a2, _ := register(t, addr, "billing", "i1")
	expect(t, once(t, addr, "SESSION_INFO|"+a), "ERROR|session not found")
	if got := statusOf(t, proxyAddr, "example.com", "/api"); got != 404 {
		t.Fatalf("replaced session's route still answers %d", got)
	}
	_ = a2

	// A detached session expires after the grace period and its routes go.
	c, cc := register(t, addr, "cache", "i1")
	expect(t, cc.send(fmt.Sprintf("ROUTE_ADD|%s|cache.com|/|%s|0", c, backend.URL)), "ROUTE_OK|")
	expect(t, cc.send("CONFIG_APPLY|"+c), "OK")
	cc.c.Close()
	// Poll the state, not the protocol: any command naming the session
	// would count as activity and renew its lease.
	eventually(t, 15*time.Second, "detached session to expire", func() bool {
		gone := false
		tc.nodes[0].FSM.View(func(st *fsm.State) { gone = st.Sessions[c] == nil })
		return gone
	})
	expect(t, once(t, addr, "RECONNECT|"+c), "REREGISTER")
	if got := statusOf(t, proxyAddr, "cache.com", "/"); got != 404 {
		t.Fatalf("expired session's route answers %d", got)
	}
}
