package app

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

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

	leaders := 0.0
	for _, n := range tc.nodes {
		f := scrape(t, n)
		for _, name := range []string{"raftgate_raft_applied_index", "raftgate_routing_table_index"} {
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
	if leaders != 1 {
		t.Errorf("raftgate_raft_is_leader sums to %v over the cluster, want 1", leaders)
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
