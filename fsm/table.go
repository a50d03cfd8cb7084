package fsm

import (
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// RoutingTable is the immutable view of every session's active
// configuration that a node's proxy serves. The FSM derives a new one after
// each batch that changes active configuration, from the previous one plus
// the sessions the batch touched; nothing mutates it afterwards, so the
// data plane reads it without locks.
type RoutingTable struct {
	// Index is the log index of the last entry the table reflects.
	Index uint64
	// Exact maps a lower-case host name to its pools, best match first.
	Exact ShardMap[[]*Pool]
	// Wildcard maps the parent of a "*.parent" pattern to its pools, best
	// match first. A wildcard matches exactly one more label.
	Wildcard ShardMap[[]*Pool]
	// Routes maps every active route ID to its members (one per domain).
	Routes ShardMap[[]*Member]

	// Gen identifies this table among all tables of the process. It is not
	// part of the replicated state.
	Gen uint64 `json:"-"`
	// Delta, when not nil, lists every key whose value differs from the
	// table whose Gen is Delta.Base; a subscriber holding that table can
	// patch instead of recompiling everything.
	Delta *TableDelta `json:"-"`
}

// TableDelta is what changed between two routing tables: every key of
// Exact, Wildcard and Routes that was added, removed or given a new value.
// Keys not listed hold identical values (the same pointers) in both.
type TableDelta struct {
	Base     uint64
	Exact    []string
	Wildcard []string
	Routes   []string
}

// tableGen numbers routing tables; zero means "no table".
var tableGen atomic.Uint64

// Pool is the set of backends that serve one domain+path at one priority for
// one service. Routes of several sessions of the same service that name the
// same domain, path and priority share a pool and are load-balanced.
type Pool struct {
	Domain   string // as configured: "example.com" or "*.example.com"
	Path     string
	Priority int
	Service  string
	Members  []*Member // ordered by route number
}

// Member is one route's backend inside a pool.
type Member struct {
	RouteID   string
	SessionID string
	// Domain is the route's domain this member serves, as configured
	// ("example.com" or "*.example.com").
	Domain   string
	Backend  string
	Settings *RouteSettings
	// InMaintenance routes answer from MaintenanceBackend, or from the
	// built-in maintenance page when it is empty.
	InMaintenance      bool
	MaintenanceBackend string
	// Drain, when set, is the session's drain schedule.
	Drain *Drain
}

// RouteSettings is the effective configuration of one route: the session's
// ALL settings overlaid with the route's own.
type RouteSettings struct {
	ResponseHeaders []Header // sorted by name
	RequestHeaders  []Header // sorted by name
	Options         Options
	Health          *HealthCheck
	RateLimit       *RateLimit
	CircuitBreaker  *CircuitBreaker
}

// Header is one header name and value.
type Header struct {
	Name  string
	Value string
}

// Options are the typed route options of PROTOCOL.md.
type Options struct {
	Timeout             time.Duration
	WebSocket           bool
	Compression         bool
	HTTP2               bool
	Retries             int
	LBPolicy            string
	PreserveHost        bool
	StripPrefix         bool
	MaxBodyBytes        int64 // 0: no limit
	TLSSkipVerify       bool
	HealthCheckInterval time.Duration // 0: not set
	// HealthUnhealthyThreshold and HealthHealthyThreshold are the
	// consecutive failed and passed probes that flip a backend; 0 means
	// the proxy's defaults (3 and 2).
	HealthUnhealthyThreshold int
	HealthHealthyThreshold   int
	// PassiveHealth makes connection errors, timeouts and 5xx answers of
	// live traffic count as health-check failures too.
	PassiveHealth bool
}

// Option keys and defaults.
const (
	OptTimeout             = "timeout"
	OptWebSocket           = "websocket"
	OptCompression         = "compression"
	OptHTTP2               = "http2"
	OptRetries             = "retries"
	OptLBPolicy            = "lb_policy"
	OptPreserveHost        = "preserve_host"
	OptStripPrefix         = "strip_prefix"
	OptMaxBodyBytes        = "max_body_bytes"
	OptTLSSkipVerify       = "tls_skip_verify"
	OptHealthCheckInterval = "health_check_interval"

	// Extensions beyond PROTOCOL.md's option list (documented in
	// docs/PROTOCOL.md): health-check thresholds and passive health.
	OptHealthUnhealthyThreshold = "health_unhealthy_threshold"
	OptHealthHealthyThreshold   = "health_healthy_threshold"
	OptPassiveHealth            = "passive_health"
	MaxHealthThreshold          = 10

	DefaultTimeout  = 30 * time.Second
	DefaultLBPolicy = "round_robin"
)

// DefaultOptions are the options of a route that sets none.
func DefaultOptions() Options {
	return Options{Timeout: DefaultTimeout, LBPolicy: DefaultLBPolicy}
}

// RequestHeaderPrefix marks a HEADERS_SET name that sets a header on the
// request to the backend instead of the response.
const RequestHeaderPrefix = "request:"

// BuildTable derives the routing table from the active configuration of
// every session. Apart from Gen it is a pure function of s; the FSM uses it
// after Restore and as the reference its incremental updates must equal.
func BuildTable(s *State, index uint64) *RoutingTable {
	n := 0
	for _, sess := range s.Sessions {
		n += len(sess.Active.Routes)
	}
	// Building the shard maps in place saves a copy of every key, which is
	// most of the time of a restore.
	exact := NewShardMapBuilder[[]*Pool](n)
	wildcard := NewShardMapBuilder[[]*Pool](n / 8)
	routes := NewShardMapBuilder[[]*Member](n)
	for _, id := range s.sortedSessionIDs() {
		sess := s.Sessions[id]
		mm := memberMaker{sess: sess}
		for i := range sess.Active.Routes {
			r := &sess.Active.Routes[i]
			settings := mm.settings(r)
			for _, d := range r.Domains {
				m := mm.member(r, d, settings)
				hosts, key := exact, d
				if parent, ok := strings.CutPrefix(d, "*."); ok {
					hosts, key = wildcard, parent
				}
				// A host has few pools: a scan of its list finds the pool
				// cheaper than a map over every pool of the table.
				ps := hosts.Get(key)
				var p *Pool
				for _, q := range ps {
					if q.Path == r.Path && q.Priority == r.Priority && q.Service == sess.Service {
						p = q
						break
					}
				}
				if p == nil {
					p = &Pool{Domain: d, Path: r.Path, Priority: r.Priority, Service: sess.Service}
					hosts.Set(key, append(ps, p))
				}
				p.Members = append(p.Members, m)
				routes.Set(r.ID, append(routes.Get(r.ID), m))
			}
		}
	}
	for _, m := range []*ShardMapBuilder[[]*Pool]{exact, wildcard} {
		for _, ps := range m.m.All() {
			sortPools(ps)
			for _, p := range ps {
				sortMembers(p.Members)
			}
		}
	}
	return &RoutingTable{
		Index:    index,
		Exact:    exact.Build(),
		Wildcard: wildcard.Build(),
		Routes:   routes.Build(),
		Gen:      tableGen.Add(1),
	}
}

// poolsEqual reports whether two pool lists hold the same pools with the
// same member pointers, in the same order.
func poolsEqual(a, b []*Pool) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Domain != y.Domain || x.Path != y.Path || x.Priority != y.Priority || x.Service != y.Service || !slices.Equal(x.Members, y.Members) {
			return false
		}
	}
	return true
}

