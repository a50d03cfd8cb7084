package fsm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// testLog feeds commands to an FSM as raft would, with increasing indexes.
type testLog struct {
	t     *testing.T
	f     *FSM
	index uint64
	now   int64
}

func newTestLog(t *testing.T) *testLog {
	return &testLog{t: t, f: New(), now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()}
}

func (l *testLog) entry(typ CommandType, session string, payload any, rid string) *raft.Log {
	l.t.Helper()
	cmd, err := NewCommand(typ, session, payload)
	if err != nil {
		l.t.Fatal(err)
	}
	cmd.Node, cmd.At, cmd.RequestID = "n1", l.now, rid
	b, err := cmd.Encode()
	if err != nil {
		l.t.Fatal(err)
	}
	l.index++
	return &raft.Log{Index: l.index, Term: 1, Type: raft.LogCommand, Data: b}
}

func (l *testLog) apply(typ CommandType, session string, payload any) Result {
	l.t.Helper()
	return l.f.Apply(l.entry(typ, session, payload, "")).(Result)
}

func (l *testLog) mustOK(typ CommandType, session string, payload any) string {
	l.t.Helper()
	r := l.apply(typ, session, payload)
	if r.Err != "" {
		l.t.Fatalf("%s: unexpected error %q", typ, r.Err)
	}
	return r.Value
}

func (l *testLog) register(service, instance string) string {
	l.t.Helper()
	id, err := NewSessionID(service)
	if err != nil {
		l.t.Fatal(err)
	}
	return l.mustOK(CmdRegister, "", RegisterPayload{SessionID: id, Service: service, Instance: instance, Conn: "inc-1"})
}

func (l *testLog) session(id string) *Session {
	var s *Session
	l.f.View(func(st *State) { s = st.Sessions[id] })
	return s
}

func route(domain, path, backend string) RouteSpec {
	return RouteSpec{Domains: []string{domain}, Path: path, Backend: backend}
}

func TestRouteLifecycleStagedThenActive(t *testing.T) {
	l := newTestLog(t)
	s := l.register("web", "a")
	id := l.mustOK(CmdRouteAdd, s, route("example.com", "/api", "http://127.0.0.1:9000"))
	if id != "r1" {
		t.Fatalf("first route id = %q, want r1", id)
	}
	if got := l.session(s).RouteList(); len(got) != 1 || got[0].Status != "staged" {
		t.Fatalf("route list before apply = %+v", got)
	}
	if p := l.f.Table().Exact.Get("example.com"); len(p) != 0 {
		t.Fatal("staged route is in the routing table before CONFIG_APPLY")
	}
	l.mustOK(CmdConfigApply, s, nil)
	pools := l.f.Table().Exact.Get("example.com")
	if len(pools) != 1 || pools[0].Members[0].Backend != "http://127.0.0.1:9000" {
		t.Fatalf("table after apply = %+v", pools)
	}
	// A staged removal that is rolled back leaves the route serving.
	l.mustOK(CmdRouteRemove, s, RoutePayload{RouteID: id})
	if got := l.session(s).RouteList(); got[0].Status != "pending_removal" {
		t.Fatalf("status after remove = %q", got[0].Status)
	}
	l.mustOK(CmdConfigRollback, s, nil)
	if got := l.session(s).RouteList(); got[0].Status != "active" {
		t.Fatalf("status after rollback = %q", got[0].Status)
	}
	if len(l.f.Table().Exact.Get("example.com")) != 1 {
		t.Fatal("rolled-back removal dropped the route")
	}
	// An update shows as pending_update until applied.
	l.mustOK(CmdRouteUpdate, s, RouteUpdatePayload{RouteID: id, Field: "priority", Value: "5"})
	if got := l.session(s).RouteList(); !got[0].PendingUpdate {
		t.Fatal("pending_update not reported")
	}
	d := l.session(s).Diff()
	if len(d.Routes.Modified) != 1 || d.Routes.Modified[0] != id {
		t.Fatalf("diff = %+v", d)
	}
	l.mustOK(CmdShutdown, s, nil)
	if len(l.f.Table().Exact.Get("example.com")) != 0 || l.session(s) != nil {
		t.Fatal("shutdown left the session or its routes")
	}
}

