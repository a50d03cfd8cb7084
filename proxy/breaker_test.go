package proxy

import (
	"testing"
	"time"

	"github.com/raftgate/raftgate/fsm"
)

func TestBreakerFullCycle(t *testing.T) {
	be := newBackend(t, "a")
	be.fail.Store(500)
	clk := newClock()
	cb := fsm.CircuitBreaker{Threshold: 3, Timeout: int64(10 * time.Second), HalfOpenRequests: 2}
	mk := func(idx uint64, cb fsm.CircuitBreaker) *fsm.RoutingTable {
		return newTable(idx).add(route{id: "r1", domains: []string{"cb.test"}, backend: be.URL,
			settings: settings(func(s *fsm.RouteSettings) { s.CircuitBreaker = &cb })}).build()
	}
	f := newFront(t, Config{Now: clk.Now}, mk(1, cb))

	for i := range 3 {
		if r := f.get(t, "cb.test", "/"); r.code != 500 {
			t.Fatalf("request %d: %d", i, r.code)
		}
	}
	st := f.p.BreakerStatus("r1")
	if st.State != BreakerOpen || st.Failures != 3 || st.LastFailure.IsZero() || !st.NextAttempt.Equal(clk.Now().Add(10*time.Second)) {
		t.Fatalf("after threshold: %+v", st)
	}
	hits := be.hits.Load()
	r := f.get(t, "cb.test", "/")
	if r.code != 503 || r.header.Get("Retry-After") != "10" || be.hits.Load() != hits {
		t.Fatalf("open: %d retry-after %q, backend hit %d", r.code, r.header.Get("Retry-After"), be.hits.Load()-hits)
	}

	// Half-open: a failing trial opens it again.
	clk.Add(10 * time.Second)
	if r := f.get(t, "cb.test", "/"); r.code != 500 {
		t.Fatalf("trial: %d", r.code)
	}
	if st := f.p.BreakerStatus("r1"); st.State != BreakerOpen {
		t.Fatalf("failed trial: %+v", st)
	}

	// Half-open again: two good trials close it.
	clk.Add(10 * time.Second)
	be.fail.Store(0)
	if r := f.get(t, "cb.test", "/"); r.code != 200 {
		t.Fatalf("trial 1: %d", r.code)
	}
	if st := f.p.BreakerStatus("r1"); st.State != BreakerHalfOpen {
		t.Fatalf("after one good trial: %+v", st)
	}
	if r := f.get(t, "cb.test", "/"); r.code != 200 {
		t.Fatalf("trial 2: %d", r.code)
	}
	if st := f.p.BreakerStatus("r1"); st.State != BreakerClosed || st.Failures != 0 {
		t.Fatalf("after good trials: %+v", st)
	}

	// Open it again, then a table with a new ResetGeneration closes it.
	be.fail.Store(502)
	for range 3 {
		f.get(t, "cb.test", "/")
	}
	if st := f.p.BreakerStatus("r1"); st.State != BreakerOpen {
		t.Fatalf("reopen: %+v", st)
	}
	f.p.Update(mk(2, cb)) // same generation: state kept
	if st := f.p.BreakerStatus("r1"); st.State != BreakerOpen {
		t.Fatalf("unrelated update closed the breaker: %+v", st)
	}
	cb.ResetGeneration++
	f.p.Update(mk(3, cb))
	if st := f.p.BreakerStatus("r1"); st.State != BreakerClosed {
		t.Fatalf("reset: %+v", st)
	}
}

func TestBreakerHalfOpenAdmitsOnlyTrials(t *testing.T) {
	b := newBreaker(fsm.CircuitBreaker{Threshold: 1, Timeout: int64(time.Second), HalfOpenRequests: 2})
	now := time.Unix(0, 0)
	b.record(false, now)
	if ok, retry := b.allow(now); ok || retry != time.Second {
		t.Fatalf("open admitted: %v %v", ok, retry)
	}
	now = now.Add(time.Second)
	var admitted int
	for range 5 {
		if ok, _ := b.allow(now); ok {
			admitted++
		}
	}
	if admitted != 2 {
		t.Fatalf("half-open admitted %d", admitted)
	}
	b.release() // a trial whose client left frees its slot
	if ok, _ := b.allow(now); !ok {
		t.Fatal("released slot not reusable")
	}
}