// memberEqual reports whether two members hold the same values.
func memberEqual(a, b *Member) bool {
	if a.RouteID != b.RouteID || a.SessionID != b.SessionID || a.Domain != b.Domain || a.Backend != b.Backend ||
		a.InMaintenance != b.InMaintenance || a.MaintenanceBackend != b.MaintenanceBackend ||
		a.Drain != b.Drain {
		return false
	}
	return settingsEqual(a.Settings, b.Settings)
}

// settingsEqual reports whether two effective settings hold the same values.
func settingsEqual(x, y *RouteSettings) bool {
	if x == y {
		return true
	}
	if x == nil || y == nil {
		return false
	}
	return x.Options == y.Options && slices.Equal(x.ResponseHeaders, y.ResponseHeaders) &&
		slices.Equal(x.RequestHeaders, y.RequestHeaders) && ptrEqual(x.Health, y.Health) &&
		ptrEqual(x.RateLimit, y.RateLimit) && ptrEqual(x.CircuitBreaker, y.CircuitBreaker)
}

func ptrEqual[T comparable](a, b *T) bool {
	return a == b || a != nil && b != nil && *a == *b
}

type poolKey struct {
	domain, path, service string
	priority              int
}

// memberMaker makes the members of one session's routes.
type memberMaker struct {
	sess *Session
	// shared is the settings of the session's routes that have none of
	// their own: one read-only value per session instead of per route
	// keeps both the time of a change and the table's memory small.
	shared *RouteSettings
}

