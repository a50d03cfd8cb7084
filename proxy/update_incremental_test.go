package proxy

import (
	"context"
	"fmt"
	"maps"
	"math/rand"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/raftgate/raftgate/fsm"
)

// fsmFeed drives a real FSM with random commands so that its routing
// tables, and their deltas, are the ones a node's proxy gets.
type fsmFeed struct {
	t     *testing.T
	f     *fsm.FSM
	index uint64
	now   int64
}

func (l *fsmFeed) entry(typ fsm.CommandType, session string, payload any) *raft.Log {
	l.t.Helper()
	cmd, err := fsm.NewCommand(typ, session, payload)
	if err != nil {
		l.t.Fatal(err)
	}
	l.now += int64(time.Millisecond)
	cmd.Node, cmd.At = "n1", l.now
	b, err := cmd.Encode()
	if err != nil {
		l.t.Fatal(err)
	}
	l.index++
	return &raft.Log{Index: l.index, Term: 1, Type: raft.LogCommand, Data: b}
}

// randomBatch returns n random entries over the sessions of sessions.
func (l *fsmFeed) randomBatch(rng *rand.Rand, sessions []string, n int) []*raft.Log {
	var out []*raft.Log
	domains := []string{"a.test", "b.test", "*.a.test", "x.b.test", "c.test"}
	for range n {
		s := sessions[rng.Intn(len(sessions))]
		rid := fmt.Sprintf("r%d", 1+rng.Intn(int(l.index)+1))
		target := []string{fsm.TargetAll, rid}[rng.Intn(2)]
		switch rng.Intn(11) {
		case 0, 1, 2:
			out = append(out, l.entry(fsm.CmdRouteAdd, s, fsm.RouteSpec{
				Domains: []string{domains[rng.Intn(len(domains))]},
				Path:    fmt.Sprintf("/p%d", rng.Intn(2)),
				Backend: fmt.Sprintf("http://127.0.0.1:%d", 1+rng.Intn(3)),
			}))
		case 3:
			out = append(out, l.entry(fsm.CmdRouteRemove, s, fsm.RoutePayload{RouteID: rid}))
		case 4, 5, 6:
			out = append(out, l.entry(fsm.CmdConfigApply, s, nil))
		case 7:
			out = append(out, l.entry(fsm.CmdOptionsSet, s, fsm.SettingPayload{Target: target, Key: fsm.OptTLSSkipVerify, Value: fmt.Sprint(rng.Intn(2) == 0)}))
		case 8:
			out = append(out, l.entry(fsm.CmdHealthSet, s, fsm.SettingPayload{Target: target, Health: &fsm.HealthCheck{Path: "/h", Interval: int64(time.Hour), Timeout: int64(time.Second)}}))
		case 9:
			out = append(out, l.entry(fsm.CmdMaintEnter, s, fsm.MaintPayload{Target: target}))
		case 10:
			out = append(out, l.entry(fsm.CmdMaintExit, s, fsm.MaintPayload{Target: fsm.TargetAll}))
		}
	}
	return out
}

// describe renders what a compiled table serves, independent of pointers.
func describe(t *table) string {
	var b strings.Builder
	for _, id := range slices.Sorted(maps.Keys(t.routeMap.Map())) {
		rc := t.routeMap.Get(id)
		fmt.Fprintf(&b, "route %s %s %s maint=%v health=%v tls=%v\n", id, rc.session, rc.backend, rc.maint, rc.health != nil, rc.opts.TLSSkipVerify)
	}
	for i, m := range []fsm.ShardMap[[]*pool]{t.exact, t.wildcard} {
		name := []string{"exact", "wild"}[i]
		for _, host := range slices.Sorted(maps.Keys(m.Map())) {
			for _, pl := range m.Get(host) {
				fmt.Fprintf(&b, "%s %s %s plain=%v policy=%v:", name, host, pl.path, pl.plain, pl.policy)
				for _, rc := range pl.members {
					fmt.Fprintf(&b, " %s", rc.id)
					if t.routeMap.Get(rc.id) != rc {
						fmt.Fprintf(&b, "(stale routeCfg)")
					}
				}
				b.WriteString("\n")
			}
		}
	}
	return b.String()
}