func TestApplyIsAtomicAndNamesTheConflict(t *testing.T) {
	l := newTestLog(t)
	a := l.register("billing", "a")
	l.mustOK(CmdRouteAdd, a, route("example.com", "/api", "http://127.0.0.1:1"))
	l.mustOK(CmdConfigApply, a, nil)

	b := l.register("search", "b")
	good := l.mustOK(CmdRouteAdd, b, route("other.com", "/", "http://127.0.0.1:2"))
	bad := l.mustOK(CmdRouteAdd, b, route("example.com", "/api", "http://127.0.0.1:3"))
	if msg := l.f.ValidateStaged(b, nil); !strings.Contains(msg, "route "+bad+": example.com/api is served by service billing") {
		t.Fatalf("validate = %q", msg)
	}
	r := l.apply(CmdConfigApply, b, nil)
	if r.Err != "route "+bad+": example.com/api is served by service billing" {
		t.Fatalf("apply error = %q", r.Err)
	}
	if len(l.f.Table().Exact.Get("other.com")) != 0 {
		t.Fatalf("valid part %s went active although apply failed", good)
	}
	// Same service, second instance: joins the pool.
	c := l.register("billing", "c")
	l.mustOK(CmdRouteAdd, c, route("example.com", "/api", "http://127.0.0.1:4"))
	l.mustOK(CmdConfigApply, c, nil)
	pools := l.f.Table().Exact.Get("example.com")
	if len(pools) != 1 || len(pools[0].Members) != 2 {
		t.Fatalf("same-service routes did not form one pool: %+v", pools)
	}
}

func TestSessionIsolation(t *testing.T) {
	l := newTestLog(t)
	a := l.register("svc", "a")
	b := l.register("svc", "b")
	id := l.mustOK(CmdRouteAdd, a, route("example.com", "/", "http://127.0.0.1:1"))
	for _, typ := range []CommandType{CmdRouteRemove, CmdCircuitBreakerReset} {
		if r := l.apply(typ, b, RoutePayload{RouteID: id}); r.Err != ErrRouteNotFound {
			t.Fatalf("%s on another session's route: %q", typ, r.Err)
		}
	}
	if r := l.apply(CmdRouteUpdate, b, RouteUpdatePayload{RouteID: id, Field: "path", Value: "/x"}); r.Err != ErrRouteNotFound {
		t.Fatalf("update of another session's route: %q", r.Err)
	}
	if r := l.apply(CmdHeadersSet, b, SettingPayload{Target: id, Key: "X-A", Value: "1"}); r.Err != ErrRouteNotFound {
		t.Fatalf("header on another session's route: %q", r.Err)
	}
	if r := l.apply(CmdRouteAdd, "web-nosuchsession", route("a.com", "/", "http://127.0.0.1:1")); r.Err != ErrSessionNotFound {
		t.Fatalf("unknown session: %q", r.Err)
	}
}

func TestReRegisterReplacesInOneStep(t *testing.T) {
	l := newTestLog(t)
	old := l.register("svc", "i1")
	l.mustOK(CmdRouteAdd, old, route("example.com", "/", "http://127.0.0.1:1"))
	l.mustOK(CmdConfigApply, old, nil)
	var ended []EndedSession
	l.f.Observe(func(n Notification) { ended = append(ended, n.Ended...) })
	nw := l.register("svc", "i1")
	if l.session(old) != nil || l.session(nw) == nil {
		t.Fatal("re-register did not replace the old session")
	}
	if len(ended) != 1 || ended[0].Reason != "replaced" || ended[0].Session.ID != old {
		t.Fatalf("ended = %+v", ended)
	}
	if len(l.f.Table().Exact.Get("example.com")) != 0 {
		t.Fatal("old session's routes survived the replacement")
	}
}

func TestDetachedSessionExpiresAfterGrace(t *testing.T) {
	l := newTestLog(t)
	s := l.register("svc", "a")
	l.mustOK(CmdRouteAdd, s, route("example.com", "/", "http://127.0.0.1:1"))
	l.mustOK(CmdConfigApply, s, nil)
	grace := time.Minute
	l.mustOK(CmdDetach, s, ConnPayload{Conn: "inc-1"})
	if got := l.f.ExpiredSessions(l.now+int64(grace)/2, grace); len(got) != 0 {
		t.Fatalf("expired before grace: %v", got)
	}
	// Activity restarts the grace period.
	l.now += int64(grace) / 2
	l.mustOK(CmdTouch, "", SessionsPayload{Sessions: []string{s}})
	l.now += int64(grace) - 1
	if got := l.f.ExpiredSessions(l.now, grace); len(got) != 0 {
		t.Fatalf("touch did not renew the lease: %v", got)
	}
	l.now += 2
	got := l.f.ExpiredSessions(l.now, grace)
	if len(got) != 1 {
		t.Fatalf("expired = %v", got)
	}
	l.mustOK(CmdExpire, "", SessionsPayload{Sessions: got, Grace: int64(grace)})
	if l.session(s) != nil || len(l.f.Table().Exact.Get("example.com")) != 0 {
		t.Fatal("expiry left the session or its routes")
	}
}

