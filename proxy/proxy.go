package proxy

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/raftgate/raftgate/fsm"
)

// Rate-limit scopes.
const (
	ScopeNode    = "node"
	ScopeCluster = "cluster"
)

// DefaultMaxRateLimitIPs is the default cap on client IPs tracked by all
// rate limiters of a node together.
const DefaultMaxRateLimitIPs = 100_000

// Config configures a Proxy.
type Config struct {
	NodeID string
	Logger *slog.Logger
	// TrustedProxies are the peers whose X-Forwarded-For, -Proto and -Host
	// are believed; from anyone else they are replaced.
	TrustedProxies []netip.Prefix
	// LiveNodes counts the cluster's live nodes for RateLimitScope
	// "cluster"; nil means 1.
	LiveNodes func() int
	// RateLimitScope is "node" (default: each node enforces the full limit)
	// or "cluster" (each node enforces limit / LiveNodes()).
	RateLimitScope string
	// OnHealthChange is called, from a checker goroutine, when a backend's
	// health flips on this node.
	OnHealthChange func(HealthEvent)
	// Registerer, when set, gets the per-route Prometheus collector.
	Registerer prometheus.Registerer
	// MaxRateLimitIPs caps the client IPs tracked by all rate limiters;
	// 0 means DefaultMaxRateLimitIPs.
	MaxRateLimitIPs int
	// Now is the clock for drain schedules, breakers and rate limits;
	// nil means time.Now. Tests inject one.
	Now func() time.Time
}

// Proxy is one node's reverse proxy. It is an http.Handler.
type Proxy struct {
	cfg    Config
	log    *slog.Logger
	clock  func() time.Time
	table  atomic.Pointer[table]
	budget ipBudget

	mu         sync.Mutex // serializes Update and guards the maps below
	routes     map[string]*routeState
	sessions   map[string]*atomic.Int64
	transports map[transportKey]*transportEntry
	// trRefs counts the routes using each transport and sessRoutes the
	// routes of each session, so an incremental Update knows when one is
	// no longer used without scanning every route.
	trRefs     map[transportKey]int
	sessRoutes map[string]int
	checkers   map[*healthState]context.CancelFunc
	runCtx     context.Context
	stopRun    context.CancelFunc
	wg         sync.WaitGroup
	collector  *collector
}

// routeState is the runtime state of one route ID on this node. It
// outlives tables; the fields below the line are bookkeeping for Update
// and are guarded by Proxy.mu.
type routeState struct {
	id       string
	stats    atomic.Pointer[liveStats]
	inflight atomic.Int64

	health  *healthState
	hkey    healthKey
	brk     *breaker
	lim     *limiter
	limKey  fsm.RateLimit
	session string
}

func (rs *routeState) liveStats() *liveStats {
	if s := rs.stats.Load(); s != nil {
		return s
	}
	s := new(liveStats)
	if rs.stats.CompareAndSwap(nil, s) {
		return s
	}
	return rs.stats.Load()
}

// New makes a Proxy serving an empty table (every request is a 404) until
// Update gives it one.
func New(cfg Config) *Proxy {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxRateLimitIPs <= 0 {
		cfg.MaxRateLimitIPs = DefaultMaxRateLimitIPs
	}
	p := &Proxy{
		cfg:        cfg,
		log:        cfg.Logger.With("component", "proxy"),
		clock:      cfg.Now,
		routes:     make(map[string]*routeState),
		sessions:   make(map[string]*atomic.Int64),
		transports: make(map[transportKey]*transportEntry),
		checkers:   make(map[*healthState]context.CancelFunc),
	}
	p.budget.max = int64(cfg.MaxRateLimitIPs)
	p.table.Store(&table{})
	if cfg.Registerer != nil {
		p.collector = &collector{p: p}
		if err := cfg.Registerer.Register(p.collector); err != nil {
			p.log.Error("register proxy metrics", "err", err)
		}
	}
	return p
}

// TableIndex is the fsm index of the table currently served.
func (p *Proxy) TableIndex() uint64 { return p.table.Load().index }

// Start runs the background work (health checkers, rate-limit janitor)
// until ctx ends or Close is called.
func (p *Proxy) Start(ctx context.Context) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.runCtx != nil {
		return
	}
	p.runCtx, p.stopRun = context.WithCancel(ctx)
	p.reconcileCheckersLocked(p.table.Load())
	p.wg.Add(1)
	go p.janitor(p.runCtx)
}

// Close stops every background goroutine and closes idle backend
// connections. Requests in flight finish on their own.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.stopRun != nil {
		p.stopRun()
	} else {
		p.runCtx, p.stopRun = context.WithCancel(context.Background())
		p.stopRun()
	}
	for h, cancel := range p.checkers {
		cancel()
		delete(p.checkers, h)
	}
	p.mu.Unlock()
	p.wg.Wait()
	p.mu.Lock()
	for _, te := range p.transports {
		te.closeIdle()
	}
	p.mu.Unlock()
	if p.collector != nil && p.cfg.Registerer != nil {
		p.cfg.Registerer.Unregister(p.collector)
	}
}

// janitor expires idle rate-limit buckets so memory follows live clients.
func (p *Proxy) janitor(ctx context.Context) {
	defer p.wg.Done()
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			now := p.now().UnixNano()
			for _, rc := range p.table.Load().routes {
				if rc.lim != nil {
					rc.lim.sweep(now)
				}
			}
		}
	}
}

func (p *Proxy) now() time.Time {
	if p.clock != nil {
		return p.clock()
	}
	return time.Now()
}

// rateShare is the fraction of a configured rate limit this node enforces.
func (p *Proxy) rateShare() float64 {
	if p.cfg.RateLimitScope != ScopeCluster || p.cfg.LiveNodes == nil {
		return 1
	}
	return 1 / float64(max(p.cfg.LiveNodes(), 1))
}

// RouteStats is this node's counters for a route; zero counters for a
// route this node does not know or has not served.
func (p *Proxy) RouteStats(routeID string) RouteStats {
	p.mu.Lock()
	rs := p.routes[routeID]
	p.mu.Unlock()
	if rs == nil || rs.stats.Load() == nil {
		return RouteStats{RouteID: routeID, StatusCodes: map[int]int64{}}
	}
	return rs.stats.Load().snapshot(routeID)
}

// SessionInFlight is the number of requests in flight on this node for the
// session's routes.
func (p *Proxy) SessionInFlight(sessionID string) int64 {
	p.mu.Lock()
	c := p.sessions[sessionID]
	p.mu.Unlock()
	if c == nil {
		return 0
	}
	return c.Load()
}

// BreakerStatus is this node's circuit breaker for a route; "closed" with
// no failures when the route has no breaker here.
func (p *Proxy) BreakerStatus(routeID string) BreakerStatus {
	p.mu.Lock()
	rs := p.routes[routeID]
	var b *breaker
	if rs != nil {
		b = rs.brk
	}
	p.mu.Unlock()
	if b == nil {
		return BreakerStatus{State: BreakerClosed}
	}
	return b.status()
}

// BackendHealthy reports this node's view of a route's backend: healthy,
// and whether a health check is configured at all.
func (p *Proxy) BackendHealthy(routeID string) (healthy, checked bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	rs := p.routes[routeID]
	if rs == nil || rs.health == nil {
		return rs != nil, false
	}
	return rs.health.healthy.Load(), true
}
