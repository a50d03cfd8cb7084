package fsm

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// tableEntries generates n random log entries that exercise everything
// that changes the routing table: wildcards and multi-domain routes,
// shared pools across sessions of a service, settings, maintenance,
// drains, breaker resets, re-registration, shutdown and expiry.
func tableEntries(t *testing.T, l *testLog, rng *rand.Rand, n int) []*raft.Log {
	t.Helper()
	var out []*raft.Log
	var sessions []string
	byInstance := make(map[string]string)
	domains := []string{"a.com", "b.com", "*.a.com", "x.b.com", "*.b.com", "c.org"}
	add := func(typ CommandType, s string, p any) { out = append(out, l.entry(typ, s, p, "")) }
	for i := 0; i < n; i++ {
		l.now += int64(rng.Intn(int(time.Second)))
		if len(sessions) == 0 || rng.Intn(12) == 0 {
			svc := []string{"a", "b"}[rng.Intn(2)]
			id := fmt.Sprintf("%s-s%d", svc, i)
			// Same instance names make a later register replace an earlier
			// session in one step.
			inst := fmt.Sprint(rng.Intn(6))
			add(CmdRegister, "", RegisterPayload{SessionID: id, Service: svc, Instance: inst, Conn: "c"})
			if old, ok := byInstance[svc+"/"+inst]; ok {
				sessions = slices.DeleteFunc(sessions, func(s string) bool { return s == old })
			}
			byInstance[svc+"/"+inst] = id
			sessions = append(sessions, id)
			continue
		}
		s := sessions[rng.Intn(len(sessions))]
		// Commands for a session that has ended fail; the list follows
		// ends, except now and then so that those failures are tested too.
		ended := func() {
			if rng.Intn(10) != 0 {
				sessions = slices.DeleteFunc(sessions, func(x string) bool { return x == s })
			}
		}
		rid := fmt.Sprintf("r%d", 1+rng.Intn(i+1))
		target := []string{TargetAll, rid}[rng.Intn(2)]
		op := rng.Intn(21)
		if op >= 14 && op <= 15 && rng.Intn(4) != 0 {
			op = 4 // ending sessions often would leave an empty table
		}
		switch op {
		case 0, 1, 2:
			ds := []string{domains[rng.Intn(len(domains))]}
			if rng.Intn(3) == 0 {
				if d := domains[rng.Intn(len(domains))]; d != ds[0] {
					ds = append(ds, d)
				}
			}
			add(CmdRouteAdd, s, RouteSpec{Domains: ds, Path: fmt.Sprintf("/p%d", rng.Intn(2)), Backend: fmt.Sprintf("http://127.0.0.1:%d", 8000+rng.Intn(3)), Priority: rng.Intn(2)})
		case 3:
			add(CmdRouteRemove, s, RoutePayload{RouteID: rid})
		case 4, 5, 6:
			add(CmdConfigApply, s, nil)
		case 7:
			add(CmdHeadersSet, s, SettingPayload{Target: target, Key: "X-N", Value: fmt.Sprint(rng.Intn(9))})
		case 8:
			add(CmdCircuitBreakerSet, s, SettingPayload{Target: target, CircuitBreaker: &CircuitBreaker{Threshold: 1 + rng.Intn(3), Timeout: int64(time.Second), HalfOpenRequests: 1}})
		case 9:
			add(CmdCircuitBreakerReset, s, RoutePayload{RouteID: rid})
		case 10:
			add(CmdMaintEnter, s, MaintPayload{Target: target})
		case 11:
			add(CmdMaintExit, s, MaintPayload{Target: TargetAll})
		case 12:
			add(CmdDrainStart, s, DrainPayload{Duration: int64(time.Minute)})
		case 13:
			add(CmdDrainCancel, s, nil)
		case 14:
			add(CmdShutdown, s, nil)
			ended()
		case 15:
			add(CmdDetach, s, ConnPayload{Conn: "c"})
			add(CmdExpire, "", SessionsPayload{Sessions: []string{s}, Grace: int64(time.Millisecond)})
			ended()
		case 16:
			// Edits that keep the member's pointer but move it (path,
			// priority, domains) or change it (backend).
			switch rng.Intn(4) {
			case 0:
				add(CmdRouteUpdate, s, RouteUpdatePayload{RouteID: rid, Field: "path", Value: fmt.Sprintf("/p%d", rng.Intn(2))})
			case 1:
				add(CmdRouteUpdate, s, RouteUpdatePayload{RouteID: rid, Field: "priority", Value: fmt.Sprint(rng.Intn(2))})
			case 2:
				add(CmdRouteUpdate, s, RouteUpdatePayload{RouteID: rid, Field: "domains", Value: domains[rng.Intn(len(domains))] + "," + domains[rng.Intn(len(domains))]})
			case 3:
				add(CmdRouteUpdate, s, RouteUpdatePayload{RouteID: rid, Field: "backend_url", Value: fmt.Sprintf("http://127.0.0.1:%d", 8000+rng.Intn(3))})
			}
		case 17:
			add(CmdOptionsSet, s, SettingPayload{Target: target, Key: OptTimeout, Value: fmt.Sprintf("%ds", 1+rng.Intn(3))})
		case 18:
			add(CmdRateLimitSet, s, SettingPayload{Target: target, RateLimit: &RateLimit{Requests: rng.Intn(3), Window: int64(time.Second)}})
		case 19:
			add(CmdHealthSet, s, SettingPayload{Target: target, Health: &HealthCheck{Path: "/h", Interval: int64(time.Second), Timeout: int64(time.Duration(1+rng.Intn(2)) * 100 * time.Millisecond)}})
		case 20:
			// Partial applies leave the other scopes staged.
			scopes := []string{ScopeRoutes, ScopeHeaders, ScopeOptions, ScopeHealth, ScopeRateLimit, ScopeCircuitBreaker}
			add(CmdConfigApply, s, ApplyPayload{Scopes: []string{scopes[rng.Intn(len(scopes))]}})
		}
	}
	return out
}

