package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"time"

	"github.com/hashicorp/raft"

	"github.com/raftgate/raftgate/fsm"
	"github.com/raftgate/raftgate/proxy"
)

// Scale measures the state machine and the proxy's table in-process, with
// no network and no raft: N routes over the configured sessions, for each
// N: the latency of applying one more route (fsm apply + table build +
// proxy.Update, as every node does per CONFIG_APPLY), the cost of a
// request that looks up a known host, heap bytes per route, snapshot size
// and restore time.
func Scale(ctx context.Context, o Options) (*Report, error) {
	o = o.withDefaults()
	rep := newReport("scale", "routes over sessions: apply latency, lookup, memory, snapshot, restore (in-process)")
	start := time.Now()
	rep.Columns = []Column{
		{Key: "routes", Header: "routes", Format: "%.0f"},
		{Key: "sessions", Header: "sessions", Format: "%.0f"},
		{Key: "apply_p50_ms", Header: "apply p50 ms", Format: "%.3f"},
		{Key: "apply_p99_ms", Header: "apply p99 ms", Format: "%.3f"},
		{Key: "update_p50_ms", Header: "of which proxy.Update ms", Format: "%.3f"},
		{Key: "lookup_ns", Header: "404 lookup ns/req", Format: "%.0f"},
		{Key: "bytes_per_route", Header: "heap B/route", Format: "%.0f"},
		{Key: "snapshot_mib", Header: "snapshot MiB", Format: "%.2f"},
		{Key: "restore_ms", Header: "restore ms", Format: "%.0f"},
		{Key: "restore_proxy_ms", Header: "restore+proxy ms", Format: "%.0f"},
		{Key: "setup_s", Header: "setup s", Format: "%.1f"},
	}
	rep.Charts = []Chart{{Key: "apply_p50_ms", Title: "apply latency p50, ms"}, {Key: "bytes_per_route", Title: "heap bytes per route"}, {Key: "restore_ms", Title: "snapshot restore, ms"}}
	for _, n := range o.Sizes {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		m, err := scaleOne(ctx, n, o.Sessions, o.Quick)
		if err != nil {
			return nil, fmt.Errorf("%d routes: %w", n, err)
		}
		rep.addRow(fmt.Sprintf("%d routes", n), m)
		fmt.Fprintf(o.Progress, "scale: %d routes: apply p50 %.2fms, %.0f B/route, restore %.0fms\n", n, m["apply_p50_ms"], m["bytes_per_route"], m["restore_ms"])
		runtime.GC()
	}
	first, last := rep.Rows[0], rep.Rows[len(rep.Rows)-1]
	x := last.Metrics["apply_p50_ms"] / first.Metrics["apply_p50_ms"]
	rep.target("apply latency growth", fmt.Sprintf("%s ≤ 2× %s", last.Name, first.Name), fmt.Sprintf("%.1f× (%.2f ms vs %.2f ms)", x, last.Metrics["apply_p50_ms"], first.Metrics["apply_p50_ms"]), x <= 2)
	bpr := last.Metrics["bytes_per_route"]
	rep.target("memory per route", "≤ 2048 B", fmt.Sprintf("%.0f B at %s", bpr, last.Name), bpr <= 2048)
	rt := last.Metrics["restore_proxy_ms"]
	rep.target("snapshot restore", "≤ 2 s", fmt.Sprintf("%.0f ms at %s (fsm %.0f ms)", rt, last.Name, last.Metrics["restore_ms"]), rt <= 2000)
	rep.note("in-process: no raft commit, fsync or network; a real CONFIG_APPLY adds the control-bench latency")
	rep.note("heap B/route = live heap growth (fsm state + fsm.RoutingTable + proxy table) from sessions-only to all routes applied, after GC")
	rep.note("404 lookup = proxy.ServeHTTP for a known host with a path none of its routes match: the table lookup plus a short 404 page, no backend")
	rep.Command = fmt.Sprintf("sizes %v over %d sessions; ROUTE_ADD_BULK per session + CONFIG_APPLY, fed to fsm.ApplyBatch in batches of 512 entries", o.Sizes, o.Sessions)
	rep.Elapsed = time.Since(start).Seconds()
	return rep, nil
}

