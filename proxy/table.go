package proxy

import (
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/raftgate/raftgate/fsm"
)

// table is the compiled, immutable form of an fsm.RoutingTable that the
// request path reads through Proxy.table without locks.
type table struct {
	index uint64
	// gen is the fsm.RoutingTable.Gen this table was compiled from; Update
	// patches it when the next fsm table's delta has it as base.
	gen      uint64
	exact    fsm.ShardMap[[]*pool]
	wildcard fsm.ShardMap[[]*pool]
	routeMap fsm.ShardMap[*routeCfg]
}

// routes iterates over every route of the table, in no particular order.
func (t *table) routes(yield func(string, *routeCfg) bool) {
	for id, rc := range t.routeMap.All() {
		if !yield(id, rc) {
			return
		}
	}
}

// pool is one compiled fsm.Pool.
type pool struct {
	path    string
	policy  lbPolicy
	members []*routeCfg
	rr      atomic.Uint64
	// plain is true when no member drains, is in maintenance or has a
	// health check or breaker: selection then skips every availability test.
	plain bool
}

// target is a parsed backend address, with ws/wss mapped to http/https.
type target struct {
	scheme string
	host   string
	path   string
	query  string
}

// routeCfg is one route as this table serves it. The pointers to runtime
// state (rs, health, brk, lim, sessInflight) are shared with other tables
// for as long as the route keeps the same configuration.
type routeCfg struct {
	id           string
	session      string
	backend      string
	rs           *routeState
	sessInflight *atomic.Int64

	target    target
	rt        http.RoundTripper
	upgradeRT http.RoundTripper // HTTP/1.1 transport for Upgrade requests
	opts      fsm.Options
	respHdr   []fsm.Header // canonical names
	reqHdr    []fsm.Header // canonical names
	reqHost   string       // a request: Host header overrides the Host sent
	websocket bool

	drain    *fsm.Drain
	maint    bool
	maintTgt *target // nil: built-in page
	maintRT  http.RoundTripper
	health   *healthState
	passive  bool // live failures count for health (passive_health)
	brk      *breaker
	lim      *limiter
}

// lookup finds the pool serving host and path: exact host pools first, then
// the wildcard pools of the host's parent, each list best match first. It
// allocates nothing.
func (t *table) lookup(host, path string) *pool {
	host = stripPort(host)
	if !hasUpper(host) {
		if p := firstMatch(t.exact.Get(host), path); p != nil {
			return p
		}
		if i := strings.IndexByte(host, '.'); i >= 0 {
			return firstMatch(t.wildcard.Get(host[i+1:]), path)
		}
		return nil
	}
	var buf [256]byte
	if len(host) > len(buf) {
		return nil
	}
	b := buf[:len(host)]
	for i := 0; i < len(host); i++ {
		c := host[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b[i] = c
	}
	// GetBytes looks the bytes up without converting them to a string.
	if p := firstMatch(t.exact.GetBytes(b), path); p != nil {
		return p
	}
	for i, c := range b {
		if c == '.' {
			return firstMatch(t.wildcard.GetBytes(b[i+1:]), path)
		}
	}
	return nil
}

func firstMatch(ps []*pool, path string) *pool {
	for _, p := range ps {
		if strings.HasPrefix(path, p.path) {
			return p
		}
	}
	return nil
}

// stripPort removes a :port suffix, IPv6 brackets and a trailing dot.
func stripPort(h string) string {
	if len(h) > 0 && h[0] == '[' {
		if i := strings.IndexByte(h, ']'); i > 0 {
			return h[1:i]
		}
		return h
	}
	if i := strings.LastIndexByte(h, ':'); i >= 0 && strings.IndexByte(h, ':') == i {
		h = h[:i]
	}
	if len(h) > 1 && h[len(h)-1] == '.' {
		h = h[:len(h)-1]
	}
	return h
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}