// tableJSON is the content of a table without its index and generation.
func tableJSON(t *testing.T, rt *RoutingTable) string {
	t.Helper()
	c := *rt
	c.Index = 0
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkTable fails unless f's table equals a full rebuild of f's state, its
// pools and routes share members, and its delta (if any) names every key
// that differs from prev.
func checkTable(t *testing.T, f *FSM, prev *RoutingTable, what string) {
	t.Helper()
	var want string
	f.View(func(s *State) {
		want = tableJSON(t, BuildTable(s, 0))
		// Config.route and diffRoutes rely on route order.
		for id, sess := range s.Sessions {
			for _, c := range []*Config{&sess.Active, sess.Staged} {
				if c != nil && !slices.IsSortedFunc(c.Routes, func(a, b Route) int { return cmp.Compare(routeNumber(a.ID), routeNumber(b.ID)) }) {
					t.Fatalf("%s: session %s has routes out of route order", what, id)
				}
			}
		}
	})
	got := f.Table()
	if g := tableJSON(t, got); g != want {
		t.Fatalf("%s: incremental table differs from a full rebuild:\n got %s\nwant %s", what, g, want)
	}
	for _, m := range []ShardMap[[]*Pool]{got.Exact, got.Wildcard} {
		for key, ps := range m.All() {
			for _, p := range ps {
				for _, mem := range p.Members {
					found := false
					for _, rm := range got.Routes.Get(mem.RouteID) {
						found = found || rm == mem
					}
					if !found {
						t.Fatalf("%s: member of %s in pool %q is not the member of Routes[%s]", what, mem.RouteID, key, mem.RouteID)
					}
				}
			}
		}
	}
	if got == prev || got.Delta == nil || got.Delta.Base != prev.Gen {
		return
	}
	checkDelta(t, what+" exact", prev.Exact, got.Exact, got.Delta.Exact)
	checkDelta(t, what+" wildcard", prev.Wildcard, got.Wildcard, got.Delta.Wildcard)
	checkDelta(t, what+" routes", prev.Routes, got.Routes, got.Delta.Routes)
}

func checkDelta[V any](t *testing.T, what string, prev, next ShardMap[[]V], changed []string) {
	t.Helper()
	in := make(map[string]bool, len(changed))
	for _, k := range changed {
		in[k] = true
	}
	same := func(a, b []V) bool { return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0]) }
	for _, m := range []ShardMap[[]V]{prev, next} {
		for k := range m.All() {
			if !in[k] && !same(prev.Get(k), next.Get(k)) {
				t.Fatalf("%s: key %q changed but is not in the delta %v", what, k, changed)
			}
		}
	}
}