func TestExtendLeasesAndDetachNode(t *testing.T) {
	l := newTestLog(t)
	s := l.register("svc", "a")
	l.mustOK(CmdDetachNode, "", DetachNodePayload{Node: "n1", KeepIncarnation: "inc"})
	if !l.session(s).Attachment.Attached() {
		t.Fatal("DetachNode detached a connection of the incarnation it keeps")
	}
	l.mustOK(CmdDetachNode, "", DetachNodePayload{Node: "n1", KeepIncarnation: "newer"})
	if l.session(s).Attachment.Attached() {
		t.Fatal("DetachNode kept an attachment of an earlier incarnation")
	}
	l.now += int64(time.Hour)
	l.mustOK(CmdExtendLeases, "", nil)
	if got := l.f.ExpiredSessions(l.now+1, time.Minute); len(got) != 0 {
		t.Fatalf("extended lease expired: %v", got)
	}
}

func TestRetriedRequestAppliesOnce(t *testing.T) {
	l := newTestLog(t)
	s := l.register("svc", "a")
	e1 := l.entry(CmdRouteAdd, s, route("example.com", "/", "http://127.0.0.1:1"), "req-1")
	r1 := l.f.Apply(e1).(Result)
	e2 := l.entry(CmdRouteAdd, s, route("example.com", "/", "http://127.0.0.1:1"), "req-1")
	r2 := l.f.Apply(e2).(Result)
	if r1 != r2 {
		t.Fatalf("retry answered %+v, first try %+v", r2, r1)
	}
	if n := len(l.session(s).RouteList()); n != 1 {
		t.Fatalf("retried write applied %d times", n)
	}
}

// TestHousekeepingLeavesRequestTable: lease and staging housekeeping is
// idempotent and must not take request-ID slots from clients' writes, and
// applying one twice changes nothing more.
func TestHousekeepingLeavesRequestTable(t *testing.T) {
	l := newTestLog(t)
	s := l.register("svc", "a")
	before := len(l.f.state.Requests.Order)
	for i := range 50 {
		l.now += int64(time.Second)
		rid := fmt.Sprintf("hk-%d", i)
		for _, e := range []*raft.Log{
			l.entry(CmdTouch, "", SessionsPayload{Sessions: []string{s}}, rid+"t"),
			l.entry(CmdExtendLeases, "", nil, rid+"x"),
			l.entry(CmdDiscardStaged, "", SessionsPayload{Sessions: []string{s}, Grace: int64(time.Hour)}, rid+"d"),
			l.entry(CmdExpire, "", SessionsPayload{Sessions: []string{s}, Grace: int64(time.Hour)}, rid+"e"),
			l.entry(CmdNoop, "", nil, rid+"n"),
		} {
			if r := l.f.Apply(e).(Result); r.Err != "" {
				t.Fatalf("housekeeping entry: %s", r.Err)
			}
		}
	}
	if after := len(l.f.state.Requests.Order); after != before {
		t.Fatalf("housekeeping took %d request-table slots", after-before)
	}
	last := l.session(s).LastActivity
	// A retried touch stamped earlier than the session's activity (the
	// same entry again) moves nothing.
	l.now -= int64(10 * time.Second)
	l.f.Apply(l.entry(CmdTouch, "", SessionsPayload{Sessions: []string{s}}, "hk-0t"))
	if got := l.session(s).LastActivity; got != last {
		t.Fatalf("a repeated touch moved activity from %d to %d", last, got)
	}
	// Client writes still deduplicate.
	e := l.entry(CmdRouteAdd, s, route("example.com", "/", "http://127.0.0.1:1"), "client-1")
	l.f.Apply(e)
	l.f.Apply(l.entry(CmdRouteAdd, s, route("example.com", "/", "http://127.0.0.1:1"), "client-1"))
	if n := len(l.session(s).RouteList()); n != 1 {
		t.Fatalf("retried client write applied %d times", n)
	}
}

