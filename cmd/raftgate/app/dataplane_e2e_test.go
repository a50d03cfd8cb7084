package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/bits"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The data-plane tests of issue 4: every setting goes in through the real
// control protocol of a real 3-node cluster and is observed through the
// real proxies in front of real httptest backends.

// switchBackend is a backend whose health path and traffic answers the
// test switches at run time. Traffic answers "<name> <path>".
type switchBackend struct {
	*httptest.Server
	name    string
	health  atomic.Int32 // status of GET /healthz; 0 means 200
	traffic atomic.Int32 // status of every other path; 0 means 200
	hits    atomic.Int64 // traffic requests (health probes excluded)
}

func newSwitchBackend(t *testing.T, name string) *switchBackend {
	t.Helper()
	b := &switchBackend{name: name}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code := b.traffic.Load()
		if r.URL.Path == "/healthz" {
			code = b.health.Load()
		} else {
			b.hits.Add(1)
		}
		if code != 0 {
			w.WriteHeader(int(code))
		}
		fmt.Fprintf(w, "%s %s", name, r.URL.Path)
	}))
	t.Cleanup(b.Close)
	return b
}

// proxyClient is a keep-alive HTTP client for the nodes' proxies,
// optionally dialling from a chosen loopback source address. Its methods
// return errors instead of failing, so load goroutines can use them.
type proxyClient struct {
	tr *http.Transport
	c  *http.Client
}

func newProxyClient(t testing.TB, sourceIP string) *proxyClient {
	d := &net.Dialer{Timeout: 5 * time.Second}
	if sourceIP != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(sourceIP)}
	}
	tr := &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 8, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &proxyClient{tr: tr, c: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

type proxyReply struct {
	code int
	body string
	hdr  http.Header
	took time.Duration
}

func (pc *proxyClient) get(proxyAddr, host, path string) (proxyReply, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+proxyAddr+path, nil)
	if err != nil {
		return proxyReply{}, err
	}
	req.Host = host
	start := time.Now()
	resp, err := pc.c.Do(req)
	if err != nil {
		return proxyReply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return proxyReply{}, fmt.Errorf("read body: %w", err)
	}
	return proxyReply{code: resp.StatusCode, body: string(b), hdr: resp.Header, took: time.Since(start)}, nil
}

// mustGet is get for the test goroutine.
func (pc *proxyClient) mustGet(t testing.TB, proxyAddr, host, path string) proxyReply {
	t.Helper()
	r, err := pc.get(proxyAddr, host, path)
	if err != nil {
		t.Fatalf("GET %s%s via %s: %v", host, path, proxyAddr, err)
	}
	return r
}

// cmds sends each "WANT COMMAND|S|..." on a fresh connection, with the
// field S replaced by the session, and checks that the answer starts with
// WANT; it returns the rest of the last answer.
func cmds(t *testing.T, addr, s string, lines ...string) string {
	t.Helper()
	var last string
	for _, l := range lines {
		want, line, _ := strings.Cut(l, " ")
		fields := strings.Split(line, "|")
		for i, f := range fields {
			if f == "S" {
				fields[i] = s
			}
		}
		last = expect(t, once(t, addr, strings.Join(fields, "|")), want)
	}
	return last
}

// routeKnown waits until every node's proxy serves a table holding rid.
// It looks at the proxy directly, so no request is spent (and counted).
func (tc *testCluster) routeKnown(rid string) {
	tc.t.Helper()
	for i, n := range tc.nodes {
		eventually(tc.t, 10*time.Second, fmt.Sprintf("node %d to serve %s", i+1, rid), func() bool {
			known, _ := n.Proxy.BackendHealthy(rid)
			return known
		})
	}
}

// readUntil reads lines from c until pick returns true or the deadline
// passes; it returns the lines read.
func readUntil(t *testing.T, c *ctl, limit time.Duration, pick func(line string) bool) []string {
	t.Helper()
	deadline := time.Now().Add(limit)
	var lines []string
	for {
		_ = c.c.SetReadDeadline(deadline)
		s, err := c.rd.ReadString('\n')
		if err != nil {
			t.Fatalf("reading events (got %q): %v", lines, err)
		}
		s = strings.TrimSuffix(s, "\n")
		lines = append(lines, s)
		if pick(s) {
			return lines
		}
	}
}

