package proxy

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/raftgate/raftgate/fsm"
)

// defaultHealthTimeout applies when a check has no timeout of its own.
const defaultHealthTimeout = 5 * time.Second

// Update compiles t and swaps it in atomically. Requests already running
// finish on the table they started with. Runtime state (health, breakers,
// statistics, rate-limit buckets, connections) carries over for every
// route whose relevant configuration is unchanged. When t's delta is based
// on the table served now, only the changed routes and hosts are compiled,
// so the cost follows the change, not the table. Safe to call concurrently
// with ServeHTTP; calls are serialized.
func (p *Proxy) Update(t *fsm.RoutingTable) {
	if t == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.trRefs == nil {
		p.trRefs = make(map[transportKey]int)
		p.sessRoutes = make(map[string]int)
	}
	cur := p.table.Load()
	if t.Gen != 0 && t.Gen == cur.gen {
		return // the table served already
	}
	if t.Delta != nil && cur.gen != 0 && t.Delta.Base == cur.gen {
		p.patchLocked(cur, t)
		return
	}
	p.compileAllLocked(t)
}

// compileAllLocked compiles every route and pool of t. p.mu is held.
func (p *Proxy) compileAllLocked(t *fsm.RoutingTable) {
	nt := &table{index: t.Index, gen: t.Gen}
	sessions := make(map[string]*atomic.Int64)
	sessRoutes := make(map[string]int)
	trRefs := make(map[transportKey]int)
	usedTr := make(map[transportKey]bool)
	compiled := fsm.NewShardMapBuilder[*routeCfg](t.Routes.Len())
	var released []*limiter
	// Route states are kept in place: dropping the few that left is
	// cheaper than re-inserting every route into a new map.
	for id, rs := range p.routes {
		if ms := t.Routes.Get(id); len(ms) == 0 {
			if rs.lim != nil {
				released = append(released, rs.lim)
			}
			delete(p.routes, id)
		}
	}

	for id, ms := range t.Routes.All() {
		if len(ms) == 0 {
			continue
		}
		rs := p.routes[id]
		if rs == nil {
			rs = &routeState{id: id}
			p.routes[id] = rs
		}
		sid := ms[0].SessionID
		sess := sessions[sid]
		if sess == nil {
			sess = p.sessions[sid]
			if sess == nil {
				sess = new(atomic.Int64)
			}
			sessions[sid] = sess
		}
		sessRoutes[sid]++
		rc, old := p.compileRouteLocked(ms[0], rs, usedTr)
		if old != nil {
			released = append(released, old)
		}
		for _, k := range transportKeys(rc) {
			trRefs[k]++
		}
		rc.sessInflight = sess
		compiled.Set(id, rc)
	}
	nt.routeMap = compiled.Build()
	nt.exact = compilePools(t.Exact, nt.routeMap.Get)
	nt.wildcard = compilePools(t.Wildcard, nt.routeMap.Get)

	p.sessions, p.sessRoutes, p.trRefs = sessions, sessRoutes, trRefs
	p.table.Store(nt)

	for _, l := range released {
		l.release()
	}
	for k, te := range p.transports {
		if !usedTr[k] {
			te.closeIdle()
			delete(p.transports, k)
		}
	}
	p.reconcileCheckersLocked(nt)
	p.log.Debug("routing table compiled", "index", t.Index, "routes", nt.routeMap.Len())
}

// patchLocked compiles the routes and hosts t.Delta names on top of cur,
// the table compiled from t.Delta.Base, and swaps the result in. Every pool
// holding a changed route is on a changed host (the fsm recomputes every
// host of a changed session), so unchanged pools keep valid routeCfgs.
// p.mu is held.
func (p *Proxy) patchLocked(cur *table, t *fsm.RoutingTable) {
	d := t.Delta
	setRoutes := make(map[string]*routeCfg, len(d.Routes))
	var delRoutes []string
	var released []*limiter
	usedTr := make(map[transportKey]bool)
	dropped := make(map[transportKey]bool)
	unref := func(id string) {
		rc := cur.routeMap.Get(id)
		if rc == nil {
			return
		}
		for _, k := range transportKeys(rc) {
			if p.trRefs[k]--; p.trRefs[k] <= 0 {
				delete(p.trRefs, k)
				dropped[k] = true
			}
		}
	}
	for _, id := range d.Routes {
		ms := t.Routes.Get(id)
		rs := p.routes[id]
		_, existed := cur.routeMap.Lookup(id)
		if len(ms) == 0 {
			if rs != nil {
				if rs.lim != nil {
					released = append(released, rs.lim)
				}
				unref(id)
				p.stopCheckerLocked(rs.health)
				delete(p.routes, id)
			}
			if existed {
				delRoutes = append(delRoutes, id)
				if rs != nil {
					p.dropSessionRouteLocked(rs.session)
				}
			}
			continue
		}
		if rs == nil {
			rs = &routeState{id: id}
			p.routes[id] = rs
		}
		sid := ms[0].SessionID
		if !existed {
			p.sessRoutes[sid]++
		}
		sess := p.sessions[sid]
		if sess == nil {
			sess = new(atomic.Int64)
			p.sessions[sid] = sess
		}
		oldHealth := rs.health
		unref(id)
		rc, old := p.compileRouteLocked(ms[0], rs, usedTr)
		if old != nil {
			released = append(released, old)
		}
		for _, k := range transportKeys(rc) {
			p.trRefs[k]++
			delete(dropped, k)
		}
		if oldHealth != rs.health {
			p.stopCheckerLocked(oldHealth)
			p.startCheckerLocked(rs.health)
		}
		rc.sessInflight = sess
		setRoutes[id] = rc
	}
	get := func(id string) *routeCfg {
		if rc, ok := setRoutes[id]; ok {
			return rc
		}
		return cur.routeMap.Get(id)
	}
	nt := &table{
		index:    t.Index,
		gen:      t.Gen,
		routeMap: cur.routeMap.With(setRoutes, delRoutes),
	}
	nt.exact = patchPools(cur.exact, t.Exact, d.Exact, get)
	nt.wildcard = patchPools(cur.wildcard, t.Wildcard, d.Wildcard, get)
	p.table.Store(nt)

	for _, l := range released {
		l.release()
	}
	for k := range dropped {
		if te, ok := p.transports[k]; ok {
			te.closeIdle()
			delete(p.transports, k)
		}
	}
	p.log.Debug("routing table patched", "index", t.Index, "routes", nt.routeMap.Len(),
		"changed_routes", len(d.Routes), "changed_hosts", len(d.Exact)+len(d.Wildcard))
}