// TestLastChangeSkipsNoops: the last state change is the last entry that
// was not a no-op, and a restore counts as one.
func TestLastChangeSkipsNoops(t *testing.T) {
	l := newTestLog(t)
	s := l.register("svc", "a")
	l.mustOK(CmdRouteAdd, s, route("example.com", "/", "http://127.0.0.1:1"))
	change := l.f.AppliedIndex()
	noop := l.entry(CmdNoop, "", nil, "")
	if !IsNoop(noop.Data) || IsNoop(l.entry(CmdTouch, "", SessionsPayload{}, "").Data) {
		t.Fatal("IsNoop does not tell a no-op entry from others")
	}
	l.f.Apply(noop)
	l.mustOK(CmdNoop, "", nil)
	if applied, last := l.f.Applied(); last != change || applied != change+3 {
		t.Fatalf("Applied() = %d, %d; want %d, %d", applied, last, change+3, change)
	}
	l.mustOK(CmdTouch, "", SessionsPayload{Sessions: []string{s}})
	if applied, last := l.f.Applied(); last != applied {
		t.Fatalf("after a state change Applied() = %d, %d", applied, last)
	}
	b, err := l.f.SnapshotBytes()
	if err != nil {
		t.Fatal(err)
	}
	g := New()
	if err := g.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		t.Fatal(err)
	}
	if applied, last := g.Applied(); applied != last || applied != l.f.AppliedIndex() {
		t.Fatalf("after restore Applied() = %d, %d", applied, last)
	}
}

func TestMaintenanceTargets(t *testing.T) {
	l := newTestLog(t)
	s := l.register("svc", "a")
	r1 := l.mustOK(CmdRouteAdd, s, route("a.com", "/api", "http://127.0.0.1:1"))
	r2 := l.mustOK(CmdRouteAdd, s, route("b.com", "/web", "http://127.0.0.1:2"))
	l.mustOK(CmdConfigApply, s, nil)
	if got := l.mustOK(CmdMaintEnter, s, MaintPayload{Target: "/web"}); got != r2 {
		t.Fatalf("path target resolved to %q", got)
	}
	if got := l.mustOK(CmdMaintEnter, s, MaintPayload{Target: "a.com", Backend: "http://127.0.0.1:9"}); got != r1 {
		t.Fatalf("domain target resolved to %q", got)
	}
	m := l.f.Table().Routes.Get(r1)[0]
	if !m.InMaintenance || m.MaintenanceBackend != "http://127.0.0.1:9" {
		t.Fatalf("member = %+v", m)
	}
	if r := l.apply(CmdMaintEnter, s, MaintPayload{Target: "r99"}); r.Err != ErrRouteNotFound {
		t.Fatalf("unknown route target: %q", r.Err)
	}
	l.mustOK(CmdMaintExit, s, MaintPayload{Target: TargetAll})
	if len(l.session(s).Maintenance.Routes) != 0 || l.f.Table().Routes.Get(r1)[0].InMaintenance {
		t.Fatal("maintenance not left")
	}
}

func TestDrainSchedule(t *testing.T) {
	l := newTestLog(t)
	s := l.register("svc", "a")
	end := l.mustOK(CmdDrainStart, s, DrainPayload{Duration: int64(10 * time.Second)})
	want := time.Unix(0, l.now).Add(10 * time.Second).UTC().Format(time.RFC3339)
	if end != want {
		t.Fatalf("drain end = %q, want %q", end, want)
	}
	d := l.session(s).Drain
	if got := d.TrafficShare(l.now + int64(5*time.Second)); got < 0.49 || got > 0.51 {
		t.Fatalf("share at half time = %v", got)
	}
	l.mustOK(CmdDrainCancel, s, nil)
	if r := l.apply(CmdDrainCancel, s, nil); r.Err != ErrNoDrain {
		t.Fatalf("second cancel: %q", r.Err)
	}
}