// TestIncrementalTableEqualsFullRebuild is the property test of the
// incremental table: random workloads in random batch sizes, with restores
// in between, and after every batch the table must equal BuildTable.
func TestIncrementalTableEqualsFullRebuild(t *testing.T) {
	for seed := int64(1); seed <= 4; seed++ {
		rng := rand.New(rand.NewSource(seed))
		l := newTestLog(t)
		entries := tableEntries(t, l, rng, 1500)
		f := New()
		most := 0
		for batch := 0; len(entries) > 0; batch++ {
			n := min(1+rng.Intn(8), len(entries))
			prev := f.Table()
			f.ApplyBatch(entries[:n])
			entries = entries[n:]
			checkTable(t, f, prev, fmt.Sprintf("seed %d batch %d", seed, batch))
			most = max(most, f.Table().Routes.Len())
			if rng.Intn(40) == 0 {
				b, err := f.SnapshotBytes()
				if err != nil {
					t.Fatal(err)
				}
				f = New()
				if err := f.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
					t.Fatal(err)
				}
				checkTable(t, f, f.Table(), fmt.Sprintf("seed %d restore after batch %d", seed, batch))
			}
		}
		if most < 5 {
			t.Fatalf("seed %d: at most %d active routes; the workload tests nothing", seed, most)
		}
	}
}

// TestProvisionalThenCommittedTables checks the tables subscribers see
// around PublishProvisional: the provisional one equals a full build of
// the state plus the local log, and the committed one that replaces it
// carries no delta (subscribers never held its base) and equals a full
// build too.
func TestProvisionalThenCommittedTables(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	l := newTestLog(t)
	entries := tableEntries(t, l, rng, 600)
	f := New()
	f.ApplyBatch(entries[:300])
	var got []*RoutingTable
	f.OnTable(func(rt *RoutingTable) { got = append(got, rt) })

	ref := New()
	ref.ApplyBatch(entries)
	last, err := f.PublishProvisional(entries[300:])
	if err != nil || last != entries[len(entries)-1].Index {
		t.Fatalf("PublishProvisional = %d, %v", last, err)
	}
	prov := got[len(got)-1]
	if prov.Delta != nil || prov.Index != last || tableJSON(t, prov) != tableJSON(t, ref.Table()) {
		t.Fatalf("provisional table: delta %v index %d, want the table of the whole log", prov.Delta, prov.Index)
	}
	for i := 300; i < len(entries); i += 50 {
		n := len(got)
		f.ApplyBatch(entries[i:min(i+50, len(entries))])
		if i+50 < len(entries) && len(got) != n {
			t.Fatalf("a committed table older than the provisional one was published at %d", i)
		}
	}
	final := got[len(got)-1]
	if final == prov || final.Delta != nil || final.Index != last {
		t.Fatalf("committed table after catching up: same %v, delta %v, index %d", final == prov, final.Delta, final.Index)
	}
	if tableJSON(t, final) != tableJSON(t, ref.Table()) {
		t.Fatal("committed table differs from the reference")
	}
	checkTable(t, f, f.Table(), "after catching up")
}

