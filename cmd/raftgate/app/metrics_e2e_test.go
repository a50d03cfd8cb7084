package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/raftgate/raftgate/cluster"
)

// Observing a cluster from outside: the admin /metrics endpoint, and
// event subscriptions (following a RECONNECT, and not letting a stalled
// subscriber hurt anyone else).

// scrape fetches a node's /metrics and parses it with the Prometheus text
// parser, the same one promtool uses.
func scrape(t *testing.T, n *Node) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + n.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics on %s: %v", n.cfg.NodeID, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("/metrics answered %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics of %s does not parse: %v", n.cfg.NodeID, err)
	}
	return fams
}

// metricValue finds the sample of family name whose labels include want
// and returns its value (the sample count for a histogram).
func metricValue(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("metric family %s missing", name)
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		case m.Untyped != nil:
			return m.Untyped.GetValue()
		}
	}
	t.Fatalf("no %s sample with labels %v", name, want)
	return 0
}

// TestMetricsEndpoint drives known traffic through one node (served,
// rate-limited, a breaker opened by a failing backend) and checks that
// every node's /metrics parses and carries the per-route and node-level
// families with the right values.
func TestMetricsEndpoint(t *testing.T) {
	tc := startCluster(t, 3)
	ok, bad := newSwitchBackend(t, "OK"), newSwitchBackend(t, "BAD")
	bad.traffic.Store(500)
	s, _ := register(t, tc.nodes[0].ControlAddr(), "metrics", "i1")
	addr := tc.nodes[0].ControlAddr()
	r1 := cmds(t, addr, s, "ROUTE_OK| ROUTE_ADD|S|m.test|/|"+ok.URL+"|0")
	r2 := cmds(t, addr, s, "ROUTE_OK| ROUTE_ADD|S|bad.test|/|"+bad.URL+"|0")
	cmds(t, addr, s,
		"HEALTH_OK HEALTH_SET|S|"+r1+"|/healthz|5s|1s",
		"RATELIMIT_OK RATELIMIT_SET|S|"+r1+"|5|1m",
		"CIRCUIT_OK CIRCUIT_BREAKER_SET|S|"+r2+"|1|1m|1",
		"OK CONFIG_APPLY|S")
	n1 := tc.nodes[0]
	eventually(t, 10*time.Second, "r1's first passing probe on n1", func() bool {
		h, checked := n1.Proxy.BackendHealthy(r1)
		return h && checked
	})
	tc.routeKnown(r2)

	pc := newProxyClient(t, "")
	var served, limited int
	for range 8 {
		switch r := pc.mustGet(t, n1.HTTPAddr(), "m.test", "/"); r.code {
		case 200:
			served++
		case 429:
			limited++
		default:
			t.Fatalf("m.test answered %d", r.code)
		}
	}
	if served != 5 || limited != 3 {
		t.Fatalf("served %d, limited %d; want 5 and 3", served, limited)
	}
	if r := pc.mustGet(t, n1.HTTPAddr(), "bad.test", "/"); r.code != 500 {
		t.Fatalf("bad.test answered %d", r.code)
	}

	fams := scrape(t, n1)
	route := func(id string) map[string]string { return map[string]string{"route": id} }
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"raftgate_proxy_requests_total", map[string]string{"route": r1, "code": "200"}, 5},
		{"raftgate_proxy_requests_total", map[string]string{"route": r1, "code": "429"}, 3},
		{"raftgate_proxy_requests_total", map[string]string{"route": r2, "code": "500"}, 1},
		{"raftgate_proxy_errors_total", route(r1), 0},
		{"raftgate_proxy_errors_total", route(r2), 1},
		{"raftgate_proxy_request_duration_seconds", route(r1), 8},
		{"raftgate_proxy_rate_limited_total", route(r1), 3},
		{"raftgate_proxy_backend_healthy", map[string]string{"route": r1, "backend": ok.URL}, 1},
		{"raftgate_proxy_breaker_state", route(r1), 0},
		{"raftgate_proxy_breaker_state", route(r2), 1}, // open
		{"raftgate_ratelimit_tracked_ips", nil, 1},
		{"raftgate_ratelimit_ip_cap_hits_total", nil, 0},
		{"raftgate_sessions_attached", nil, 1},
		{"raftgate_sessions_detached", nil, 0},
		{"raftgate_cluster_live_nodes", nil, 3},
	}
	for _, c := range checks {
		if got := metricValue(t, fams, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if fams["raftgate_proxy_request_duration_seconds"].GetType() != dto.MetricType_HISTOGRAM {
		t.Errorf("latency is not a histogram")
	}

	leaders, stateLeaders, forwarded := 0.0, 0.0, 0.0
	for _, n := range tc.nodes {
		f := scrape(t, n)
		stateLeaders += metricValue(t, f, "raftgate_raft_state", map[string]string{"state": "leader"})
		forwarded += metricValue(t, f, "raftgate_raft_forwarded_writes_total", nil)
		for _, name := range []string{"raftgate_raft_applied_index", "raftgate_routing_table_index", "raftgate_raft_term"} {
			if v := metricValue(t, f, name, nil); v <= 0 {
				t.Errorf("%s on %s = %v", name, n.cfg.NodeID, v)
			}
		}
		leaders += metricValue(t, f, "raftgate_raft_is_leader", nil)
		metricValue(t, f, "raftgate_raft_leader_changes_total", nil)
		metricValue(t, f, "go_goroutines", nil)
		// Every node exports the routes it serves, even without traffic.
		metricValue(t, f, "raftgate_proxy_breaker_state", route(r2))
	}
	if leaders != 1 || stateLeaders != 1 {
		t.Errorf("raftgate_raft_is_leader sums to %v and raft_state{state=leader} to %v over the cluster, want 1", leaders, stateLeaders)
	}
	// The test's writes went through every node, so followers forwarded.
	if forwarded == 0 {
		t.Error("raftgate_raft_forwarded_writes_total is 0 on every node")
	}

	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(fmt.Sprintf("http://%s%s", n1.AdminAddr(), path))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s answered %d %q", path, resp.StatusCode, body)
		}
	}
}