// randomWorkload applies n random commands, the same for the same seed.
func randomWorkload(t *testing.T, l *testLog, seed int64, n int) {
	rng := rand.New(rand.NewSource(seed))
	var sessions []string
	services := []string{"a", "b", "c"}
	for i := 0; i < n; i++ {
		l.now += int64(rng.Intn(int(time.Second)))
		if len(sessions) == 0 || rng.Intn(10) == 0 {
			id := fmt.Sprintf("%s-s%d", services[rng.Intn(3)], i)
			svc := strings.SplitN(id, "-", 2)[0]
			l.apply(CmdRegister, "", RegisterPayload{SessionID: id, Service: svc, Instance: fmt.Sprint(rng.Intn(4)), Conn: "c"})
			sessions = append(sessions, id)
			continue
		}
		s := sessions[rng.Intn(len(sessions))]
		rid := fmt.Sprintf("r%d", 1+rng.Intn(i+1))
		target := []string{TargetAll, rid}[rng.Intn(2)]
		switch rng.Intn(12) {
		case 0, 1, 2:
			l.apply(CmdRouteAdd, s, route(fmt.Sprintf("d%d.com", rng.Intn(5)), fmt.Sprintf("/p%d", rng.Intn(3)), "http://127.0.0.1:80"))
		case 3:
			l.apply(CmdRouteRemove, s, RoutePayload{RouteID: rid})
		case 4, 5:
			l.apply(CmdConfigApply, s, nil)
		case 6:
			l.apply(CmdHeadersSet, s, SettingPayload{Target: target, Key: "X-N", Value: fmt.Sprint(rng.Intn(9))})
		case 7:
			l.apply(CmdOptionsSet, s, SettingPayload{Target: target, Key: OptRetries, Value: fmt.Sprint(rng.Intn(5))})
		case 8:
			l.apply(CmdConfigRollback, s, nil)
		case 9:
			l.apply(CmdDetach, s, ConnPayload{Conn: "c"})
			l.apply(CmdExpire, "", SessionsPayload{Sessions: []string{s}, Grace: int64(time.Second)})
		case 10:
			l.apply(CmdMaintEnter, s, MaintPayload{Target: TargetAll})
		case 11:
			l.apply(CmdRouteUpdate, s, RouteUpdatePayload{RouteID: rid, Field: "priority", Value: fmt.Sprint(rng.Intn(3))})
		}
	}
}

func TestSameLogSameSnapshotAndRestoreRoundTrip(t *testing.T) {
	for seed := int64(1); seed <= 5; seed++ {
		a, b := newTestLog(t), newTestLog(t)
		randomWorkload(t, a, seed, 2000)
		randomWorkload(t, b, seed, 2000)
		sa, err := a.f.SnapshotBytes()
		if err != nil {
			t.Fatal(err)
		}
		sb, _ := b.f.SnapshotBytes()
		if !bytes.Equal(sa, sb) {
			t.Fatalf("seed %d: two FSMs fed the same log differ", seed)
		}
		c := New()
		if err := c.Restore(io.NopCloser(bytes.NewReader(sa))); err != nil {
			t.Fatal(err)
		}
		sc, _ := c.SnapshotBytes()
		if !bytes.Equal(sa, sc) {
			t.Fatalf("seed %d: restore differs from the original", seed)
		}
		// The live table carries the index of the last entry that changed
		// it; the restored one the snapshot's index. Compare the content.
		live, restored := *a.f.Table(), *c.Table()
		live.Index, restored.Index = 0, 0
		ta, _ := json.Marshal(live)
		tc, _ := json.Marshal(restored)
		if !bytes.Equal(ta, tc) {
			t.Fatalf("seed %d: restored routing table differs", seed)
		}
	}
}

func TestUndecodableEntryPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("a corrupt entry was applied silently")
		}
	}()
	New().Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: []byte{7, '{'}})
}

func TestProvisionalTableFromTheLocalLog(t *testing.T) {
	l := newTestLog(t)
	s := l.register("svc", "a")
	// The "local log": entries a restarted node has but has not applied.
	pending := []*raft.Log{
		l.entry(CmdRouteAdd, s, route("example.com", "/", "http://127.0.0.1:1"), ""),
		l.entry(CmdConfigApply, s, nil, ""),
		l.entry(CmdNoop, "", nil, ""),
	}
	var published []*RoutingTable
	l.f.OnTable(func(t *RoutingTable) { published = append(published, t) })
	idx, err := l.f.PublishProvisional(pending)
	if err != nil || idx != pending[2].Index {
		t.Fatalf("PublishProvisional = %d, %v", idx, err)
	}
	last := published[len(published)-1]
	if len(last.Exact.Get("example.com")) != 1 || last.Index != idx {
		t.Fatalf("provisional table does not serve the logged route: %+v", last)
	}
	if l.f.AppliedIndex() >= idx || len(l.f.Table().Exact.Get("example.com")) != 0 {
		t.Fatal("PublishProvisional changed the applied state")
	}
	// Catching up: older applied tables are not published over it...
	n := len(published)
	l.f.ApplyBatch(pending[:2])
	if len(published) != n {
		t.Fatal("an applied table older than the provisional one was published")
	}
	// ...and reaching its index publishes the committed table.
	l.f.ApplyBatch(pending[2:])
	if len(published) != n+1 || len(published[n].Exact.Get("example.com")) != 1 {
		t.Fatalf("committed table not published on catching up (%d tables)", len(published))
	}
}
