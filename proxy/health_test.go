package proxy

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/raftgate/raftgate/fsm"
)

func TestHealthChecksFlipBackend(t *testing.T) {
	a, b := newBackend(t, "a"), newBackend(t, "b")
	var mu sync.Mutex
	var events []HealthEvent
	cfg := Config{NodeID: "n1", OnHealthChange: func(e HealthEvent) {
		mu.Lock()
		events = append(events, e)
		mu.Unlock()
	}}
	hc := settings(func(s *fsm.RouteSettings) {
		s.Health = &fsm.HealthCheck{Path: "/healthz", Interval: int64(time.Hour), Timeout: int64(time.Second)}
	})
	f := newFront(t, cfg, newTable(1).
		add(route{id: "r1", session: "sa", domains: []string{"h.test"}, backend: a.URL, settings: hc}).
		add(route{id: "r2", session: "sb", domains: []string{"h.test"}, backend: b.URL, settings: hc}).build())
	ctx := context.Background()

	// New backends start out of rotation until their first passing probe.
	if r := f.get(t, "h.test", "/"); r.code != 503 || r.header.Get("Retry-After") == "" {
		t.Fatalf("before first probe: %d", r.code)
	}
	f.p.RunHealthChecks(ctx)
	if hits := a.lastRequest(); hits == nil || hits.URL.Path != "/healthz" {
		t.Fatalf("probe path: %+v", hits)
	}
	served := func(n int) map[string]int {
		c := map[string]int{}
		for range n {
			r := f.get(t, "h.test", "/")
			if r.code != 200 {
				t.Fatalf("request failed: %d", r.code)
			}
			c[strings.Fields(r.body)[0]]++
		}
		return c
	}
	if c := served(4); c["a"] != 2 || c["b"] != 2 {
		t.Fatalf("both healthy: %v", c)
	}

	a.fail.Store(500)
	for i := range defaultUnhealthyAfter {
		f.p.RunHealthChecks(ctx)
		if h, _ := f.p.BackendHealthy("r1"); h != (i < defaultUnhealthyAfter-1) {
			t.Fatalf("after %d failures healthy=%v", i+1, h)
		}
	}
	// Only the healthy peer serves, with no failed request.
	if c := served(6); c["b"] != 6 {
		t.Fatalf("a should be out: %v", c)
	}

	a.fail.Store(0)
	f.p.RunHealthChecks(ctx)
	if h, _ := f.p.BackendHealthy("r1"); h {
		t.Fatal("one pass should not be enough to return")
	}
	f.p.RunHealthChecks(ctx)
	if h, _ := f.p.BackendHealthy("r1"); !h {
		t.Fatal("two passes should bring it back")
	}
	if c := served(4); c["a"] != 2 {
		t.Fatalf("a should be back: %v", c)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(events) != 2 {
		t.Fatalf("events: %+v", events)
	}
	want := []HealthEvent{
		{RouteID: "r1", Backend: a.URL, Healthy: false, Reason: "status 500", Node: "n1"},
		{RouteID: "r1", Backend: a.URL, Healthy: true, Reason: "health check passed", Node: "n1"},
	}
	for i := range want {
		if events[i] != want[i] {
			t.Errorf("event %d = %+v, want %+v", i, events[i], want[i])
		}
	}
}

func TestHealthCheckerRunsInBackground(t *testing.T) {
	a := newBackend(t, "a")
	hc := settings(func(s *fsm.RouteSettings) {
		s.Health = &fsm.HealthCheck{Path: "/", Interval: int64(20 * time.Millisecond), Timeout: int64(10 * time.Millisecond)}
	})
	f := newFront(t, Config{}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.p.Start(ctx)
	f.p.Update(newTable(1).add(route{id: "r1", domains: []string{"h.test"}, backend: a.URL, settings: hc}).build())
	waitFor(t, "backend healthy", 5*time.Second, func() bool { h, _ := f.p.BackendHealthy("r1"); return h })
	a.fail.Store(http.StatusServiceUnavailable)
	waitFor(t, "backend unhealthy", 5*time.Second, func() bool { h, _ := f.p.BackendHealthy("r1"); return !h })
	if r := f.get(t, "h.test", "/"); r.code != 503 {
		t.Errorf("no healthy backend: %d", r.code)
	}
	// Removing the check stops its goroutine (goleak checks at the end)
	// and puts the backend back in rotation.
	a.fail.Store(0)
	f.p.Update(newTable(2).add(route{id: "r1", domains: []string{"h.test"}, backend: a.URL}).build())
	if r := f.get(t, "h.test", "/"); r.code != 200 {
		t.Errorf("without a check: %d", r.code)
	}
}

func TestProbeReasons(t *testing.T) {
	h := newHealthState("r1", healthKey{backend: "http://127.0.0.1:1", url: "http://127.0.0.1:1/", interval: time.Second, timeout: time.Second, rt: http.DefaultTransport}, nil)
	ok, reason := h.probe(context.Background())
	if ok || reason != "connection refused" {
		t.Fatalf("probe = %v %q", ok, reason)
	}
}

// TestFirstProbeRunsAtOnce: a new check with an interval of an hour still
// admits its backend promptly, because the checker probes on Update rather
// than after the first interval.
func TestFirstProbeRunsAtOnce(t *testing.T) {
	a := newBackend(t, "a")
	hc := settings(func(s *fsm.RouteSettings) {
		s.Health = &fsm.HealthCheck{Path: "/", Interval: int64(time.Hour), Timeout: int64(time.Second)}
	})
	f := newFront(t, Config{}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.p.Start(ctx)
	f.p.Update(newTable(1).add(route{id: "r1", domains: []string{"h.test"}, backend: a.URL, settings: hc}).build())
	waitFor(t, "first probe to admit the backend", 5*time.Second, func() bool { h, _ := f.p.BackendHealthy("r1"); return h })
	if r := f.get(t, "h.test", "/"); r.code != 200 {
		t.Fatalf("after the first probe: %d", r.code)
	}
	// A changed check (new path) is a new checker: it probes at once too.
	a.fail.Store(500)
	hc2 := settings(func(s *fsm.RouteSettings) {
		s.Health = &fsm.HealthCheck{Path: "/other", Interval: int64(time.Hour), Timeout: int64(time.Second)}
		s.Options.HealthUnhealthyThreshold = 1
	})
	f.p.Update(newTable(2).add(route{id: "r1", domains: []string{"h.test"}, backend: a.URL, settings: hc2}).build())
	waitFor(t, "new check's first probe to fail the backend", 5*time.Second, func() bool { h, _ := f.p.BackendHealthy("r1"); return !h })
}

func TestHealthThresholdOptions(t *testing.T) {
	a := newBackend(t, "a")
	hc := settings(func(s *fsm.RouteSettings) {
		s.Health = &fsm.HealthCheck{Path: "/", Interval: int64(time.Hour), Timeout: int64(time.Second)}
		s.Options.HealthUnhealthyThreshold = 1
		s.Options.HealthHealthyThreshold = 3
	})
	f := newFront(t, Config{}, newTable(1).add(route{id: "r1", domains: []string{"h.test"}, backend: a.URL, settings: hc}).build())
	ctx := context.Background()
	f.p.RunHealthChecks(ctx)
	if h, _ := f.p.BackendHealthy("r1"); !h {
		t.Fatal("first pass should admit the backend")
	}
	a.fail.Store(500)
	f.p.RunHealthChecks(ctx)
	if h, _ := f.p.BackendHealthy("r1"); h {
		t.Fatal("threshold 1: one failure should take it out")
	}
	a.fail.Store(0)
	for i := range 3 {
		f.p.RunHealthChecks(ctx)
		if h, _ := f.p.BackendHealthy("r1"); h != (i == 2) {
			t.Fatalf("after %d passes healthy=%v, want it back after exactly 3", i+1, h)
		}
	}
}

// TestPassiveHealth: with passive_health, consecutive 5xx from live
// traffic take a backend out (its peer serves the rest), a probe pass
// streak brings it back; without the option live failures change nothing.
func TestPassiveHealth(t *testing.T) {
	for _, passive := range []bool{true, false} {
		t.Run(fmt.Sprint("passive=", passive), func(t *testing.T) {
			a, b := newBackend(t, "a"), newBackend(t, "b")
			var mu sync.Mutex
			var events []HealthEvent
			cfg := Config{NodeID: "n1", OnHealthChange: func(e HealthEvent) {
				mu.Lock()
				events = append(events, e)
				mu.Unlock()
			}}
			hc := settings(func(s *fsm.RouteSettings) {
				s.Health = &fsm.HealthCheck{Path: "/healthz", Interval: int64(time.Hour), Timeout: int64(time.Second)}
				s.Options.PassiveHealth = passive
				s.Options.HealthUnhealthyThreshold = 2
			})
			f := newFront(t, cfg, newTable(1).
				add(route{id: "r1", session: "sa", domains: []string{"h.test"}, backend: a.URL, settings: hc}).
				add(route{id: "r2", session: "sb", domains: []string{"h.test"}, backend: b.URL, settings: hc}).build())
			f.p.RunHealthChecks(context.Background())

			// a answers 500 to traffic only: its health path stays fine,
			// so only passive checking can notice.
			a.fail.Store(500)
			a.trafficOnly.Store(true)
			fails := 0
			for range 12 {
				if r := f.get(t, "h.test", "/x"); r.code == 500 {
					fails++
				}
			}
			h, _ := f.p.BackendHealthy("r1")
			mu.Lock()
			n := len(events)
			mu.Unlock()
			if !passive {
				if !h || fails != 6 || n != 0 {
					t.Fatalf("without passive health: healthy=%v fails=%d events=%d", h, fails, n)
				}
				return
			}
			if h || fails != 2 || n != 1 {
				t.Fatalf("passive: healthy=%v after %d live failures (want 2), events=%d", h, fails, n)
			}
			mu.Lock()
			if ev := events[0]; ev.Healthy || ev.Reason != "passive: status 500" || ev.RouteID != "r1" {
				t.Errorf("event %+v", ev)
			}
			mu.Unlock()
			a.fail.Store(0)
			f.p.RunHealthChecks(context.Background())
			f.p.RunHealthChecks(context.Background())
			if h, _ := f.p.BackendHealthy("r1"); !h {
				t.Fatal("two passing probes should bring it back")
			}
		})
	}
}