type healthEvent struct {
	RouteID string `json:"route_id"`
	Backend string `json:"backend"`
	Healthy bool   `json:"healthy"`
	Reason  string `json:"reason"`
	Node    string `json:"node"`
}

// healthEventsFromAll reads backend_health_changed events on c until one
// with the wanted verdict has come from every node.
func healthEventsFromAll(t *testing.T, c *ctl, rid string, healthy bool, nodes ...string) map[string]healthEvent {
	t.Helper()
	got := map[string]healthEvent{}
	readUntil(t, c, 10*time.Second, func(line string) bool {
		payload, ok := strings.CutPrefix(line, "EVENT|backend_health_changed|")
		if !ok {
			return false
		}
		var ev healthEvent
		if err := json.Unmarshal([]byte(payload), &ev); err != nil {
			t.Fatalf("event payload %q: %v", payload, err)
		}
		if ev.RouteID == rid && ev.Healthy == healthy {
			got[ev.Node] = ev
		}
		return len(got) == len(nodes)
	})
	for _, n := range nodes {
		if _, ok := got[n]; !ok {
			t.Fatalf("no backend_health_changed healthy=%v from %s: %v", healthy, n, got)
		}
	}
	return got
}

// TestHealthCheckEjectsAndRestoresBackend: two sessions of one service
// serve one domain+path; one backend's health path starts failing. Every
// node takes it out of rotation within interval×3+timeout while the load
// on all three proxies never sees a failed request, brings it back when it
// recovers, and the owner's subscriber, attached on n1, receives the flip
// from each node's checker (n2 and n3 forwarded over the cluster RPC).
func TestHealthCheckEjectsAndRestoresBackend(t *testing.T) {
	tc := startCluster(t, 3)
	a, b := newSwitchBackend(t, "A"), newSwitchBackend(t, "B")
	const interval, timeout = time.Second, 500 * time.Millisecond
	sa, ca := register(t, tc.nodes[0].ControlAddr(), "web", "a")
	sb, _ := register(t, tc.nodes[1].ControlAddr(), "web", "b")
	expect(t, ca.send("SUBSCRIBE|"+sa+"|backend_health_changed"), "SUBSCRIBE_OK")
	var rids []string
	for _, x := range []struct {
		s  string
		be *switchBackend
	}{{sa, a}, {sb, b}} {
		rid := cmds(t, tc.nodes[2].ControlAddr(), x.s, "ROUTE_OK| ROUTE_ADD|S|health.test|/|"+x.be.URL+"|0")
		cmds(t, tc.nodes[2].ControlAddr(), x.s,
			"HEALTH_OK HEALTH_SET|S|"+rid+"|/healthz|1s|500ms",
			"OK CONFIG_APPLY|S")
		rids = append(rids, rid)
	}
	ra, rb := rids[0], rids[1]
	healthyOn := func(n *Node, rid string) bool { h, checked := n.Proxy.BackendHealthy(rid); return h && checked }
	for i, n := range tc.nodes {
		eventually(t, 5*time.Second, fmt.Sprintf("node %d to admit both backends", i+1), func() bool {
			return healthyOn(n, ra) && healthyOn(n, rb)
		})
	}

	// Load on all three proxies for the whole test: not one request may fail.
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var sent, failed atomic.Int64
	var firstFailure atomic.Value
	for _, n := range tc.nodes {
		wg.Go(func() {
			pc := newProxyClient(t, "")
			for ctx.Err() == nil {
				r, err := pc.get(n.HTTPAddr(), "health.test", "/load")
				sent.Add(1)
				if err != nil || r.code != 200 {
					failed.Add(1)
					firstFailure.CompareAndSwap(nil, fmt.Sprintf("%s: %d %v", n.cfg.NodeID, r.code, err))
				}
				select {
				case <-ctx.Done():
				case <-time.After(5 * time.Millisecond):
				}
			}
		})
	}
	defer func() { stop(); wg.Wait() }()
	// servedBy sends k requests to every node and counts answers per backend.
	pc := newProxyClient(t, "")
	servedBy := func(k int) map[string]int {
		c := map[string]int{}
		for _, n := range tc.nodes {
			for range k {
				r := pc.mustGet(t, n.HTTPAddr(), "health.test", "/x")
				if r.code != 200 {
					t.Fatalf("%s answered %d %q", n.cfg.NodeID, r.code, r.body)
				}
				c[strings.Fields(r.body)[0]]++
			}
		}
		return c
	}
	if c := servedBy(6); c["A"] == 0 || c["B"] == 0 {
		t.Fatalf("both backends should serve: %v", c)
	}

	// A's health path fails; its traffic path still answers, so any failed
	// request would be the proxy's fault.
	a.health.Store(http.StatusServiceUnavailable)
	failedAt := time.Now()
	bound := 3*interval + timeout
	// Polling and scheduling on two shared cores under -race add a little.
	const slack = 750 * time.Millisecond
	for i, n := range tc.nodes {
		eventually(t, bound+5*time.Second, fmt.Sprintf("node %d to eject A", i+1), func() bool { return !healthyOn(n, ra) })
		if took := time.Since(failedAt); took > bound+slack {
			t.Errorf("node %d ejected A after %v, want within interval×3+timeout = %v (+%v slack)", i+1, took, bound, slack)
		}
	}
	if c := servedBy(6); c["A"] != 0 || c["B"] != 18 {
		t.Fatalf("after ejection only B may serve: %v", c)
	}
	down := healthEventsFromAll(t, ca, ra, false, "n1", "n2", "n3")
	if ev := down["n2"]; ev.Backend != a.URL || ev.Reason != "status 503" {
		t.Errorf("event from n2: %+v", ev)
	}

	// Recovery: healthy_threshold (2) passes bring A back everywhere.
	a.health.Store(0)
	recoveredAt := time.Now()
	for i, n := range tc.nodes {
		eventually(t, 2*interval+timeout+5*time.Second, fmt.Sprintf("node %d to restore A", i+1), func() bool { return healthyOn(n, ra) })
	}
	if took := time.Since(recoveredAt); took > 2*interval+timeout+slack {
		t.Errorf("A came back after %v, want within interval×2+timeout", took)
	}
	healthEventsFromAll(t, ca, ra, true, "n1", "n2", "n3")
	stop()
	wg.Wait()
	if f := failed.Load(); f != 0 || sent.Load() < 100 {
		t.Fatalf("%d of %d load requests failed (first: %v)", f, sent.Load(), firstFailure.Load())
	}
	// With the load stopped, round robin alternates strictly again.
	for _, n := range tc.nodes {
		c := map[string]int{}
		for range 4 {
			c[strings.Fields(pc.mustGet(t, n.HTTPAddr(), "health.test", "/x").body)[0]]++
		}
		if c["A"] != 2 || c["B"] != 2 {
			t.Fatalf("%s after recovery: %v", n.cfg.NodeID, c)
		}
	}
}