// settings returns the effective settings of route r.
func (mm *memberMaker) settings(r *Route) *RouteSettings {
	sess := mm.sess
	if !hasOwnSettings(&sess.Active, r.ID) && sess.BreakerResets[r.ID] == 0 {
		if mm.shared == nil {
			mm.shared = effectiveSettings(&sess.Active, r.ID)
		}
		return mm.shared
	}
	settings := effectiveSettings(&sess.Active, r.ID)
	if settings.CircuitBreaker != nil {
		settings.CircuitBreaker.ResetGeneration = sess.BreakerResets[r.ID]
	}
	return settings
}

// member returns the member that route r places on one of its domains.
func (mm *memberMaker) member(r *Route, domain string, settings *RouteSettings) *Member {
	sess := mm.sess
	_, maint := slices.BinarySearch(sess.Maintenance.Routes, r.ID)
	return &Member{
		RouteID:            r.ID,
		SessionID:          sess.ID,
		Domain:             domain,
		Backend:            r.Backend,
		Settings:           settings,
		InMaintenance:      maint,
		MaintenanceBackend: sess.Maintenance.Backend,
		Drain:              sess.Drain,
	}
}

// adoptShared takes the shared settings of the session from prev, through
// a route that a change left alone, so that routes a patch adds share the
// value their siblings hold instead of allocating one per patch.
func (mm *memberMaker) adoptShared(prev *RoutingTable, dirty map[string]string) {
	sess := mm.sess
	for i := range sess.Active.Routes {
		id := sess.Active.Routes[i].ID
		if _, changed := dirty[id]; changed || hasOwnSettings(&sess.Active, id) || sess.BreakerResets[id] != 0 {
			continue
		}
		if ms := prev.Routes.Get(id); len(ms) > 0 {
			mm.shared = ms[0].Settings
		}
		return
	}
}

// hasOwnSettings reports whether c has settings targeted at route id.
func hasOwnSettings(c *Config, id string) bool {
	_, h := c.Headers[id]
	_, o := c.Options[id]
	_, hc := c.Health[id]
	_, rl := c.RateLimit[id]
	_, cb := c.CircuitBreaker[id]
	return h || o || hc || rl || cb
}

func sortMembers(ms []*Member) {
	if len(ms) < 2 {
		return
	}
	sort.SliceStable(ms, func(i, j int) bool {
		return routeNumber(ms[i].RouteID) < routeNumber(ms[j].RouteID)
	})
}