// TestIncrementalUpdateEqualsFullCompile feeds a proxy the tables of an FSM
// under a random workload and checks after every batch that the patched
// table serves what a full compile serves, that unchanged routes keep their
// compiled form, and that the runtime bookkeeping (route states, session
// counters, transports, health checkers) matches the table.
func TestIncrementalUpdateEqualsFullCompile(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rng := rand.New(rand.NewSource(3))
	l := &fsmFeed{t: t, f: fsm.New(), now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()}
	var sessions []string
	var reg []*raft.Log
	for i := range 6 {
		id := fmt.Sprintf("svc%d-s%d", i%2, i)
		sessions = append(sessions, id)
		reg = append(reg, l.entry(fsm.CmdRegister, "", fsm.RegisterPayload{SessionID: id, Service: fmt.Sprintf("svc%d", i%2), Instance: fmt.Sprint(i), Conn: "c"}))
	}
	l.f.ApplyBatch(reg)

	p := New(Config{})
	p.Start(ctx)
	defer p.Close()
	l.f.OnTable(p.Update)
	patched := 0
	for batch := range 300 {
		before := p.table.Load()
		l.f.ApplyBatch(l.randomBatch(rng, sessions, 1+rng.Intn(4)))
		ft := l.f.Table()
		got := p.table.Load()
		if got.gen != ft.Gen {
			t.Fatalf("batch %d: proxy serves gen %d, fsm table is %d", batch, got.gen, ft.Gen)
		}
		full := New(Config{})
		full.Update(ft)
		want := full.table.Load()
		if g, w := describe(got), describe(want); g != w {
			full.Close()
			t.Fatalf("batch %d: patched table differs from a full compile:\n got %s\nwant %s", batch, g, w)
		}
		if ft.Delta != nil && got != before {
			patched++
			changed := make(map[string]bool)
			for _, id := range ft.Delta.Routes {
				changed[id] = true
			}
			for id, rc := range got.routes {
				if old := before.routeMap.Get(id); !changed[id] && old != rc {
					t.Fatalf("batch %d: unchanged route %s was recompiled", batch, id)
				}
			}
		}
		p.mu.Lock()
		if !maps.Equal(p.trRefs, full.trRefs) {
			t.Errorf("batch %d: transport refs %v, full compile %v", batch, p.trRefs, full.trRefs)
		}
		if len(p.transports) != len(p.trRefs) {
			t.Errorf("batch %d: %d transports open for %d referenced", batch, len(p.transports), len(p.trRefs))
		}
		if !maps.Equal(p.sessRoutes, full.sessRoutes) || len(p.sessions) != len(full.sessions) {
			t.Errorf("batch %d: session routes %v (%d counters), full compile %v (%d)", batch, p.sessRoutes, len(p.sessions), full.sessRoutes, len(full.sessions))
		}
		if len(p.routes) != got.routeMap.Len() {
			t.Errorf("batch %d: %d route states for %d routes", batch, len(p.routes), got.routeMap.Len())
		}
		checked := 0
		for _, rc := range got.routes {
			if rc.health != nil {
				checked++
				if _, ok := p.checkers[rc.health]; !ok {
					t.Errorf("batch %d: route %s has a health check but no checker", batch, rc.id)
				}
			}
		}
		if len(p.checkers) != checked {
			t.Errorf("batch %d: %d checkers for %d health checks", batch, len(p.checkers), checked)
		}
		p.mu.Unlock()
		full.Close()
		if t.Failed() {
			return
		}
	}
	if patched < 50 {
		t.Fatalf("only %d of 300 batches were patched; the test exercises too little", patched)
	}
}

// BenchmarkUpdateOneRoute prices proxy.Update for a table that adds one
// route to a session, at 1,000 and 100,000 routes over 10,000 sessions:
// with patched tables the cost follows the change, not the table.
func BenchmarkUpdateOneRoute(b *testing.B) {
	for _, routes := range []int{1_000, 100_000} {
		b.Run(fmt.Sprint(routes), func(b *testing.B) {
			l := &fsmFeed{t: &testing.T{}, f: fsm.New(), now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()}
			const sessions = 10_000
			var batch []*raft.Log
			per := make([][]fsm.RouteSpec, sessions)
			for r := range routes {
				per[r%sessions] = append(per[r%sessions], fsm.RouteSpec{Domains: []string{fmt.Sprintf("r%d.scale.test", r)}, Path: "/", Backend: fmt.Sprintf("http://10.0.0.%d:8080", r%100+1)})
			}
			ids := make([]string, sessions)
			for i := range sessions {
				ids[i] = fmt.Sprintf("svc%d-%032d", i, i)
				batch = append(batch, l.entry(fsm.CmdRegister, "", fsm.RegisterPayload{SessionID: ids[i], Service: fmt.Sprintf("svc%d", i), Instance: "i"}))
				if len(per[i]) > 0 {
					batch = append(batch, l.entry(fsm.CmdRouteAddBulk, ids[i], fsm.RouteAddBulkPayload{Routes: per[i]}), l.entry(fsm.CmdConfigApply, ids[i], fsm.ApplyPayload{}))
				}
			}
			for len(batch) > 0 {
				n := min(512, len(batch))
				l.f.ApplyBatch(batch[:n])
				batch = batch[n:]
			}
			p := New(Config{})
			defer p.Close()
			p.Update(l.f.Table())
			k := 0
			for b.Loop() {
				b.StopTimer()
				s := ids[k%sessions]
				l.f.ApplyBatch([]*raft.Log{
					l.entry(fsm.CmdRouteAdd, s, fsm.RouteSpec{Domains: []string{fmt.Sprintf("extra%d.scale.test", k)}, Path: "/", Backend: "http://10.0.0.1:8080"}),
					l.entry(fsm.CmdConfigApply, s, fsm.ApplyPayload{}),
				})
				t := l.f.Table()
				k++
				b.StartTimer()
				p.Update(t)
			}
		})
	}
}