// TestSubscriptionFollowsReconnect: a session subscribed on n1 that
// RECONNECTs on n2 gets its subscribed events there, and only those.
func TestSubscriptionFollowsReconnect(t *testing.T) {
	tc := startCluster(t, 3)
	be := newSwitchBackend(t, "E")
	s, c1 := register(t, tc.nodes[0].ControlAddr(), "ev", "i1")
	expect(t, c1.send("SUBSCRIBE|"+s+"|config_applied"), "SUBSCRIBE_OK")
	cmds(t, tc.nodes[2].ControlAddr(), s, "ROUTE_OK| ROUTE_ADD|S|ev.test|/|"+be.URL+"|0", "OK CONFIG_APPLY|S")
	readUntil(t, c1, 10*time.Second, func(l string) bool { return strings.HasPrefix(l, "EVENT|config_applied|") })

	c2 := dialCtl(t, tc.nodes[1].ControlAddr())
	expect(t, c2.send("RECONNECT|"+s), "OK")
	// An event type the session did not subscribe to, emitted on n2 before
	// the subscribed one, must not arrive: the first event line read has
	// to be config_applied.
	tc.nodes[1].Control.EmitLocal("global_config_changed", map[string]string{"test": "not subscribed"})
	cmds(t, tc.nodes[2].ControlAddr(), s, "ROUTE_OK| ROUTE_ADD|S|ev2.test|/|"+be.URL+"|0", "OK CONFIG_APPLY|S")
	lines := readUntil(t, c2, 10*time.Second, func(l string) bool { return strings.HasPrefix(l, "EVENT|") })
	ev := lines[len(lines)-1]
	if !strings.HasPrefix(ev, "EVENT|config_applied|") || !strings.Contains(ev, `"session_id":"`+s+`"`) {
		t.Fatalf("after RECONNECT on n2 the first event was %q", ev)
	}
	expect(t, c2.send("PING|"+s), "PONG")
}

// floodSubscriber registers a session on node n subscribed to
// global_config_changed whose connection then reads nothing.
func floodSubscriber(t testing.TB, n *Node) (string, *ctl) {
	s, c := register(t, n.ControlAddr(), "slow", "reader")
	expect(t, c.send("SUBSCRIBE|"+s+"|global_config_changed"), "SUBSCRIBE_OK")
	return s, c
}

// floodPayload is large enough that a few thousand events fill the
// socket buffers of a client that does not read.
var floodPayload = map[string]string{"pad": strings.Repeat("p", 1024)}