// benchState returns a test log whose FSM holds routes routes spread over
// sessions sessions (one domain each), like `raftgate bench scale`.
func benchState(b *testing.B, routes, sessions int) (*testLog, []string) {
	t := &testing.T{}
	l := &testLog{t: t, f: New(), now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()}
	ids := make([]string, sessions)
	var batch []*raft.Log
	for i := range sessions {
		ids[i] = fmt.Sprintf("svc%d-%032d", i, i)
		batch = append(batch, l.entry(CmdRegister, "", RegisterPayload{SessionID: ids[i], Service: fmt.Sprintf("svc%d", i), Instance: "i"}, ""))
	}
	per := make([][]RouteSpec, sessions)
	for r := range routes {
		s := r % sessions
		per[s] = append(per[s], RouteSpec{Domains: []string{fmt.Sprintf("r%d.svc%d.scale.test", r, s)}, Path: "/", Backend: fmt.Sprintf("http://10.0.0.%d:8080", r%100+1)})
	}
	for s, specs := range per {
		if len(specs) > 0 {
			batch = append(batch, l.entry(CmdRouteAddBulk, ids[s], RouteAddBulkPayload{Routes: specs}, ""))
			batch = append(batch, l.entry(CmdConfigApply, ids[s], ApplyPayload{}, ""))
		}
	}
	for len(batch) > 0 {
		n := min(512, len(batch))
		l.f.ApplyBatch(batch[:n])
		batch = batch[n:]
	}
	if got := l.f.Table().Routes.Len(); got != routes {
		b.Fatalf("table has %d routes, want %d", got, routes)
	}
	return l, ids
}

// BenchmarkApplyOneRoute prices applying one more route (ROUTE_ADD, then
// the timed CONFIG_APPLY) at 1,000 and 100,000 routes: with incremental
// tables the two must be close.
func BenchmarkApplyOneRoute(b *testing.B) {
	for _, routes := range []int{1_000, 100_000} {
		b.Run(fmt.Sprint(routes), func(b *testing.B) {
			l, ids := benchState(b, routes, 10_000)
			k := 0
			for b.Loop() {
				b.StopTimer()
				s := ids[k%len(ids)]
				l.f.ApplyBatch([]*raft.Log{l.entry(CmdRouteAdd, s, RouteSpec{Domains: []string{fmt.Sprintf("extra%d.scale.test", k)}, Path: "/", Backend: "http://10.0.0.1:8080"}, "")})
				e := l.entry(CmdConfigApply, s, ApplyPayload{}, "")
				k++
				b.StartTimer()
				l.f.ApplyBatch([]*raft.Log{e})
			}
		})
	}
}

// TestRouteEditsThatKeepTheMember moves a route within and across hosts
// (path, priority, domains) without changing its member, the case where an
// unchanged-host shortcut must not keep the old pool.
func TestRouteEditsThatKeepTheMember(t *testing.T) {
	for _, edit := range []RouteUpdatePayload{
		{Field: "path", Value: "/other"},
		{Field: "priority", Value: "7"},
		{Field: "domains", Value: "b.example.com,a.example.com"},
		{Field: "domains", Value: "c.example.com"},
		{Field: "backend_url", Value: "http://127.0.0.1:9"},
	} {
		l := newTestLog(t)
		s := l.register("svc", "a")
		id := l.mustOK(CmdRouteAdd, s, RouteSpec{Domains: []string{"a.example.com", "b.example.com"}, Path: "/p", Backend: "http://127.0.0.1:1"})
		l.mustOK(CmdRouteAdd, s, route("a.example.com", "/q", "http://127.0.0.1:2"))
		l.mustOK(CmdConfigApply, s, nil)
		prev := l.f.Table()
		edit.RouteID = id
		l.mustOK(CmdRouteUpdate, s, edit)
		l.mustOK(CmdConfigApply, s, nil)
		checkTable(t, l.f, prev, "after editing "+edit.Field+" to "+edit.Value)
	}
}
