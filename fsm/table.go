package fsm

import (
	"sort"
	"strconv"
	"strings"
	"time"
)

// RoutingTable is the immutable view of every session's active
// configuration that a node's proxy serves. BuildTable makes a new one after
// each log entry that changes active configuration; nothing mutates it
// afterwards, so the data plane reads it without locks.
type RoutingTable struct {
	// Index is the log index of the last entry the table reflects.
	Index uint64
	// Exact maps a lower-case host name to its pools, best match first.
	Exact map[string][]*Pool
	// Wildcard maps the parent of a "*.parent" pattern to its pools, best
	// match first. A wildcard matches exactly one more label.
	Wildcard map[string][]*Pool
	// Routes maps every active route ID to its members (one per domain).
	Routes map[string][]*Member
}

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
	Backend   string
	Settings  *RouteSettings
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
// every session. It is a pure function of s.
func BuildTable(s *State, index uint64) *RoutingTable {
	t := &RoutingTable{
		Index:    index,
		Exact:    make(map[string][]*Pool),
		Wildcard: make(map[string][]*Pool),
		Routes:   make(map[string][]*Member),
	}
	type poolKey struct {
		domain, path, service string
		priority              int
	}
	pools := make(map[poolKey]*Pool)
	for _, id := range s.sortedSessionIDs() {
		sess := s.Sessions[id]
		maint := make(map[string]bool, len(sess.Maintenance.Routes))
		for _, r := range sess.Maintenance.Routes {
			maint[r] = true
		}
		for i := range sess.Active.Routes {
			r := &sess.Active.Routes[i]
			settings := effectiveSettings(&sess.Active, r.ID)
			if settings.CircuitBreaker != nil {
				settings.CircuitBreaker.ResetGeneration = sess.BreakerResets[r.ID]
			}
			for _, d := range r.Domains {
				m := &Member{
					RouteID:            r.ID,
					SessionID:          sess.ID,
					Backend:            r.Backend,
					Settings:           settings,
					InMaintenance:      maint[r.ID],
					MaintenanceBackend: sess.Maintenance.Backend,
					Drain:              sess.Drain,
				}
				k := poolKey{d, r.Path, sess.Service, r.Priority}
				p := pools[k]
				if p == nil {
					p = &Pool{Domain: d, Path: r.Path, Priority: r.Priority, Service: sess.Service}
					pools[k] = p
					if parent, ok := strings.CutPrefix(d, "*."); ok {
						t.Wildcard[parent] = append(t.Wildcard[parent], p)
					} else {
						t.Exact[d] = append(t.Exact[d], p)
					}
				}
				p.Members = append(p.Members, m)
				t.Routes[r.ID] = append(t.Routes[r.ID], m)
			}
		}
	}
	for _, m := range []map[string][]*Pool{t.Exact, t.Wildcard} {
		for _, ps := range m {
			sortPools(ps)
			for _, p := range ps {
				sort.SliceStable(p.Members, func(i, j int) bool {
					return routeNumber(p.Members[i].RouteID) < routeNumber(p.Members[j].RouteID)
				})
			}
		}
	}
	return t
}

// sortPools orders pools best match first: higher priority, then longer
// path, then path and service for a stable order.
func sortPools(ps []*Pool) {
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