// transportKeys lists the transports rc uses (with repeats), derived from
// the compiled route rather than stored per route to keep routes small.
func transportKeys(rc *routeCfg) []transportKey {
	var ks []transportKey
	if rc.rt != nil {
		o := rc.opts
		k := transportKey{scheme: rc.target.scheme, host: rc.target.host, skipVerify: o.TLSSkipVerify, h2: o.HTTP2, timeout: o.Timeout}
		plain := k
		plain.h2 = false
		ks = append(ks, k, plain)
	}
	if rc.maintRT != nil {
		ks = append(ks, maintTransportKey(rc))
	}
	return ks
}

func maintTransportKey(rc *routeCfg) transportKey {
	return transportKey{scheme: rc.maintTgt.scheme, host: rc.maintTgt.host, timeout: rc.opts.Timeout}
}

// dropSessionRouteLocked forgets one route of session sid, and the
// session's in-flight counter with its last route. p.mu is held.
func (p *Proxy) dropSessionRouteLocked(sid string) {
	if p.sessRoutes[sid]--; p.sessRoutes[sid] <= 0 {
		delete(p.sessRoutes, sid)
		delete(p.sessions, sid)
	}
}

// startCheckerLocked runs h's checker unless it runs already or the proxy
// is not started (Start reconciles then). p.mu is held.
func (p *Proxy) startCheckerLocked(h *healthState) {
	if h == nil || p.runCtx == nil || p.runCtx.Err() != nil {
		return
	}
	if _, ok := p.checkers[h]; ok {
		return
	}
	ctx, cancel := context.WithCancel(p.runCtx)
	p.checkers[h] = cancel
	p.wg.Add(1)
	go p.runChecker(ctx, h)
}

// stopCheckerLocked stops h's checker. Health states belong to one route,
// so a state its route dropped is used by no table. p.mu is held.
func (p *Proxy) stopCheckerLocked(h *healthState) {
	if h == nil {
		return
	}
	if cancel, ok := p.checkers[h]; ok {
		cancel()
		delete(p.checkers, h)
	}
}

// patchPools recompiles the pools of the changed keys of src on top of cur.
func patchPools(cur fsm.ShardMap[[]*pool], src fsm.ShardMap[[]*fsm.Pool], keys []string, routes func(string) *routeCfg) fsm.ShardMap[[]*pool] {
	set := make(map[string][]*pool, len(keys))
	var del []string
	for _, k := range keys {
		if ps := compileHost(src.Get(k), routes); len(ps) > 0 {
			set[k] = ps
		} else {
			del = append(del, k)
		}
	}
	return cur.With(set, del)
}

func compilePools(src fsm.ShardMap[[]*fsm.Pool], routes func(string) *routeCfg) fsm.ShardMap[[]*pool] {
	dst := fsm.NewShardMapBuilder[[]*pool](src.Len())
	for key, ps := range src.All() {
		if out := compileHost(ps, routes); len(out) > 0 {
			dst.Set(key, out)
		}
	}
	return dst.Build()
}

