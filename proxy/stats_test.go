package proxy

import (
	"context"
	"encoding/json"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/raftgate/raftgate/fsm"
)

func TestHistogramBuckets(t *testing.T) {
	for _, us := range []uint64{0, 1, 7, 8, 9, 15, 16, 17, 1000, 123456, 1 << 30} {
		i := histIndex(us)
		lo, hi := histBounds(i)
		if float64(us) < lo || float64(us) >= hi {
			t.Errorf("%d µs in bucket %d [%v,%v)", us, i, lo, hi)
		}
		if us >= 8 && (hi-lo)/lo > 0.126 {
			t.Errorf("bucket %d too wide: [%v,%v)", i, lo, hi)
		}
	}
	if i := histIndex(math.MaxUint64); i != histNumBuckets-1 {
		t.Errorf("huge value in bucket %d", i)
	}
}

// TestHistogramMergedPercentiles splits samples over three "nodes", merges
// them through JSON and checks the quantiles against the exact ones.
func TestHistogramMergedPercentiles(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var nodes [3]liveHistogram
	var all []float64
	for i := range 30000 {
		d := time.Duration(rng.ExpFloat64()*20*float64(time.Millisecond)) + 200*time.Microsecond
		nodes[i%3].observe(d)
		all = append(all, float64(d.Microseconds())/1000)
	}
	var merged Histogram
	for i := range nodes {
		raw, err := json.Marshal(nodes[i].snapshot())
		if err != nil {
			t.Fatal(err)
		}
		var h Histogram
		if err := json.Unmarshal(raw, &h); err != nil {
			t.Fatal(err)
		}
		merged.Merge(h)
	}
	sort.Float64s(all)
	if merged.Count() != 30000 {
		t.Fatalf("count %d", merged.Count())
	}
	for _, q := range []float64{0.5, 0.95, 0.99} {
		exact := all[int(q*float64(len(all)))-1]
		got := merged.Quantile(q)
		lo, hi := histBounds(histIndex(uint64(exact * 1000)))
		width := (hi - lo) / 1000
		if math.Abs(got-exact) > width {
			t.Errorf("p%v = %.3f ms, exact %.3f ms (bucket width %.3f)", q*100, got, exact, width)
		}
	}
	var sum float64
	for _, v := range all {
		sum += v
	}
	if mean := sum / float64(len(all)); math.Abs(merged.Mean()-mean) > 0.01 {
		t.Errorf("mean %.3f, exact %.3f", merged.Mean(), mean)
	}
}

func TestRouteStatsCountsAndMerge(t *testing.T) {
	be := newBackend(t, "a")
	f := newFront(t, Config{}, newTable(1).add(route{id: "r1", domains: []string{"s.test"}, backend: be.URL}).build())
	for range 5 {
		f.get(t, "s.test", "/x")
	}
	be.fail.Store(503)
	for range 2 {
		f.get(t, "s.test", "/x")
	}
	f.do(t, "POST", "s.test", "/x", nil, strings.NewReader("12345"))
	st := f.p.RouteStats("r1")
	if st.Requests != 8 || st.Errors != 3 || st.StatusCodes[200] != 5 || st.StatusCodes[503] != 3 {
		t.Fatalf("stats: %+v", st)
	}
	if st.BytesReceived != 5 || st.BytesSent != 5*int64(len("a /x"))+3*int64(len("failing\n")) {
		t.Errorf("bytes: sent %d received %d", st.BytesSent, st.BytesReceived)
	}
	if st.Latency.Count() != 8 || st.Latency.Quantile(0.99) <= 0 {
		t.Errorf("latency: %+v", st.Latency)
	}
	raw, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var back RouteStats
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	m := MergeRouteStats(back, st, RouteStats{RouteID: "r1"})
	if m.RouteID != "r1" || m.Requests != 16 || m.StatusCodes[503] != 6 || m.Latency.Count() != 16 {
		t.Fatalf("merged: %+v", m)
	}
	if none := f.p.RouteStats("r99"); none.Requests != 0 || none.StatusCodes == nil {
		t.Errorf("unknown route: %+v", none)
	}
}

func TestUpdateKeepsRuntimeState(t *testing.T) {
	be := newBackend(t, "a")
	hc := &fsm.HealthCheck{Path: "/", Interval: int64(time.Hour), Timeout: int64(time.Second)}
	cb := &fsm.CircuitBreaker{Threshold: 100, Timeout: int64(time.Second), HalfOpenRequests: 1}
	mk := func(idx uint64, backendURL, path string) *fsm.RoutingTable {
		st := settings(func(s *fsm.RouteSettings) { s.Health = hc; s.CircuitBreaker = cb })
		return newTable(idx).
			add(route{id: "r1", domains: []string{"u.test"}, path: path, backend: backendURL, settings: st}).build()
	}
	f := newFront(t, Config{}, mk(1, be.URL, "/"))
	f.p.RunHealthChecks(context.Background())
	be.fail.Store(500)
	f.get(t, "u.test", "/")
	f.get(t, "u.test", "/")
	// A change elsewhere in the route (its path) keeps health, breaker
	// counts and statistics.
	f.p.Update(mk(2, be.URL, "/v2"))
	if f.p.TableIndex() != 2 {
		t.Fatalf("index %d", f.p.TableIndex())
	}
	if h, _ := f.p.BackendHealthy("r1"); !h {
		t.Error("health lost on update")
	}
	if st := f.p.BreakerStatus("r1"); st.Failures != 2 {
		t.Errorf("breaker failures lost: %+v", st)
	}
	if st := f.p.RouteStats("r1"); st.Requests != 2 {
		t.Errorf("stats lost: %+v", st)
	}
	// A new backend starts unhealthy again until probed.
	other := newBackend(t, "b")
	f.p.Update(mk(3, other.URL, "/v2"))
	if h, _ := f.p.BackendHealthy("r1"); h {
		t.Error("new backend inherited health")
	}
}

func TestMetricsCollector(t *testing.T) {
	be := newBackend(t, "a")
	reg := prometheus.NewPedanticRegistry()
	f := newFront(t, Config{Registerer: reg}, newTable(1).add(route{id: "r1", domains: []string{"m.test"}, backend: be.URL,
		settings: settings(func(s *fsm.RouteSettings) {
			s.CircuitBreaker = &fsm.CircuitBreaker{Threshold: 5, Timeout: int64(time.Second), HalfOpenRequests: 1}
		})}).build())
	f.get(t, "m.test", "/")
	f.get(t, "m.test", "/")
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, mf := range mfs {
		found[mf.GetName()] = true
		switch mf.GetName() {
		case "raftgate_proxy_request_duration_seconds":
			if mf.Metric[0].Histogram.GetSampleCount() != 2 {
				t.Errorf("histogram count: %v", mf.Metric[0].Histogram)
			}
		case "raftgate_proxy_requests_total":
			if len(mf.Metric) != 1 || mf.Metric[0].Counter.GetValue() != 2 {
				t.Errorf("requests: %v", mf.Metric)
			}
		}
	}
	for _, name := range []string{"raftgate_proxy_requests_total", "raftgate_proxy_errors_total", "raftgate_proxy_backend_healthy",
		"raftgate_proxy_breaker_state", "raftgate_proxy_rate_limited_total", "raftgate_ratelimit_tracked_ips", "raftgate_ratelimit_ip_cap_hits_total"} {
		if !found[name] {
			t.Errorf("metric %s missing", name)
		}
	}
	// The metrics endpoint output parses.
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `raftgate_proxy_requests_total{code="200",route="r1"} 2`) {
		t.Fatalf("metrics: %d\n%s", resp.StatusCode, body)
	}
}