type breakerNodeJSON struct {
	Node     string `json:"node"`
	State    string `json:"state"`
	Failures int    `json:"failures"`
}

type breakerJSON struct {
	State       string            `json:"state"`
	Failures    int               `json:"failures"`
	LastFailure *string           `json:"last_failure"`
	NextAttempt *string           `json:"next_attempt"`
	Nodes       []breakerNodeJSON `json:"nodes"`
}

func breakerStatus(t *testing.T, addr, s, rid string) breakerJSON {
	t.Helper()
	payload := expect(t, once(t, addr, "CIRCUIT_BREAKER_STATUS|"+s+"|"+rid), "CIRCUIT_STATUS_OK|")
	var b breakerJSON
	if err := json.Unmarshal([]byte(payload), &b); err != nil {
		t.Fatalf("breaker status %q: %v", payload, err)
	}
	return b
}

// nodeStates renders the per-node states as "n1=open,n2=closed,...".
func (b breakerJSON) nodeStates() string {
	var parts []string
	for _, n := range b.Nodes {
		parts = append(parts, n.Node+"="+n.State)
	}
	return strings.Join(parts, ",")
}

// TestCircuitBreakerThroughTheCluster: threshold 500s open the breaker of
// the node that saw them (503 at once, backend untouched), it half-opens
// after the timeout, closes after the trial requests succeed, STATUS shows
// every node's state with the worst on top, and RESET on one node closes
// the breakers of all nodes.
func TestCircuitBreakerThroughTheCluster(t *testing.T) {
	tc := startCluster(t, 3)
	x, y := newSwitchBackend(t, "X"), newSwitchBackend(t, "Y")
	s, _ := register(t, tc.nodes[0].ControlAddr(), "api", "i1")
	addr := tc.nodes[0].ControlAddr()
	r1 := cmds(t, addr, s, "ROUTE_OK| ROUTE_ADD|S|cb.test|/|"+x.URL+"|0")
	r2 := cmds(t, addr, s, "ROUTE_OK| ROUTE_ADD|S|reset.test|/|"+y.URL+"|0")
	const breakerTimeout = time.Second
	cmds(t, addr, s,
		"CIRCUIT_OK CIRCUIT_BREAKER_SET|S|"+r1+"|3|1s|2",
		"CIRCUIT_OK CIRCUIT_BREAKER_SET|S|"+r2+"|3|60s|1",
		"OK CONFIG_APPLY|S")
	tc.routeKnown(r1)
	tc.routeKnown(r2)
	n1 := tc.nodes[0].HTTPAddr()
	pc := newProxyClient(t, "")

	x.traffic.Store(500)
	var lastFailSent time.Time
	for i := range 3 {
		lastFailSent = time.Now()
		if r := pc.mustGet(t, n1, "cb.test", "/"); r.code != 500 {
			t.Fatalf("failure %d answered %d, want the backend's 500", i+1, r.code)
		}
	}
	hits := x.hits.Load()
	r := pc.mustGet(t, n1, "cb.test", "/")
	if r.code != 503 || r.hdr.Get("Retry-After") == "" {
		t.Fatalf("open breaker answered %d Retry-After %q", r.code, r.hdr.Get("Retry-After"))
	}
	if x.hits.Load() != hits {
		t.Fatal("an open breaker must not reach the backend")
	}
	if r.took > time.Second {
		t.Errorf("open breaker took %v to answer", r.took)
	}
	st := breakerStatus(t, tc.nodes[1].ControlAddr(), s, r1)
	if st.State != "open" || st.Failures != 3 || st.NextAttempt == nil || st.nodeStates() != "n1=open,n2=closed,n3=closed" {
		t.Fatalf("status after opening on n1: %+v", st)
	}

	// The backend recovers; requests keep getting 503 until the timeout,
	// then the first trial goes through and the breaker is half-open.
	x.traffic.Store(0)
	var firstOK time.Time
	eventually(t, breakerTimeout+5*time.Second, "a trial request after the open timeout", func() bool {
		r := pc.mustGet(t, n1, "cb.test", "/")
		if r.code == 200 {
			firstOK = time.Now()
			return true
		}
		if r.code != 503 {
			t.Fatalf("while open: %d", r.code)
		}
		return false
	})
	if early := lastFailSent.Add(breakerTimeout); firstOK.Before(early) {
		t.Fatalf("breaker admitted a trial %v before its timeout ended", early.Sub(firstOK))
	}
	if st := breakerStatus(t, addr, s, r1); st.State != "half_open" || st.nodeStates() != "n1=half_open,n2=closed,n3=closed" {
		t.Fatalf("after one of two trials: %+v", st)
	}
	if r := pc.mustGet(t, n1, "cb.test", "/"); r.code != 200 {
		t.Fatalf("second trial: %d", r.code)
	}
	if st := breakerStatus(t, addr, s, r1); st.State != "closed" || st.nodeStates() != "n1=closed,n2=closed,n3=closed" {
		t.Fatalf("after the trials succeeded: %+v", st)
	}

	// Open r2's breaker on every node (60 s timeout), then reset it
	// through one node: the log carries the reset to all of them.
	y.traffic.Store(500)
	for _, n := range tc.nodes {
		for range 3 {
			pc.mustGet(t, n.HTTPAddr(), "reset.test", "/")
		}
		if r := pc.mustGet(t, n.HTTPAddr(), "reset.test", "/"); r.code != 503 {
			t.Fatalf("%s: breaker should be open, got %d", n.cfg.NodeID, r.code)
		}
	}
	if st := breakerStatus(t, addr, s, r2); st.nodeStates() != "n1=open,n2=open,n3=open" {
		t.Fatalf("r2 before reset: %+v", st)
	}
	y.traffic.Store(0)
	expect(t, once(t, tc.nodes[1].ControlAddr(), "CIRCUIT_BREAKER_RESET|"+s+"|"+r2), "CIRCUIT_OK")
	if r := pc.mustGet(t, tc.nodes[1].HTTPAddr(), "reset.test", "/"); r.code != 200 {
		t.Fatalf("n2 answered %d right after its CIRCUIT_OK", r.code)
	}
	eventually(t, 5*time.Second, "every node's breaker to close", func() bool {
		return breakerStatus(t, addr, s, r2).nodeStates() == "n1=closed,n2=closed,n3=closed"
	})
	for _, n := range tc.nodes {
		if r := pc.mustGet(t, n.HTTPAddr(), "reset.test", "/"); r.code != 200 {
			t.Fatalf("%s after reset: %d", n.cfg.NodeID, r.code)
		}
	}
}