// patchTable derives the table of state s from prev, the table of the
// state before the routes in dirty (route ID -> session ID) changed. Only
// the hosts those routes served before or serve now, and the routes
// themselves, are recomputed, so the cost follows the change, not the
// table or the size of the sessions it touches. The result equals
// BuildTable(s, index) except for Gen and Delta.
func patchTable(prev *RoutingTable, s *State, dirty map[string]string, index uint64) *RoutingTable {
	hosts := make(map[string]bool)     // domains as configured
	added := make(map[string][]placed) // domain -> members of dirty routes
	reused := make(map[string]int)     // domain -> added members that kept their old pointer
	setRoutes := make(map[string][]*Member)
	var delRoutes []string
	delta := &TableDelta{Base: prev.Gen}

	bySession := make(map[string][]string)
	for rid, sid := range dirty {
		bySession[sid] = append(bySession[sid], rid)
		for _, m := range prev.Routes.Get(rid) {
			hosts[m.Domain] = true
		}
	}
	for sid, rids := range bySession {
		sess := s.Sessions[sid]
		var mm memberMaker
		if sess != nil {
			mm = memberMaker{sess: sess}
			mm.adoptShared(prev, dirty)
		}
		for _, rid := range rids {
			old := prev.Routes.Get(rid)
			var r *Route
			if sess != nil {
				r = sess.Active.route(rid)
			}
			if r == nil {
				if len(old) > 0 {
					delRoutes = append(delRoutes, rid)
					delta.Routes = append(delta.Routes, rid)
				}
				continue
			}
			settings := mm.settings(r)
			ms := make([]*Member, 0, len(r.Domains))
			for i, d := range r.Domains {
				m := mm.member(r, d, settings)
				// An unchanged member keeps its pointer, so that hosts
				// and routes it serves compare equal to the previous
				// table and stay out of the delta.
				if i < len(old) && memberEqual(old[i], m) {
					m = old[i]
					reused[d]++
				}
				added[d] = append(added[d], placed{poolKey{d, r.Path, sess.Service, r.Priority}, m})
				hosts[d] = true
				ms = append(ms, m)
			}
			if !slices.Equal(old, ms) {
				setRoutes[rid] = ms
				delta.Routes = append(delta.Routes, rid)
			}
		}
	}

	setExact, setWild := make(map[string][]*Pool), make(map[string][]*Pool)
	var delExact, delWild []string
	for d := range hosts {
		key, wild := strings.CutPrefix(d, "*.")
		var old []*Pool
		if wild {
			old = prev.Wildcard.Get(key)
		} else {
			old = prev.Exact.Get(key)
		}
		if unchangedHost(old, added[d], reused[d], dirty) {
			continue
		}
		pools := make(map[poolKey]*Pool)
		var list []*Pool
		add := func(k poolKey, m *Member) {
			p := pools[k]
			if p == nil {
				p = &Pool{Domain: k.domain, Path: k.path, Priority: k.priority, Service: k.service}
				pools[k] = p
				list = append(list, p)
			}
			p.Members = append(p.Members, m)
		}
		for _, p := range old {
			for _, m := range p.Members {
				if _, changed := dirty[m.RouteID]; !changed {
					add(poolKey{p.Domain, p.Path, p.Service, p.Priority}, m)
				}
			}
		}
		for _, pm := range added[d] {
			add(pm.key, pm.m)
		}
		sortPools(list)
		for _, p := range list {
			sortMembers(p.Members)
		}
		if poolsEqual(old, list) {
			continue
		}
		switch {
		case wild && len(list) > 0:
			setWild[key] = list
		case wild:
			delWild = append(delWild, key)
		case len(list) > 0:
			setExact[key] = list
		default:
			delExact = append(delExact, key)
		}
		if wild {
			delta.Wildcard = append(delta.Wildcard, key)
		} else {
			delta.Exact = append(delta.Exact, key)
		}
	}
	slices.Sort(delta.Exact)
	slices.Sort(delta.Wildcard)
	slices.Sort(delta.Routes)
	return &RoutingTable{
		Index:    index,
		Exact:    prev.Exact.With(setExact, delExact),
		Wildcard: prev.Wildcard.With(setWild, delWild),
		Routes:   prev.Routes.With(setRoutes, delRoutes),
		Gen:      tableGen.Add(1),
		Delta:    delta,
	}
}

// placed is a member with the pool it goes into.
type placed struct {
	key poolKey
	m   *Member
}

