package fsm

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sort"
	"strings"
)

// Clone returns a deep copy of c.
func (c *Config) Clone() Config {
	out := Config{
		Headers:        cloneKV(c.Headers),
		Options:        cloneKV(c.Options),
		Health:         cloneMap(c.Health),
		RateLimit:      cloneMap(c.RateLimit),
		CircuitBreaker: cloneMap(c.CircuitBreaker),
	}
	if len(c.Routes) > 0 {
		out.Routes = make([]Route, len(c.Routes))
		for i, r := range c.Routes {
			r.Domains = append([]string(nil), r.Domains...)
			out.Routes[i] = r
		}
	}
	return out
}

func cloneKV(m map[string]map[string]string) map[string]map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]map[string]string, len(m))
	for t, kv := range m {
		out[t] = cloneMap(kv)
	}
	return out
}

func cloneMap[V any](m map[string]V) map[string]V {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// merge returns a copy of c with the given scopes taken from staged.
func (c *Config) merge(staged *Config, scopes []string) Config {
	out := c.Clone()
	s := staged.Clone()
	for _, scope := range scopes {
		switch scope {
		case ScopeRoutes:
			out.Routes = s.Routes
		case ScopeHeaders:
			out.Headers = s.Headers
		case ScopeOptions:
			out.Options = s.Options
		case ScopeHealth:
			out.Health = s.Health
		case ScopeRateLimit:
			out.RateLimit = s.RateLimit
		case ScopeCircuitBreaker:
			out.CircuitBreaker = s.CircuitBreaker
		}
	}
	return out
}

// equal reports whether two configurations are the same, treating nil and
// empty collections alike.
func (c *Config) equal(o *Config) bool {
	a, b := c.Clone(), o.Clone()
	return reflect.DeepEqual(a, b)
}

// route returns the route with id, or nil. Routes are ordered by route
// number (IDs are handed out in increasing order and every edit keeps the
// order), so the lookup is a binary search.
func (c *Config) route(id string) *Route {
	n := routeNumber(id)
	i := sort.Search(len(c.Routes), func(i int) bool { return routeNumber(c.Routes[i].ID) >= n })
	if i < len(c.Routes) && c.Routes[i].ID == id {
		return &c.Routes[i]
	}
	return nil
}

// dropTarget removes every setting that names target.
func (c *Config) dropTarget(target string) {
	delete(c.Headers, target)
	delete(c.Options, target)
	delete(c.Health, target)
	delete(c.RateLimit, target)
	delete(c.CircuitBreaker, target)
}

// validateConfig checks a configuration a session is about to activate and
// returns every problem, "; " separated, or "".
func validateConfig(st *State, sess *Session, next *Config) string {
	_, edited := diffRoutes(sess.Active.Routes, next.Routes)
	return validateRoutes(st, sess, edited)
}

// validateRoutes checks routes that a session is about to activate, new or
// edited: routes already active unchanged were validated when they were
// applied and hold their domain+path, so no other service can have taken
// them since, and skipping them keeps an apply O(change).
func validateRoutes(st *State, sess *Session, routes []Route) string {
	var problems []string
	for _, r := range routes {
		spec := RouteSpec{Domains: r.Domains, Path: r.Path, Backend: r.Backend, Priority: r.Priority}
		if err := ValidateRouteSpec(spec); err != nil {
			problems = append(problems, fmt.Sprintf("route %s: %v", r.ID, err))
			continue
		}
		for _, d := range r.Domains {
			if svc := st.takenBy(sess, d, r.Path); svc != "" {
				problems = append(problems, fmt.Sprintf("route %s: %s%s is served by service %s", r.ID, d, r.Path, svc))
			}
		}
	}
	return strings.Join(problems, "; ")
}

// diffRoutes compares two route lists ordered by route number and returns
// the routes of old that next removes or edits (their old versions) and
// the routes next adds or edits (their new versions), in route order.
func diffRoutes(old, next []Route) (gone, come []Route) {
	i, j := 0, 0
	for i < len(old) || j < len(next) {
		var a, b uint64
		if i < len(old) {
			a = routeNumber(old[i].ID)
		}
		if j < len(next) {
			b = routeNumber(next[j].ID)
		}
		switch {
		case j == len(next) || i < len(old) && a < b:
			gone = append(gone, old[i])
			i++
		case i == len(old) || b < a:
			come = append(come, next[j])
			j++
		default:
			if !routeEqual(&old[i], &next[j]) {
				gone = append(gone, old[i])
				come = append(come, next[j])
			}
			i++
			j++
		}
	}
	return gone, come
}

// routeEqual reports whether two routes are the same.
func routeEqual(a, b *Route) bool {
	return a.ID == b.ID && a.Path == b.Path && a.Backend == b.Backend && a.Priority == b.Priority &&
		slices.Equal(a.Domains, b.Domains)
}

// changedTargets returns the settings targets ("ALL" or route IDs) whose
// headers, options, health check, rate limit or circuit breaker differ
// between two configurations.
func changedTargets(old, next *Config) []string {
	var out []string
	out = diffTargets(old.Headers, next.Headers, maps.Equal, out)
	out = diffTargets(old.Options, next.Options, maps.Equal, out)
	out = diffTargets(old.Health, next.Health, eq, out)
	out = diffTargets(old.RateLimit, next.RateLimit, eq, out)
	out = diffTargets(old.CircuitBreaker, next.CircuitBreaker, eq, out)
	return out
}

func eq[V comparable](a, b V) bool { return a == b }

// diffTargets appends to out the keys whose values differ between a and b.
func diffTargets[V any](a, b map[string]V, equal func(V, V) bool, out []string) []string {
	for k, v := range a {
		if w, ok := b[k]; !ok || !equal(v, w) {
			out = append(out, k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, k)
		}
	}
	return out
}

// takenBy names another service that actively serves domain+path, or "".
func (st *State) takenBy(sess *Session, domain, path string) string {
	holders := st.owners[ownerKey(domain, path)]
	var services []string
	for id := range holders {
		if other := st.Sessions[id]; other != nil && other.ID != sess.ID && other.Service != sess.Service {
			services = append(services, other.Service)
		}
	}
	if len(services) == 0 {
		return ""
	}
	sort.Strings(services)
	return services[0]
}

// ValidateStaged checks what CONFIG_APPLY of the given scopes (all when
// empty) would activate, without changing anything. It returns the
// business error text, or "".
func (f *FSM) ValidateStaged(sessionID string, scopes []string) string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	sess := f.state.Sessions[sessionID]
	if sess == nil {
		return ErrSessionNotFound
	}
	if sess.Staged == nil {
		return validateConfig(f.state, sess, &sess.Active)
	}
	if len(scopes) == 0 {
		scopes = AllScopes
	}
	next := sess.Active.merge(sess.Staged, scopes)
	return validateConfig(f.state, sess, &next)
}