// scaleLog feeds encoded commands to an FSM with increasing indexes.
type scaleLog struct {
	f     *fsm.FSM
	index uint64
	at    int64
	batch []*raft.Log
}

func (l *scaleLog) add(t fsm.CommandType, session string, p any) error {
	cmd, err := fsm.NewCommand(t, session, p)
	if err != nil {
		return err
	}
	l.at += int64(time.Millisecond)
	l.index++
	cmd.At, cmd.Node, cmd.RequestID = l.at, "bench", fmt.Sprintf("req-%d", l.index)
	b, err := cmd.Encode()
	if err != nil {
		return err
	}
	l.batch = append(l.batch, &raft.Log{Index: l.index, Term: 1, Type: raft.LogCommand, Data: b})
	if len(l.batch) >= 512 {
		return l.flush()
	}
	return nil
}

func (l *scaleLog) flush() error {
	if len(l.batch) == 0 {
		return nil
	}
	out := l.f.ApplyBatch(l.batch)
	l.batch = l.batch[:0]
	for _, r := range out {
		if res, ok := r.(fsm.Result); ok && res.Err != "" {
			return fmt.Errorf("apply: %s", res.Err)
		}
	}
	return nil
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// scaleFixture is an FSM with a subscribed proxy holding a given number of
// routes, and the log that feeds it.
type scaleFixture struct {
	f     *fsm.FSM
	p     *proxy.Proxy
	l     *scaleLog
	ids   []string
	setup time.Duration
	// bytesPerRoute is the live heap growth per route from sessions only
	// to every route applied.
	bytesPerRoute float64
	// lastUpdate is how long the proxy took to take the last table.
	lastUpdate time.Duration
}

// newScaleFixture registers sessions and applies routes spread round robin
// over them, as scale measures. The caller closes fx.p.
func newScaleFixture(ctx context.Context, routes, sessions int) (*scaleFixture, error) {
	t0 := time.Now()
	f := fsm.New()
	p := proxy.New(proxy.Config{NodeID: "bench"})
	fx := &scaleFixture{f: f, p: p, l: &scaleLog{f: f, at: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()}}
	f.OnTable(func(t *fsm.RoutingTable) {
		t0 := time.Now()
		p.Update(t)
		fx.lastUpdate = time.Since(t0)
	})
	fail := func(err error) (*scaleFixture, error) {
		p.Close()
		return nil, err
	}
	l := fx.l
	fx.ids = make([]string, sessions)
	for i := range sessions {
		fx.ids[i] = fmt.Sprintf("svc%d-%032d", i, i)
		if err := l.add(fsm.CmdRegister, "", fsm.RegisterPayload{SessionID: fx.ids[i], Service: fmt.Sprintf("svc%d", i), Instance: "i"}); err != nil {
			return fail(err)
		}
	}
	if err := l.flush(); err != nil {
		return fail(err)
	}
	base := heapInUse()
	// Routes spread round robin over the sessions; 100 distinct backends.
	per := make([][]fsm.RouteSpec, sessions)
	for r := range routes {
		s := r % sessions
		per[s] = append(per[s], fsm.RouteSpec{
			Domains: []string{fmt.Sprintf("r%d.svc%d.scale.test", r, s)}, Path: "/",
			Backend: fmt.Sprintf("http://10.0.%d.%d:8080", (r%100)/250, r%100+1),
		})
	}
	for s, specs := range per {
		if len(specs) == 0 {
			continue
		}
		if err := l.add(fsm.CmdRouteAddBulk, fx.ids[s], fsm.RouteAddBulkPayload{Routes: specs}); err != nil {
			return fail(err)
		}
		if err := l.add(fsm.CmdConfigApply, fx.ids[s], fsm.ApplyPayload{}); err != nil {
			return fail(err)
		}
		if ctx.Err() != nil {
			return fail(ctx.Err())
		}
	}
	if err := l.flush(); err != nil {
		return fail(err)
	}
	per = nil
	fx.setup = time.Since(t0)
	if got := f.Table().Routes.Len(); got != routes {
		return fail(fmt.Errorf("table has %d routes, want %d", got, routes))
	}
	fx.bytesPerRoute = float64(int64(heapInUse())-int64(base)) / float64(routes)
	return fx, nil
}

// stageExtraRoute stages the k-th extra route on one of the sessions.
func (fx *scaleFixture) stageExtraRoute(k int) (session string, err error) {
	s := fx.ids[k%len(fx.ids)]
	if err := fx.l.add(fsm.CmdRouteAdd, s, fsm.RouteSpec{Domains: []string{fmt.Sprintf("extra%d.scale.test", k)}, Path: "/", Backend: "http://10.0.0.1:8080"}); err != nil {
		return "", err
	}
	return s, fx.l.flush()
}

// applyStaged applies a session's staged configuration alone, as one
// CONFIG_APPLY entry, and returns once every subscriber has the table.
func (fx *scaleFixture) applyStaged(session string) error {
	if err := fx.l.add(fsm.CmdConfigApply, session, fsm.ApplyPayload{}); err != nil {
		return err
	}
	return fx.l.flush()
}

func scaleOne(ctx context.Context, routes, sessions int, quick bool) (map[string]float64, error) {
	fx, err := newScaleFixture(ctx, routes, sessions)
	if err != nil {
		return nil, err
	}
	defer fx.p.Close()
	f, p := fx.f, fx.p

	// One more route, applied alone, as a CONFIG_APPLY would be.
	samples := 200
	if quick {
		samples = 5
	}
	var apply, update []float64
	for k := range samples {
		s, err := fx.stageExtraRoute(k)
		if err != nil {
			return nil, err
		}
		ta := time.Now()
		if err := fx.applyStaged(s); err != nil {
			return nil, err
		}
		apply = append(apply, ms(time.Since(ta)))
		update = append(update, ms(fx.lastUpdate))
	}

	// A request for a known host whose routes do not match the path.
	lookups := 200_000
	if quick {
		lookups = 20_000
	}
	w := &discardWriter{h: http.Header{}}
	reqs := make([]*http.Request, 1024)
	for i := range reqs {
		r := i * 7919 % routes
		reqs[i] = httptest.NewRequest(http.MethodGet, "http://x/", nil)
		reqs[i].Host = fmt.Sprintf("r%d.svc%d.scale.test", r, r%sessions)
		reqs[i].URL.Path = "nomatch"
	}
	tl := time.Now()
	for i := range lookups {
		clear(w.h)
		p.ServeHTTP(w, reqs[i%len(reqs)])
	}
	lookupNS := float64(time.Since(tl).Nanoseconds()) / float64(lookups)
	if w.code != http.StatusNotFound {
		return nil, fmt.Errorf("lookup probe answered %d, want 404", w.code)
	}

	snap, err := f.SnapshotBytes()
	if err != nil {
		return nil, err
	}
	f2 := fsm.New()
	tr := time.Now()
	if err := f2.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		return nil, err
	}
	restore := time.Since(tr)
	f3 := fsm.New()
	p3 := proxy.New(proxy.Config{NodeID: "bench"})
	defer p3.Close()
	f3.OnTable(p3.Update)
	tr3 := time.Now()
	if err := f3.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		return nil, err
	}
	restoreProxy := time.Since(tr3)
	return map[string]float64{
		"routes": float64(routes), "sessions": float64(sessions),
		"apply_p50_ms": quantile(apply, 0.5), "apply_p99_ms": quantile(apply, 0.99), "update_p50_ms": quantile(update, 0.5),
		"lookup_ns": lookupNS, "bytes_per_route": fx.bytesPerRoute, "snapshot_mib": float64(len(snap)) / (1 << 20),
		"restore_ms": ms(restore), "restore_proxy_ms": ms(restoreProxy), "setup_s": fx.setup.Seconds(),
	}, nil
}

// discardWriter is an http.ResponseWriter that keeps only the status.
type discardWriter struct {
	h    http.Header
	code int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(code int)        { d.code = code }