// compileHost compiles the pools of one host, best match first.
func compileHost(ps []*fsm.Pool, routes func(string) *routeCfg) []*pool {
	out := make([]*pool, 0, len(ps))
	for _, fp := range ps {
		pl := &pool{path: fp.Path, plain: true}
		for _, m := range fp.Members {
			rc := routes(m.RouteID)
			if rc == nil {
				continue
			}
			pl.members = append(pl.members, rc)
			if rc.drain != nil || rc.maint || rc.health != nil || rc.brk != nil {
				pl.plain = false
			}
		}
		if len(pl.members) == 0 {
			continue
		}
		pl.policy = parsePolicy(pl.members[0].opts.LBPolicy)
		out = append(out, pl)
	}
	return out
}

// compileRouteLocked builds the routeCfg of one route for a new table and
// updates rs's runtime state to match it. It returns the rate limiter the
// route no longer uses, to be released after the swap. p.mu is held.
func (p *Proxy) compileRouteLocked(m *fsm.Member, rs *routeState, usedTr map[transportKey]bool) (*routeCfg, *limiter) {
	st := m.Settings
	if st == nil {
		st = &fsm.RouteSettings{Options: fsm.DefaultOptions()}
	}
	o := st.Options
	rc := &routeCfg{
		id:        m.RouteID,
		session:   m.SessionID,
		backend:   m.Backend,
		rs:        rs,
		opts:      o,
		websocket: o.WebSocket || strings.HasPrefix(m.Backend, "ws://") || strings.HasPrefix(m.Backend, "wss://"),
		maint:     m.InMaintenance,
	}
	rs.session = m.SessionID
	if m.Drain != nil {
		d := *m.Drain
		rc.drain = &d
	}
	for _, h := range st.ResponseHeaders {
		rc.respHdr = append(rc.respHdr, fsm.Header{Name: http.CanonicalHeaderKey(h.Name), Value: h.Value})
	}
	for _, h := range st.RequestHeaders {
		name := http.CanonicalHeaderKey(h.Name)
		if name == "Host" {
			rc.reqHost = h.Value
			continue
		}
		rc.reqHdr = append(rc.reqHdr, fsm.Header{Name: name, Value: h.Value})
	}

	tgt, err := parseTarget(m.Backend)
	if err != nil {
		// Validation upstream makes this unreachable; if it happens the
		// route answers 502 rather than taking the table down.
		p.log.Error("route has an unusable backend", "route", m.RouteID, "err", err)
	} else {
		rc.target = tgt
		k := transportKey{scheme: tgt.scheme, host: tgt.host, skipVerify: o.TLSSkipVerify, h2: o.HTTP2, timeout: o.Timeout}
		rc.rt = p.transportLocked(k, usedTr).forwarder()
		k.h2 = false
		rc.upgradeRT = p.transportLocked(k, usedTr).t
	}
	if rc.maint && m.MaintenanceBackend != "" {
		if mt, err := parseTarget(m.MaintenanceBackend); err != nil {
			p.log.Error("route has an unusable maintenance backend", "route", m.RouteID, "err", err)
		} else {
			rc.maintTgt = &mt
			rc.maintRT = p.transportLocked(maintTransportKey(rc), usedTr).forwarder()
		}
	}

	// Health: same backend, path and timing keep the state (and its
	// checker goroutine); anything else starts a new one that inherits the
	// verdict only if the backend is the same.
	if hc := st.Health; hc != nil && rc.rt != nil {
		k := healthKey{
			backend:  m.Backend,
			url:      tgt.String() + ensureSlash(hc.Path),
			interval: time.Duration(hc.Interval),
			timeout:  time.Duration(hc.Timeout),
			rt:       rc.upgradeRT,

			unhealthyAfter: o.HealthUnhealthyThreshold,
			healthyAfter:   o.HealthHealthyThreshold,
		}
		if o.HealthCheckInterval > 0 {
			k.interval = o.HealthCheckInterval
		}
		if k.interval <= 0 {
			k.interval = 10 * time.Second
		}
		if k.timeout <= 0 || k.timeout >= k.interval {
			k.timeout = min(defaultHealthTimeout, k.interval/2)
		}
		if rs.health == nil || rs.hkey != k {
			rs.health = newHealthState(m.RouteID, k, rs.health)
			rs.hkey = k
		}
	} else {
		rs.health, rs.hkey = nil, healthKey{}
	}
	rc.health = rs.health
	rc.passive = rc.health != nil && o.PassiveHealth

	if cb := st.CircuitBreaker; cb != nil {
		if rs.brk == nil {
			rs.brk = newBreaker(*cb)
		} else {
			rs.brk.configure(*cb)
		}
	} else {
		rs.brk = nil
	}
	rc.brk = rs.brk

	var old *limiter
	if rl := st.RateLimit; rl != nil && rl.Requests > 0 {
		if rs.lim == nil || rs.limKey != *rl {
			old = rs.lim
			rs.lim = newLimiter(rl.Requests, time.Duration(rl.Window), &p.budget)
			rs.limKey = *rl
		}
	} else {
		old, rs.lim, rs.limKey = rs.lim, nil, fsm.RateLimit{}
	}
	rc.lim = rs.lim
	return rc, old
}

func ensureSlash(p string) string {
	if strings.HasPrefix(p, "/") {
		return p
	}
	return "/" + p
}
