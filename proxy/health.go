package proxy

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Default consecutive probe results that flip a backend, as Caddy and most
// load balancers count them; the route options health_unhealthy_threshold
// and health_healthy_threshold override them.
const (
	defaultUnhealthyAfter = 3
	defaultHealthyAfter   = 2
)

// HealthEvent reports that a backend's health flipped on this node.
type HealthEvent struct {
	RouteID string `json:"route_id"`
	Backend string `json:"backend"`
	Healthy bool   `json:"healthy"`
	Reason  string `json:"reason"`
	Node    string `json:"node"`
}

// healthState is the health of one route's backend on this node. A
// backend with a check starts unhealthy and "unknown": its first passing
// probe admits it without an event; from then on it takes unhealthyAfter
// failed probes to leave and healthyAfter passed probes to return, each
// flip an event. With passive health, unhealthyAfter consecutive failures
// of live traffic also take it out; only probes bring it back, because an
// unhealthy backend gets no traffic that could show it recovered.
type healthState struct {
	routeID        string
	backend        string
	url            string
	interval       time.Duration
	timeout        time.Duration
	unhealthyAfter int
	healthyAfter   int
	client         *http.Client

	healthy atomic.Bool
	// passiveFails counts consecutive failed live requests. It is kept
	// apart from the probe counters so that live successes cannot hide a
	// failing health path, nor passing probes hide failing traffic.
	passiveFails atomic.Int32

	mu     sync.Mutex
	known  bool
	fails  int
	passes int
	reason string
}

// healthKey identifies a health check configuration; a route whose key is
// unchanged keeps its healthState across tables.
type healthKey struct {
	backend, url                 string
	interval, timeout            time.Duration
	unhealthyAfter, healthyAfter int
	rt                           http.RoundTripper
}

func newHealthState(routeID string, k healthKey, prev *healthState) *healthState {
	h := &healthState{
		routeID:  routeID,
		backend:  k.backend,
		url:      k.url,
		interval: k.interval,
		timeout:  k.timeout,

		unhealthyAfter: cmp.Or(k.unhealthyAfter, defaultUnhealthyAfter),
		healthyAfter:   cmp.Or(k.healthyAfter, defaultHealthyAfter),
		client: &http.Client{
			Transport: k.rt,
			// A redirect is an answer: the backend is up.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	if prev != nil && prev.backend == k.backend {
		prev.mu.Lock()
		h.known, h.fails, h.passes, h.reason = prev.known, prev.fails, prev.passes, prev.reason
		prev.mu.Unlock()
		h.healthy.Store(prev.healthy.Load())
	}
	return h
}

// probe runs one GET of the check path.
func (h *healthState) probe(ctx context.Context) (ok bool, reason string) {
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.url, nil)
	if err != nil {
		return false, "invalid health check url"
	}
	req.Header.Set("User-Agent", "raftgate-health-check")
	resp, err := h.client.Do(req)
	if err != nil {
		return false, shortError(err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 400 {
		return true, ""
	}
	return false, fmt.Sprintf("status %d", resp.StatusCode)
}

// observe records one probe result and reports whether the backend's
// health flipped in a way worth an event.
func (h *healthState) observe(ok bool, reason string) (flipped bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ok {
		h.fails = 0
		h.passes++
		if !h.healthy.Load() && (!h.known || h.passes >= h.healthyAfter) {
			flipped = h.known
			h.known = true
			h.healthy.Store(true)
			h.reason = "health check passed"
		}
		return flipped
	}
	h.passes = 0
	h.fails++
	h.reason = reason
	if h.fails >= h.unhealthyAfter && (h.healthy.Load() || !h.known) {
		h.known = true
		h.healthy.Store(false)
		return true
	}
	return false
}

// observePassive records the outcome of one live request (passive_health)
// and reports whether it took the backend out of rotation. reason is
// called only on a failure, so a success costs two atomic loads.
func (h *healthState) observePassive(ok bool, reason func() string) (flipped bool) {
	if ok {
		if h.passiveFails.Load() != 0 {
			h.passiveFails.Store(0)
		}
		return false
	}
	if !h.healthy.Load() {
		return false // already out; requests still in flight changed nothing
	}
	if int(h.passiveFails.Add(1)) < h.unhealthyAfter {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.healthy.Load() {
		return false
	}
	h.passiveFails.Store(0)
	h.known = true
	h.passes = 0
	h.reason = "passive: " + reason()
	h.healthy.Store(false)
	return true
}

// checkOnce probes h once and reports a flip.
func (p *Proxy) checkOnce(ctx context.Context, h *healthState) {
	ok, reason := h.probe(ctx)
	if ctx.Err() != nil {
		return // shutting down: the failure is ours, not the backend's
	}
	if h.observe(ok, reason) {
		p.healthFlipped(h)
	}
}

// passiveResult feeds one live request's outcome to rc's health when the
// route has passive_health on.
func (p *Proxy) passiveResult(rc *routeCfg, ok bool, reason func() string) {
	if rc.health.observePassive(ok, reason) {
		p.healthFlipped(rc.health)
	}
}

// healthFlipped logs a health flip of h and reports it to OnHealthChange.
func (p *Proxy) healthFlipped(h *healthState) {
	h.mu.Lock()
	ev := HealthEvent{RouteID: h.routeID, Backend: h.backend, Healthy: h.healthy.Load(), Reason: h.reason, Node: p.cfg.NodeID}
	h.mu.Unlock()
	p.log.Info("backend health changed", "route", ev.RouteID, "backend", ev.Backend,
		"healthy", ev.Healthy, "reason", ev.Reason)
	if p.cfg.OnHealthChange != nil {
		p.cfg.OnHealthChange(ev)
	}
}

// runChecker probes h every interval until ctx ends.
func (p *Proxy) runChecker(ctx context.Context, h *healthState) {
	defer p.wg.Done()
	p.checkOnce(ctx, h)
	t := time.NewTicker(h.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.checkOnce(ctx, h)
		}
	}
}

// RunHealthChecks runs one probe of every configured health check,
// concurrently, and returns when all are done. Tests use it instead of
// waiting for the interval.
func (p *Proxy) RunHealthChecks(ctx context.Context) {
	t := p.table.Load()
	if t == nil {
		return
	}
	seen := make(map[*healthState]bool)
	var wg sync.WaitGroup
	for _, rc := range t.routes {
		if rc.health == nil || seen[rc.health] {
			continue
		}
		seen[rc.health] = true
		wg.Go(func() { p.checkOnce(ctx, rc.health) })
	}
	wg.Wait()
}

// reconcileCheckersLocked starts a checker for every health state of t and
// stops those no table uses any more. p.mu is held.
func (p *Proxy) reconcileCheckersLocked(t *table) {
	want := make(map[*healthState]bool)
	for _, rc := range t.routes {
		if rc.health != nil {
			want[rc.health] = true
		}
	}
	for h, cancel := range p.checkers {
		if !want[h] {
			cancel()
			delete(p.checkers, h)
		}
	}
	if p.runCtx == nil || p.runCtx.Err() != nil {
		return
	}
	for h := range want {
		if _, ok := p.checkers[h]; ok {
			continue
		}
		ctx, cancel := context.WithCancel(p.runCtx)
		p.checkers[h] = cancel
		p.wg.Add(1)
		go p.runChecker(ctx, h)
	}
}