// unchangedHost reports, without rebuilding its pools, that a host keeps
// exactly its pools: every member the dirty routes now place there is the
// very member (same pointer) they had in the same pool before, and they
// had no other. Most hosts of a change are like this (a route whose
// settings changed elsewhere), and skipping them keeps a change's cost
// near the size of the change.
func unchangedHost(old []*Pool, added []placed, reused int, dirty map[string]string) bool {
	if len(added) == 0 || reused != len(added) {
		return false
	}
	before := make(map[*Member]poolKey, len(added))
	for _, p := range old {
		for _, m := range p.Members {
			if _, changed := dirty[m.RouteID]; changed {
				before[m] = poolKey{p.Domain, p.Path, p.Service, p.Priority}
			}
		}
	}
	if len(before) != len(added) {
		return false
	}
	for _, pm := range added {
		if k, ok := before[pm.m]; !ok || k != pm.key {
			return false
		}
	}
	return true
}

// sortPools orders pools best match first: higher priority, then longer
// path, then path and service for a stable order.
func sortPools(ps []*Pool) {
	if len(ps) < 2 {
		return
	}
	sort.Slice(ps, func(i, j int) bool {
		a, b := ps[i], ps[j]
		if a.Priority != b.Priority {
			return a.Priority > b.Priority
		}
		if len(a.Path) != len(b.Path) {
			return len(a.Path) > len(b.Path)
		}
		if a.Path != b.Path {
			return a.Path < b.Path
		}
		return a.Service < b.Service
	})
}

// effectiveSettings overlays the route's own settings on the session's ALL
// settings.
func effectiveSettings(c *Config, routeID string) *RouteSettings {
	rs := &RouteSettings{Options: DefaultOptions()}
	headers := make(map[string]string)
	for _, target := range []string{TargetAll, routeID} {
		for name, v := range c.Headers[target] {
			headers[name] = v
		}
		for k, v := range c.Options[target] {
			applyOption(&rs.Options, k, v)
		}
		if h, ok := c.Health[target]; ok {
			h := h
			rs.Health = &h
		}
		if rl, ok := c.RateLimit[target]; ok {
			rl := rl
			rs.RateLimit = &rl
		}
		if cb, ok := c.CircuitBreaker[target]; ok {
			cb := cb
			rs.CircuitBreaker = &cb
		}
	}
	names := make([]string, 0, len(headers))
	for n := range headers {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if req, ok := strings.CutPrefix(n, RequestHeaderPrefix); ok {
			rs.RequestHeaders = append(rs.RequestHeaders, Header{Name: req, Value: headers[n]})
		} else {
			rs.ResponseHeaders = append(rs.ResponseHeaders, Header{Name: n, Value: headers[n]})
		}
	}
	if rs.RateLimit != nil && rs.RateLimit.Requests == 0 {
		rs.RateLimit = nil
	}
	return rs
}

// applyOption sets one option from its canonical string form (see
// NormalizeOption); a value that does not parse leaves the default.
func applyOption(o *Options, key, v string) {
	switch key {
	case OptTimeout:
		if d, err := time.ParseDuration(v); err == nil {
			o.Timeout = d
		}
	case OptWebSocket:
		o.WebSocket = v == "true"
	case OptCompression:
		o.Compression = v == "true"
	case OptHTTP2:
		o.HTTP2 = v == "true"
	case OptRetries:
		o.Retries, _ = strconv.Atoi(v)
	case OptLBPolicy:
		o.LBPolicy = v
	case OptPreserveHost:
		o.PreserveHost = v == "true"
	case OptStripPrefix:
		o.StripPrefix = v == "true"
	case OptMaxBodyBytes:
		o.MaxBodyBytes, _ = strconv.ParseInt(v, 10, 64)
	case OptTLSSkipVerify:
		o.TLSSkipVerify = v == "true"
	case OptHealthCheckInterval:
		if d, err := time.ParseDuration(v); err == nil {
			o.HealthCheckInterval = d
		}
	case OptHealthUnhealthyThreshold:
		o.HealthUnhealthyThreshold, _ = strconv.Atoi(v)
	case OptHealthHealthyThreshold:
		o.HealthHealthyThreshold, _ = strconv.Atoi(v)
	case OptPassiveHealth:
		o.PassiveHealth = v == "true"
	}
}

// routeNumber is N of the route ID "rN"; 0 for anything else.
func routeNumber(id string) uint64 {
	n, _ := strconv.ParseUint(strings.TrimPrefix(id, "r"), 10, 64)
	return n
}
