package proxy

import (
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
// route whose relevant configuration is unchanged. Safe to call
// concurrently with ServeHTTP; calls are serialized.
func (p *Proxy) Update(t *fsm.RoutingTable) {
	if t == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()

	nt := &table{
		index:    t.Index,
		exact:    make(map[string][]*pool, len(t.Exact)),
		wildcard: make(map[string][]*pool, len(t.Wildcard)),
		routes:   make(map[string]*routeCfg, len(t.Routes)),
	}
	routes := make(map[string]*routeState, len(t.Routes))
	sessions := make(map[string]*atomic.Int64)
	usedTr := make(map[transportKey]bool)
	var released []*limiter

	for id, ms := range t.Routes {
		if len(ms) == 0 {
			continue
		}
		rs := p.routes[id]
		if rs == nil {
			rs = &routeState{id: id}
		}
		routes[id] = rs
		sess := sessions[ms[0].SessionID]
		if sess == nil {
			sess = p.sessions[ms[0].SessionID]
			if sess == nil {
				sess = new(atomic.Int64)
			}
			sessions[ms[0].SessionID] = sess
		}
		rc, old := p.compileRouteLocked(ms[0], rs, usedTr)
		if old != nil {
			released = append(released, old)
		}
		rc.sessInflight = sess
		nt.routes[id] = rc
	}
	for id, rs := range p.routes {
		if routes[id] == nil && rs.lim != nil {
			released = append(released, rs.lim)
		}
	}
	compilePools(t.Exact, nt.exact, nt.routes)
	compilePools(t.Wildcard, nt.wildcard, nt.routes)

	p.routes, p.sessions = routes, sessions
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
	p.log.Debug("routing table updated", "index", t.Index, "routes", len(nt.routes))
}

func compilePools(src map[string][]*fsm.Pool, dst map[string][]*pool, routes map[string]*routeCfg) {
	for key, ps := range src {
		out := make([]*pool, 0, len(ps))
		for _, fp := range ps {
			pl := &pool{path: fp.Path, plain: true}
			for _, m := range fp.Members {
				rc := routes[m.RouteID]
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
		if len(out) > 0 {
			dst[key] = out
		}
	}
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
			rc.maintRT = p.transportLocked(transportKey{scheme: mt.scheme, host: mt.host, timeout: o.Timeout}, usedTr).forwarder()
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
