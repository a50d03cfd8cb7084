package chaos

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/raftgate/raftgate/cmd/raftgate/localcluster"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestParseScenarios(t *testing.T) {
	got, err := ParseScenarios("leader-kill, pause,leader-kill")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0] != LeaderKill || got[1] != Pause || got[2] != LeaderKill {
		t.Fatalf("got %v", got)
	}
	all, err := ParseScenarios("all")
	if err != nil || len(all) != len(AllScenarios) {
		t.Fatalf("all: %v %v", all, err)
	}
	for _, bad := range []string{"", "leader-kil", "all,nope"} {
		if _, err := ParseScenarios(bad); err == nil {
			t.Errorf("ParseScenarios(%q) accepted", bad)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	if _, err := (Config{Nodes: 4, Binary: "x"}).withDefaults(); err == nil {
		t.Error("4 nodes accepted")
	}
	if _, err := (Config{}).withDefaults(); err == nil {
		t.Error("no binary accepted")
	}
	c, err := Config{Binary: "x"}.withDefaults()
	if err != nil || c.Nodes != 3 || c.Clients != 8 || c.Rounds != 1 || c.OpTimeout <= 5*time.Second {
		t.Fatalf("defaults: %+v %v", c, err)
	}
}

func TestClassify(t *testing.T) {
	cases := []struct {
		resp string
		err  error
		want outcome
	}{
		{"ROUTE_OK|r1", nil, outOK},
		{"OK", nil, outOK},
		{"", errors.New("read: EOF"), outUnknown},
		{"ERROR|no leader: hold timeout", nil, outUnknown},
		{"ERROR|timeout: the cluster did not answer in time", nil, outUnknown},
		{"ERROR|cluster unavailable: leadership lost", nil, outUnknown},
		{"ERROR|node is shutting down", nil, outUnknown},
		{"ERROR|route not found", nil, outNotFound},
		{"ERROR|session not found", nil, outExpired},
		{"ERROR|invalid backend url", nil, outFailed},
	}
	for _, c := range cases {
		if got := classify(c.resp, c.err); got != c.want {
			t.Errorf("classify(%q, %v) = %d, want %d", c.resp, c.err, got, c.want)
		}
	}
}

// op builds a porcupine operation of session 1.
func op(client int, kind opKind, tag int, call, ret int64, out opOutput) porcupine.Operation {
	return porcupine.Operation{ClientId: client, Input: opInput{Session: 1, Kind: kind, Tag: tag}, Call: call, Output: out, Return: ret}
}

func list(active, staged []int) opOutput { return opOutput{Active: active, Staged: staged} }

func TestModelSemantics(t *testing.T) {
	st := sessionState{}
	steps := []struct {
		in   opInput
		out  opOutput
		ok   bool
		want sessionState
	}{
		{opInput{Kind: opAdd, Tag: 1}, opOutput{}, true, sessionState{A: "", E: "1"}},
		{opInput{Kind: opList}, list(nil, []int{1}), true, sessionState{A: "", E: "1"}},
		{opInput{Kind: opApply}, opOutput{}, true, sessionState{A: "1", E: "1"}},
		{opInput{Kind: opAdd, Tag: 2}, opOutput{Unknown: true}, true, sessionState{A: "1", E: "1,2"}},
		{opInput{Kind: opRemove, Tag: 1}, opOutput{}, true, sessionState{A: "1", E: "2"}},
		// Removing a route pending removal is OK and changes nothing.
		{opInput{Kind: opRemove, Tag: 1}, opOutput{}, true, sessionState{A: "1", E: "2"}},
		{opInput{Kind: opRemove, Tag: 9}, opOutput{NotFound: true}, true, sessionState{A: "1", E: "2"}},
		{opInput{Kind: opApply}, opOutput{}, true, sessionState{A: "2", E: "2"}},
		{opInput{Kind: opRemove, Tag: 1}, opOutput{NotFound: true}, true, sessionState{A: "2", E: "2"}},
	}
	for i, s := range steps {
		ok, next := step(st, s.in, s.out)
		if ok != s.ok || next != s.want {
			t.Fatalf("step %d %s: ok=%v state=%+v, want ok=%v %+v", i, s.in.Kind, ok, next, s.ok, s.want)
		}
		st = next
	}
	// What the model must refuse.
	if ok, _ := step(sessionState{A: "1", E: "1"}, opInput{Kind: opList}, list(nil, nil)); ok {
		t.Error("a read missing an applied route was accepted")
	}
	if ok, _ := step(sessionState{E: "3"}, opInput{Kind: opRemove, Tag: 3}, opOutput{NotFound: true}); ok {
		t.Error("route not found for a staged route was accepted")
	}
	if ok, _ := step(sessionState{}, opInput{Kind: opRemove, Tag: 3}, opOutput{}); ok {
		t.Error("removing a route that never existed was accepted")
	}
	if ok, _ := step(sessionState{E: "4"}, opInput{Kind: opAdd, Tag: 4}, opOutput{}); ok {
		t.Error("a second apply of one ROUTE_ADD was accepted")
	}
}

func TestCheckerFindsStaleRead(t *testing.T) {
	// Client 0 adds and applies route 1; client 1 then reads, after the
	// apply returned, and does not see it: a stale read.
	history := []porcupine.Operation{
		op(0, opAdd, 1, 0, 10, opOutput{}),
		op(0, opApply, 0, 11, 20, opOutput{}),
		op(1, opList, 0, 30, 40, list(nil, nil)),
	}
	if porcupine.CheckOperations(routeModel, history) {
		t.Fatal("stale read judged linearizable")
	}
	// The same read overlapping the apply is fine.
	history[2] = op(1, opList, 0, 15, 40, list(nil, []int{1}))
	if !porcupine.CheckOperations(routeModel, history) {
		t.Fatal("concurrent read judged not linearizable")
	}
}

func TestCheckerUnknownWrites(t *testing.T) {
	inf := int64(math.MaxInt64)
	// An add with unknown outcome may show up later...
	seen := []porcupine.Operation{
		op(0, opAdd, 1, 0, inf, opOutput{Unknown: true}),
		op(1, opList, 0, 50, 60, list(nil, nil)),
		op(1, opList, 0, 70, 80, list(nil, []int{1})),
	}
	if !porcupine.CheckOperations(routeModel, seen) {
		t.Fatal("an unknown write taking effect late was refused")
	}
	// ...or never; but once seen it cannot vanish again.
	flicker := append(seen, op(1, opList, 0, 90, 100, list(nil, nil)))
	if porcupine.CheckOperations(routeModel, flicker) {
		t.Fatal("a write that appeared and vanished was accepted")
	}
}

func TestVisualizationOnFailure(t *testing.T) {
	history := []porcupine.Operation{
		op(0, opAdd, 1, 0, 10, opOutput{}),
		op(1, opList, 0, 20, 30, list(nil, nil)),
	}
	res, info := porcupine.CheckOperationsVerbose(routeModel, history, time.Second)
	if res != porcupine.Illegal {
		t.Fatalf("result %v", res)
	}
	path := filepath.Join(t.TempDir(), "v.html")
	if err := porcupine.VisualizePath(routeModel, info, path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || !strings.Contains(string(b), "ROUTE_LIST") {
		t.Fatalf("visualization: %v, %d bytes", err, len(b))
	}
}

func TestUnavailability(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	acks := []time.Duration{ms(100), ms(200), ms(300), ms(1900), ms(2000), ms(2100)}
	// Fault at 350 ms, recovered at 1500 ms: first ack after is 1900.
	if got := unavailability(acks, ms(350), ms(1500)); got != ms(1550) {
		t.Errorf("got %v", got)
	}
	// No gap at all.
	if got := unavailability(acks, ms(1950), ms(2050)); got != ms(100) {
		t.Errorf("got %v", got)
	}
	// No ack after the fault: counts to the end of the window.
	if got := unavailability(acks, ms(2500), ms(3000)); got != ms(500) {
		t.Errorf("got %v", got)
	}
}

func TestListOutput(t *testing.T) {
	rs, err := parseList(`ROUTE_LIST_OK|[{"route_id":"r1","path":"/t1","status":"active"},{"route_id":"r2","path":"/t2","status":"pending_removal"},{"route_id":"r3","path":"/t3","status":"staged"}]`)
	if err != nil {
		t.Fatal(err)
	}
	out, err := listOutput(rs)
	if err != nil {
		t.Fatal(err)
	}
	if encodeTags(out.Active) != "1,2" || encodeTags(out.Staged) != "1,3" {
		t.Fatalf("active %v staged %v", out.Active, out.Staged)
	}
	if _, err := listOutput([]listRoute{{RouteID: "r9", Path: "/other", Status: "active"}}); err == nil {
		t.Error("foreign path accepted")
	}
}

func TestProbeWindows(t *testing.T) {
	p := newProber()
	n := &localcluster.Node{ID: "node1"}
	t0 := time.Now()
	end := p.exclude(n)
	end()
	w := p.windows["node1"][0]
	p.failures = []probeFailure{
		{node: "node1", start: w.from.Add(-time.Second), end: w.from.Add(time.Millisecond)}, // in flight at the fault
		{node: "node1", start: w.to.Add(time.Second), end: w.to.Add(2 * time.Second)},       // after: counts
		{node: "node2", start: t0, end: t0.Add(time.Millisecond)},                           // other node: counts
	}
	p.total = 10
	total, counted, excluded := p.tally()
	if total != 10 || len(counted) != 2 || excluded != 1 {
		t.Fatalf("total %d counted %d excluded %d", total, len(counted), excluded)
	}
}