// TestStalledSubscriberDoesNotBlockTheNode floods a subscriber that reads
// nothing: emitting never blocks, other clients' commands keep answering
// quickly, and the subscriber learns how many events it lost through
// EVENT|overflow (or is disconnected).
func TestStalledSubscriberDoesNotBlockTheNode(t *testing.T) {
	tc := startCluster(t, 1)
	n := tc.nodes[0]
	_, slow := floodSubscriber(t, n)
	other, oc := register(t, n.ControlAddr(), "other", "i1")

	const events = 20000
	start := time.Now()
	for i := range events {
		n.Control.EmitLocal("global_config_changed", map[string]any{"seq": i, "pad": floodPayload["pad"]})
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("emitting %d events to a stalled subscriber took %v: the emitter blocked", events, took)
	}
	var worst time.Duration
	for range 50 {
		t0 := time.Now()
		expect(t, oc.send("PING|"+other), "PONG")
		worst = max(worst, time.Since(t0))
	}
	expect(t, once(t, n.ControlAddr(), "SESSION_INFO|"+other), "SESSION_OK|")
	if worst > time.Second {
		t.Fatalf("another client's PING took %v while a subscriber was stalled", worst)
	}

	// Now the subscriber reads: whatever was queued, then one overflow
	// line accounting for every event it lost.
	delivered, dropped := 0, 0
	deadline := time.Now().Add(15 * time.Second)
	for {
		_ = slow.c.SetReadDeadline(deadline)
		line, err := slow.rd.ReadString('\n')
		if err != nil {
			// Disconnecting a subscriber that stopped reading is the other
			// acceptable outcome; it must then have lost events.
			if delivered >= events {
				t.Fatalf("connection ended (%v) after every event was delivered", err)
			}
			t.Logf("stalled subscriber disconnected after %d events: %v", delivered, err)
			return
		}
		switch {
		case strings.HasPrefix(line, "EVENT|global_config_changed|"):
			delivered++
		case strings.HasPrefix(line, "EVENT|overflow|"):
			var o struct {
				Dropped int `json:"dropped"`
			}
			if err := json.Unmarshal([]byte(strings.TrimPrefix(strings.TrimSpace(line), "EVENT|overflow|")), &o); err != nil || o.Dropped <= 0 {
				t.Fatalf("overflow line %q", line)
			}
			dropped += o.Dropped
		default:
			t.Fatalf("unexpected line %q", line)
		}
		if delivered+dropped == events {
			break
		}
		if delivered+dropped > events {
			t.Fatalf("delivered %d + dropped %d > %d emitted", delivered, dropped, events)
		}
	}
	if dropped == 0 {
		t.Fatalf("all %d events were queued for a stalled reader: the queue is not bounded", events)
	}
	t.Logf("stalled subscriber: %d delivered, %d reported dropped", delivered, dropped)
}

// startBenchNode starts a single-node cluster for a benchmark.
func startBenchNode(b *testing.B) *Node {
	b.Helper()
	n, err := Start(context.Background(), Config{
		NodeID: "n1", DataDir: b.TempDir(), BootstrapExpect: 1,
		ControlAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0",
		GossipAddr: "127.0.0.1:0", RPCAddr: "127.0.0.1:0",
		Timing: cluster.TestTiming(), Logger: testLogger(b),
	})
	if err != nil {
		b.Fatalf("start node: %v", err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
	})
	eventually(b, 20*time.Second, "a leader", func() bool { return n.Cluster.LeaderID() != "" })
	return n
}

// BenchmarkSlowSubscriber measures another client's command round trip
// (PING over its attached connection) on a node with no subscriber
// ("idle"), on a node emitting events as fast as one goroutine can (up to
// 100 per millisecond) to a subscriber that reads them ("reading"), and
// to one that reads nothing ("stalled"). stalled should cost no more than
// reading: a subscriber that stopped reading costs its own bounded queue,
// not the node's or other clients' time.
//
//	go test -run '^$' -bench BenchmarkSlowSubscriber -benchtime 20000x -count 3 ./cmd/raftgate/app
func BenchmarkSlowSubscriber(b *testing.B) {
	for _, mode := range []string{"idle", "reading", "stalled"} {
		b.Run(mode, func(b *testing.B) {
			n := startBenchNode(b)
			s, c := register(b, n.ControlAddr(), "bench", "i1")
			var emitted atomic.Int64
			ctx, stop := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			if mode != "idle" {
				_, sub := floodSubscriber(b, n)
				if mode == "reading" {
					wg.Go(func() { _, _ = io.Copy(io.Discard, sub.c) })
				}
				wg.Go(func() {
					tick := time.NewTicker(time.Millisecond)
					defer tick.Stop()
					for {
						select {
						case <-ctx.Done():
							return
						case <-tick.C:
						}
						for range 100 {
							n.Control.EmitLocal("global_config_changed", floodPayload)
						}
						emitted.Add(100)
					}
				})
				defer sub.c.Close() // ends the reader
			}
			ping := "PING|" + s
			start := time.Now()
			for b.Loop() {
				if r := c.send(ping); r != "PONG" {
					b.Fatalf("PING answered %q", r)
				}
			}
			elapsed := time.Since(start)
			stop()
			b.ReportMetric(float64(emitted.Load())/elapsed.Seconds(), "events/s")
			b.Cleanup(wg.Wait)
		})
	}
}