func withRateLimitScope(scope string) clusterOption {
	return func(c *Config) { c.RateLimitScope = scope }
}

// TestRateLimitPerClientIP: RATELIMIT_SET 10/1s. The 11th request from one
// IP within the second gets 429 with Retry-After; another IP is unaffected.
func TestRateLimitPerClientIP(t *testing.T) {
	tc := startCluster(t, 3)
	be := newSwitchBackend(t, "R")
	s, _ := register(t, tc.nodes[0].ControlAddr(), "rl", "i1")
	addr := tc.nodes[0].ControlAddr()
	rid := cmds(t, addr, s, "ROUTE_OK| ROUTE_ADD|S|rl.test|/|"+be.URL+"|0")
	cmds(t, addr, s, "RATELIMIT_OK RATELIMIT_SET|S|"+rid+"|10|1s", "OK CONFIG_APPLY|S")
	tc.routeKnown(rid)

	for i, n := range tc.nodes {
		// Per node: each node enforces the whole limit by default.
		one, two := newProxyClient(t, "127.0.0.1"), newProxyClient(t, "127.0.0.2")
		var codes []int
		start := time.Now()
		var last proxyReply
		for range 11 {
			last = one.mustGet(t, n.HTTPAddr(), "rl.test", "/")
			codes = append(codes, last.code)
		}
		took := time.Since(start)
		// One token comes back every 100 ms; within that the 11th must fail.
		if took < 100*time.Millisecond {
			if want := append(slices.Repeat([]int{200}, 10), 429); !slices.Equal(codes, want) {
				t.Fatalf("node %d, one IP: %v, want ten 200s then 429", i+1, codes)
			}
		} else if ok := strings.Count(fmt.Sprint(codes), "200"); ok > 10+int(took/(100*time.Millisecond))+1 {
			t.Fatalf("node %d, one IP in %v: %d allowed", i+1, took, ok)
		}
		if last.code == 429 {
			if ra, err := strconv.Atoi(last.hdr.Get("Retry-After")); err != nil || ra < 1 {
				t.Fatalf("429 Retry-After %q", last.hdr.Get("Retry-After"))
			}
		}
		for j := range 10 {
			if r := two.mustGet(t, n.HTTPAddr(), "rl.test", "/"); r.code != 200 {
				t.Fatalf("node %d: request %d from the second IP answered %d", i+1, j+1, r.code)
			}
		}
	}
}