// RouteStatus is one element of ROUTE_LIST.
type RouteStatus struct {
	RouteID       string   `json:"route_id"`
	ID            string   `json:"id"`
	Domains       []string `json:"domains"`
	Path          string   `json:"path"`
	Backend       string   `json:"backend"`
	Priority      int      `json:"priority"`
	Status        string   `json:"status"`
	PendingUpdate bool     `json:"pending_update,omitempty"`
}

// RouteList lists the session's routes with their status: active, staged
// (not yet applied) or pending_removal, ordered by route number.
func (s *Session) RouteList() []RouteStatus {
	staged := s.Staged
	if staged == nil {
		staged = &s.Active
	}
	out := make([]RouteStatus, 0, len(s.Active.Routes)+len(staged.Routes))
	add := func(r Route, status string, pending bool) {
		out = append(out, RouteStatus{RouteID: r.ID, ID: r.ID, Domains: r.Domains, Path: r.Path,
			Backend: r.Backend, Priority: r.Priority, Status: status, PendingUpdate: pending})
	}
	for _, r := range s.Active.Routes {
		if sr := staged.route(r.ID); sr == nil {
			add(r, "pending_removal", false)
		} else {
			add(r, "active", !reflect.DeepEqual(*sr, r))
		}
	}
	for _, r := range staged.Routes {
		if s.Active.route(r.ID) == nil {
			add(r, "staged", false)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return routeNumber(out[i].RouteID) < routeNumber(out[j].RouteID) })
	return out
}

// ConfigDiff is the CONFIG_DIFF answer: what CONFIG_APPLY would change.
type ConfigDiff struct {
	Routes struct {
		Added    []string `json:"added"`
		Removed  []string `json:"removed"`
		Modified []string `json:"modified"`
	} `json:"routes"`
	Headers struct {
		Added   int `json:"added"`
		Removed int `json:"removed"`
	} `json:"headers"`
	Options        diffCount `json:"options"`
	Health         diffCount `json:"health"`
	RateLimit      diffCount `json:"ratelimit"`
	CircuitBreaker diffCount `json:"circuit_breaker"`
}

type diffCount struct {
	Modified int `json:"modified"`
}

// Diff compares the staged configuration with the active one. A header
// whose value changes counts as added.
func (s *Session) Diff() ConfigDiff {
	var d ConfigDiff
	d.Routes.Added, d.Routes.Removed, d.Routes.Modified = []string{}, []string{}, []string{}
	if s.Staged == nil {
		return d
	}
	a, st := &s.Active, s.Staged
	for _, r := range st.Routes {
		if ar := a.route(r.ID); ar == nil {
			d.Routes.Added = append(d.Routes.Added, r.ID)
		} else if !reflect.DeepEqual(*ar, r) {
			d.Routes.Modified = append(d.Routes.Modified, r.ID)
		}
	}
	for _, r := range a.Routes {
		if st.route(r.ID) == nil {
			d.Routes.Removed = append(d.Routes.Removed, r.ID)
		}
	}
	d.Headers.Added, d.Headers.Removed = diffKV(a.Headers, st.Headers)
	added, removed := diffKV(a.Options, st.Options)
	d.Options.Modified = added + removed
	d.Health.Modified = diffMap(a.Health, st.Health)
	d.RateLimit.Modified = diffMap(a.RateLimit, st.RateLimit)
	d.CircuitBreaker.Modified = diffMap(a.CircuitBreaker, st.CircuitBreaker)
	return d
}

// diffKV counts keys new or changed in b (added) and keys gone from b
// (removed).
func diffKV(a, b map[string]map[string]string) (added, removed int) {
	for t, kv := range b {
		for k, v := range kv {
			if old, ok := a[t][k]; !ok || old != v {
				added++
			}
		}
	}
	for t, kv := range a {
		for k := range kv {
			if _, ok := b[t][k]; !ok {
				removed++
			}
		}
	}
	return added, removed
}

func diffMap[V comparable](a, b map[string]V) int {
	n := 0
	for k, v := range b {
		if old, ok := a[k]; !ok || old != v {
			n++
		}
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			n++
		}
	}
	return n
}