// TestRateLimitClusterScope: with --ratelimit-scope=cluster each of the 3
// live nodes enforces a third, so one client spreading its traffic evenly
// over the nodes gets the configured total (burst + rate × time) ±20%.
func TestRateLimitClusterScope(t *testing.T) {
	tc := startCluster(t, 3, withRateLimitScope("cluster"))
	be := newSwitchBackend(t, "R")
	s, _ := register(t, tc.nodes[0].ControlAddr(), "rl", "i1")
	addr := tc.nodes[0].ControlAddr()
	rid := cmds(t, addr, s, "ROUTE_OK| ROUTE_ADD|S|rl.test|/|"+be.URL+"|0")
	const limit, window = 30, time.Second
	cmds(t, addr, s, fmt.Sprintf("RATELIMIT_OK RATELIMIT_SET|S|%s|%d|1s", rid, limit), "OK CONFIG_APPLY|S")
	tc.routeKnown(rid)
	for i, n := range tc.nodes {
		eventually(t, 10*time.Second, fmt.Sprintf("node %d to see 3 live nodes", i+1), func() bool { return n.Cluster.LiveNodes() == 3 })
	}

	const run = 2 * time.Second
	var wg sync.WaitGroup
	var allowed, refused atomic.Int64
	spans := make([]time.Duration, len(tc.nodes))
	errs := make(chan error, len(tc.nodes))
	for i, n := range tc.nodes {
		wg.Go(func() {
			pc := newProxyClient(t, "127.0.0.1")
			start := time.Now()
			var last time.Time
			for time.Since(start) < run {
				r, err := pc.get(n.HTTPAddr(), "rl.test", "/")
				if err != nil {
					errs <- err
					return
				}
				last = time.Now()
				switch r.code {
				case 200:
					allowed.Add(1)
				case 429:
					refused.Add(1)
				default:
					errs <- fmt.Errorf("%s answered %d", n.cfg.NodeID, r.code)
					return
				}
				time.Sleep(4 * time.Millisecond) // pacing the load, not waiting for state
			}
			spans[i] = last.Sub(start)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Each node's bucket starts full (limit/3) and refills at limit/3 per
	// window for the time its client kept sending.
	var want float64
	for _, d := range spans {
		want += float64(limit)/3 + float64(limit)/3*float64(d)/float64(window)
	}
	got := float64(allowed.Load())
	t.Logf("cluster scope: %v allowed, %v refused, configured total over the run %.1f", got, refused.Load(), want)
	if refused.Load() == 0 || got < 0.8*want || got > 1.2*want {
		t.Fatalf("allowed %v, want %.1f ±20%% (refused %d)", got, want, refused.Load())
	}
}

// delayBackend sleeps ?ms= milliseconds and answers ?code= with a body of
// statsBody bytes.
const statsBody = 100

func newDelayBackend(t *testing.T) *httptest.Server {
	t.Helper()
	body := strings.Repeat("s", statsBody)
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		code, _ := strconv.Atoi(r.URL.Query().Get("code"))
		time.Sleep(time.Duration(ms) * time.Millisecond) // the controlled latency under test
		w.WriteHeader(max(code, 200))
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(s.Close)
	return s
}

// histBucketWidth is the width in ms of the proxy's latency histogram
// bucket holding v ms (8 log-linear sub-buckets per power of two of µs).
func histBucketWidth(v float64) float64 {
	us := uint64(v * 1000)
	if us < 8 {
		return 0.001
	}
	return float64(uint64(1)<<(bits.Len64(us)-1-3)) / 1000
}

// nearestRank is the q-quantile of sorted values.
func nearestRank(sorted []float64, q float64) float64 {
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// TestStatsAcrossTheCluster sends a known mix of requests to three nodes,
// all the slow ones through n1, and checks STATS_GET sums every node's
// counts exactly and merges the histograms (averaging per-node percentiles
// would put p95 far below the slow group).
func TestStatsAcrossTheCluster(t *testing.T) {
	tc := startCluster(t, 3)
	be := newDelayBackend(t)
	s, _ := register(t, tc.nodes[0].ControlAddr(), "stats", "i1")
	addr := tc.nodes[0].ControlAddr()
	rid := cmds(t, addr, s, "ROUTE_OK| ROUTE_ADD|S|stats.test|/|"+be.URL+"|0")
	cmds(t, addr, s, "OK CONFIG_APPLY|S")
	tc.routeKnown(rid)

	type batch struct{ n, ms, code int }
	plan := [][]batch{
		{{20, 10, 200}, {10, 60, 200}}, // n1: every slow request
		{{25, 10, 200}, {5, 10, 404}},  // n2
		{{27, 10, 200}, {3, 10, 500}},  // n3
	}
	var mu sync.Mutex
	var clientMs, backendMs []float64
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for i, n := range tc.nodes {
		wg.Go(func() {
			pc := newProxyClient(t, "")
			for _, b := range plan[i] {
				for range b.n {
					r, err := pc.get(n.HTTPAddr(), "stats.test", fmt.Sprintf("/?ms=%d&code=%d", b.ms, b.code))
					if err == nil && (r.code != b.code || len(r.body) != statsBody) {
						err = fmt.Errorf("%s: %d with %d bytes, want %d", n.cfg.NodeID, r.code, len(r.body), b.code)
					}
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					clientMs = append(clientMs, float64(r.took)/1e6)
					backendMs = append(backendMs, float64(b.ms))
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	payload := expect(t, once(t, tc.nodes[1].ControlAddr(), "STATS_GET|"+s+"|"+rid), "STATS_OK|")
	var st struct {
		Requests       int64            `json:"requests"`
		Errors         int64            `json:"errors"`
		Avg            float64          `json:"avg_latency_ms"`
		P95            float64          `json:"p95_latency_ms"`
		P99            float64          `json:"p99_latency_ms"`
		BytesSent      int64            `json:"bytes_sent"`
		StatusCodes    map[string]int64 `json:"status_codes"`
		NodesReporting int              `json:"nodes_reporting"`
	}
	if err := json.Unmarshal([]byte(payload), &st); err != nil {
		t.Fatalf("STATS_OK payload %q: %v", payload, err)
	}
	t.Logf("STATS_GET: %s", payload)
	wantCodes := map[string]int64{"200": 82, "404": 5, "500": 3}
	if st.Requests != 90 || st.Errors != 3 || st.NodesReporting != 3 || st.BytesSent != 90*statsBody || fmt.Sprint(st.StatusCodes) != fmt.Sprint(wantCodes) {
		t.Fatalf("counts: requests %d (want 90), errors %d (3), nodes_reporting %d (3), bytes_sent %d (%d), codes %v (%v)",
			st.Requests, st.Errors, st.NodesReporting, st.BytesSent, 90*statsBody, st.StatusCodes, wantCodes)
	}
	// The proxy's latency of a request lies between the backend's delay
	// and what the client measured; the reported quantile may be off by
	// one histogram bucket on either side of that range.
	slices.Sort(clientMs)
	slices.Sort(backendMs)
	for _, q := range []struct {
		name string
		q    float64
		got  float64
	}{{"p95", 0.95, st.P95}, {"p99", 0.99, st.P99}} {
		lo, hi := nearestRank(backendMs, q.q), nearestRank(clientMs, q.q)
		if q.got < lo-histBucketWidth(lo) || q.got > hi+histBucketWidth(hi) {
			t.Errorf("%s = %.3f ms, true value in [%.3f, %.3f] ms ± one bucket", q.name, q.got, lo, hi)
		}
	}
	mean := func(v []float64) float64 {
		var s float64
		for _, x := range v {
			s += x
		}
		return s / float64(len(v))
	}
	if lo, hi := mean(backendMs), mean(clientMs); st.Avg < lo-0.01 || st.Avg > hi+0.01 {
		t.Errorf("avg = %.3f ms, want within [%.3f, %.3f]", st.Avg, lo, hi)
	}
}
