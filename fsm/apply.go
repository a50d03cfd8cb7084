package fsm

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Limits that keep one session from growing the state without bound.
const (
	MaxSessions         = 100000
	MaxRoutesPerSession = 10000
	MaxSettingsPerKind  = 1000 // distinct targets × keys per settings kind
)

// Business errors returned as Result.Err; the client sees them after ERROR|.
const (
	ErrSessionNotFound = "session not found"
	ErrRouteNotFound   = "route not found"
	ErrNoDrain         = "no drain in progress"
)

// applied is what applyCommand returns for one entry.
type applied struct {
	Notification
	tableDirty bool
}

// applier applies one command type. sess is the named session, already
// looked up (nil for commands that name none).
type applier func(a *applyCtx) Result

// applyCtx carries one entry through its applier.
type applyCtx struct {
	st    *State
	cmd   *Command
	sess  *Session
	out   applied
	index uint64
}

// sessionless commands do not name one session; the rest fail with
// "session not found" when theirs is unknown, and count as its activity.
var sessionless = map[CommandType]bool{
	CmdRegister: true, CmdTouch: true, CmdExpire: true, CmdDetachNode: true,
	CmdExtendLeases: true, CmdDiscardStaged: true, CmdNoop: true,
}

// appliers is the one table from command type to applier.
var appliers = map[CommandType]applier{
	CmdRegister:            applyRegister,
	CmdAttach:              applyAttach,
	CmdDetach:              applyDetach,
	CmdTouch:               applyTouch,
	CmdExpire:              applyExpire,
	CmdShutdown:            applyShutdown,
	CmdRouteAdd:            applyRouteAdd,
	CmdRouteAddBulk:        applyRouteAddBulk,
	CmdRouteUpdate:         applyRouteUpdate,
	CmdRouteRemove:         applyRouteRemove,
	CmdHeadersSet:          applyHeadersSet,
	CmdHeadersRemove:       applyHeadersRemove,
	CmdOptionsSet:          applyOptionsSet,
	CmdOptionsRemove:       applyOptionsRemove,
	CmdHealthSet:           applyHealthSet,
	CmdRateLimitSet:        applyRateLimitSet,
	CmdCircuitBreakerSet:   applyCircuitBreakerSet,
	CmdConfigApply:         applyConfigApply,
	CmdConfigRollback:      applyConfigRollback,
	CmdDrainStart:          applyDrainStart,
	CmdDrainCancel:         applyDrainCancel,
	CmdMaintEnter:          applyMaintEnter,
	CmdMaintExit:           applyMaintExit,
	CmdSubscribe:           applySubscribe,
	CmdUnsubscribe:         applyUnsubscribe,
	CmdCircuitBreakerReset: applyCircuitBreakerReset,
	CmdDetachNode:          applyDetachNode,
	CmdExtendLeases:        applyExtendLeases,
	CmdDiscardStaged:       applyDiscardStaged,
	CmdNoop:                func(*applyCtx) Result { return Result{} },
}

// applyCommand applies one decoded command at log index. Called with f.mu held.
func (f *FSM) applyCommand(cmd *Command, index uint64) applied {
	a := &applyCtx{st: f.state, cmd: cmd, index: index}
	a.out.Index = index
	a.out.Command = cmd
	if cmd.RequestID != "" {
		if r, ok := f.state.Requests.Lookup(cmd.RequestID); ok {
			// A retry of a write that already went in: answer as before,
			// change nothing.
			a.out.Result = r
			return a.out
		}
	}
	a.out.Result = a.dispatch()
	f.state.Requests.Record(cmd.RequestID, a.out.Result)
	return a.out
}

func (a *applyCtx) dispatch() Result {
	fn, ok := appliers[a.cmd.Type]
	if !ok {
		// A command type this binary does not know: refuse it the same way
		// on every node rather than guess.
		return Result{Err: fmt.Sprintf("unsupported command type %d", a.cmd.Type)}
	}
	if !sessionless[a.cmd.Type] {
		a.sess = a.st.Sessions[a.cmd.Session]
		if a.sess == nil {
			return Result{Err: ErrSessionNotFound}
		}
		if a.cmd.At > a.sess.LastActivity {
			a.sess.LastActivity = a.cmd.At
		}
	}
	return fn(a)
}

func fail(format string, args ...any) Result { return Result{Err: fmt.Sprintf(format, args...)} }

// endSession removes a session and everything it serves in one step.
func (a *applyCtx) endSession(s *Session, reason string) {
	a.st.removeOwner(s, s.Active.Routes)
	delete(a.st.Sessions, s.ID)
	if a.st.byInstance[instanceKey(s.Service, s.Instance)] == s.ID {
		delete(a.st.byInstance, instanceKey(s.Service, s.Instance))
	}
	if len(s.Active.Routes) > 0 {
		a.out.tableDirty = true
	}
	a.out.Ended = append(a.out.Ended, EndedSession{Session: *s, Reason: reason})
}

func applyRegister(a *applyCtx) Result {
	var p RegisterPayload
	if err := a.cmd.Decode(&p); err != nil {
		return fail("invalid format: %v", err)
	}
	if ValidateServiceName(p.Service) != nil {
		return fail("invalid service name")
	}
	if ValidateInstanceName(p.Instance) != nil {
		return fail("invalid instance name")
	}
	if ValidateSessionID(p.SessionID) != nil || a.st.Sessions[p.SessionID] != nil {
		return fail("invalid session id")
	}
	if p.MaintenancePort < 0 || p.MaintenancePort > 65535 {
		return fail("invalid maintenance port: %d", p.MaintenancePort)
	}
	if old := a.st.Sessions[a.st.byInstance[instanceKey(p.Service, p.Instance)]]; old != nil {
		a.endSession(old, "replaced")
	} else if len(a.st.Sessions) >= MaxSessions {
		return fail("too many sessions (max %d)", MaxSessions)
	}
	s := &Session{
		ID: p.SessionID, Service: p.Service, Instance: p.Instance,
		MaintenancePort: p.MaintenancePort, Metadata: p.Metadata,
		CreatedAt: a.cmd.At, LastActivity: a.cmd.At,
	}
	if p.Conn != "" {
		s.Attachment = Attachment{Node: a.cmd.Node, Conn: p.Conn, ConnectedAt: a.cmd.At}
	}
	a.st.Sessions[s.ID] = s
	a.st.byInstance[instanceKey(s.Service, s.Instance)] = s.ID
	return Result{Value: s.ID}
}

func applyAttach(a *applyCtx) Result {
	var p ConnPayload
	if err := a.cmd.Decode(&p); err != nil {
		return fail("invalid format: %v", err)
	}
	a.sess.Attachment = Attachment{Node: a.cmd.Node, Conn: p.Conn, ConnectedAt: a.cmd.At}
	return Result{}
}

func applyDetach(a *applyCtx) Result {
	var p ConnPayload
	if err := a.cmd.Decode(&p); err != nil {
		return fail("invalid format: %v", err)
	}
	// Only the attachment this connection made may be released: a newer
	// attach elsewhere must not be undone by a late detach.
	if a.sess.Attachment.Node == a.cmd.Node && a.sess.Attachment.Conn == p.Conn {
		a.sess.Attachment = Attachment{}
	}
	return Result{}
}

func applyTouch(a *applyCtx) Result {
	var p SessionsPayload
	if err := a.cmd.Decode(&p); err != nil {
		return fail("invalid format: %v", err)
	}
	for _, id := range p.Sessions {
		if s := a.st.Sessions[id]; s != nil && a.cmd.At > s.LastActivity {
			s.LastActivity = a.cmd.At
		}
	}
	return Result{}
}

func applyExpire(a *applyCtx) Result {
	var p SessionsPayload
	if err := a.cmd.Decode(&p); err != nil {
		return fail("invalid format: %v", err)
	}
	var ended []string
	for _, id := range p.Sessions {
		// Re-check against the entry's own time: activity applied between
		// the leader's scan and this entry keeps the session.
		if s := a.st.Sessions[id]; s != nil && sessionExpired(s, a.cmd.At, p.Grace) {
			a.endSession(s, "expired")
			ended = append(ended, id)
		}
	}
	return Result{Value: strings.Join(ended, ",")}
}

func applyShutdown(a *applyCtx) Result {
	a.endSession(a.sess, "shutdown")
	return Result{}
}

// staged returns the session's staged configuration, copying the active one
// on first use, and marks it touched.
func (a *applyCtx) staged() *Config {
	if a.sess.Staged == nil {
		c := a.sess.Active.Clone()
		a.sess.Staged = &c
	}
	a.sess.StagedAt = a.cmd.At
	return a.sess.Staged
}

// stagedRoute finds a route of the staged (or, with nothing staged, active)
// configuration.
func (a *applyCtx) stagedRoute(id string) (*Config, int) {
	c := a.sess.Staged
	if c == nil {
		c = &a.sess.Active
	}
	for i := range c.Routes {
		if c.Routes[i].ID == id {
			return c, i
		}
	}
	return c, -1
}

func (a *applyCtx) nextRouteID() string {
	id := "r" + strconv.FormatUint(a.st.NextRoute, 10)
	a.st.NextRoute++
	return id
}

func specRoute(id string, r RouteSpec) Route {
	return Route{ID: id, Domains: r.Domains, Path: r.Path, Backend: r.Backend, Priority: r.Priority}
}

func applyRouteAdd(a *applyCtx) Result {
	var p RouteSpec
	if err := a.cmd.Decode(&p); err != nil {
		return fail("invalid format: %v", err)
	}
	if err := ValidateRouteSpec(p); err != nil {
		return fail("%v", err)
	}
	if c, _ := a.stagedRoute(""); len(c.Routes) >= MaxRoutesPerSession {
		return fail("too many routes (max %d)", MaxRoutesPerSession)
	}
	c := a.staged()
	id := a.nextRouteID()
	c.Routes = append(c.Routes, specRoute(id, p))
	return Result{Value: id}
}

// BulkRouteStatus is one element of the ROUTE_ADD_BULK answer.
type BulkRouteStatus struct {
	RouteID string `json:"route_id"`
	Status  string `json:"status"`
}

func applyRouteAddBulk(a *applyCtx) Result {
	var p RouteAddBulkPayload
	if err := a.cmd.Decode(&p); err != nil {
		return fail("invalid format: %v", err)
	}
	if len(p.Routes) == 0 {
		return fail("no routes given")
	}
	for i, r := range p.Routes {
		if err := ValidateRouteSpec(r); err != nil {
			return fail("route %d: %v", i, err)
		}
	}
	if c, _ := a.stagedRoute(""); len(c.Routes)+len(p.Routes) > MaxRoutesPerSession {
		return fail("too many routes (max %d)", MaxRoutesPerSession)
	}
	c := a.staged()
	out := make([]BulkRouteStatus, 0, len(p.Routes))
	for _, r := range p.Routes {
		id := a.nextRouteID()
		c.Routes = append(c.Routes, specRoute(id, r))
		out = append(out, BulkRouteStatus{RouteID: id, Status: "ok"})
	}
	b, _ := json.Marshal(out)
	return Result{Value: string(b)}
}

func applyRouteUpdate(a *applyCtx) Result {
	var p RouteUpdatePayload
	if err := a.cmd.Decode(&p); err != nil {
		return fail("invalid format: %v", err)
	}
	if _, i := a.stagedRoute(p.RouteID); i < 0 {
		return fail(ErrRouteNotFound)
	}
	c := a.staged()
	_, i := a.stagedRoute(p.RouteID)
	r := c.Routes[i]
	r.Domains = append([]string(nil), r.Domains...)
	switch p.Field {
	case "backend_url":
		r.Backend = p.Value
	case "priority":
		n, err := ParsePriority(p.Value)
		if err != nil {
			return fail("%v", err)
		}
		r.Priority = n
	case "domains":
		d, err := ParseDomains(p.Value)
		if err != nil {
			return fail("%v", err)
		}
		r.Domains = d
	case "path":
		r.Path = p.Value
	default:
		return fail("unknown route field: %s", p.Field)
	}
	if err := ValidateRouteSpec(RouteSpec{Domains: r.Domains, Path: r.Path, Backend: r.Backend, Priority: r.Priority}); err != nil {
		return fail("%v", err)
	}
	c.Routes[i] = r
	return Result{}
}

func applyRouteRemove(a *applyCtx) Result {
	var p RoutePayload
	if err := a.cmd.Decode(&p); err != nil {
		return fail("invalid format: %v", err)
	}
	if _, i := a.stagedRoute(p.RouteID); i < 0 {
		if a.sess.Active.route(p.RouteID) != nil {
			return Result{} // already pending removal
		}
		return fail(ErrRouteNotFound)
	}
	c := a.staged()
	_, i := a.stagedRoute(p.RouteID)
	c.Routes = append(c.Routes[:i:i], c.Routes[i+1:]...)
	c.dropTarget(p.RouteID)
	return Result{}
}

// checkTarget accepts ALL or a route the session has staged or active.
func (a *applyCtx) checkTarget(target string) *Result {
	if err := ValidateTarget(target); err != nil {
		r := fail("%v", err)
		return &r
	}
	if target == TargetAll {
		return nil
	}
	if _, i := a.stagedRoute(target); i < 0 {
		r := fail(ErrRouteNotFound)
		return &r
	}
	return nil
}

func (a *applyCtx) setting() (SettingPayload, *Result) {
	var p SettingPayload
	if err := a.cmd.Decode(&p); err != nil {
		r := fail("invalid format: %v", err)
		return p, &r
	}
	return p, a.checkTarget(p.Target)
}

func setKV(m map[string]map[string]string, target, key, value string) (map[string]map[string]string, bool) {
	if m == nil {
		m = make(map[string]map[string]string)
	}
	if m[target] == nil {
		m[target] = make(map[string]string)
	}
	if _, exists := m[target][key]; !exists && countKV(m) >= MaxSettingsPerKind {
		return m, false
	}
	m[target][key] = value
	return m, true
}

func countKV(m map[string]map[string]string) int {
	n := 0
	for _, kv := range m {
		n += len(kv)
	}
	return n
}

func removeKV(m map[string]map[string]string, target, key string) {
	if kv := m[target]; kv != nil {
		delete(kv, key)
		if len(kv) == 0 {
			delete(m, target)
		}
	}
}

func applyHeadersSet(a *applyCtx) Result {
	p, bad := a.setting()
	if bad != nil {
		return *bad
	}
	if err := ValidateHeaderName(p.Key); err != nil {
		return fail("%v", err)
	}
	if err := ValidateHeaderValue(p.Value); err != nil {
		return fail("%v", err)
	}
	c := a.staged()
	var ok bool
	if c.Headers, ok = setKV(c.Headers, p.Target, p.Key, p.Value); !ok {
		return fail("too many headers (max %d)", MaxSettingsPerKind)
	}
	return Result{}
}

func applyHeadersRemove(a *applyCtx) Result {
	p, bad := a.setting()
	if bad != nil {
		return *bad
	}
	removeKV(a.staged().Headers, p.Target, p.Key)
	return Result{}
}

func applyOptionsSet(a *applyCtx) Result {
	p, bad := a.setting()
	if bad != nil {
		return *bad
	}
	v, err := NormalizeOption(p.Key, p.Value)
	if err != nil {
		return fail("%v", err)
	}
	c := a.staged()
	var ok bool
	if c.Options, ok = setKV(c.Options, p.Target, p.Key, v); !ok {
		return fail("too many options (max %d)", MaxSettingsPerKind)
	}
	return Result{}
}

func applyOptionsRemove(a *applyCtx) Result {
	p, bad := a.setting()
	if bad != nil {
		return *bad
	}
	if _, err := NormalizeOption(p.Key, ""); err != nil && strings.HasPrefix(err.Error(), "unknown option") {
		return fail("%v", err)
	}
	removeKV(a.staged().Options, p.Target, p.Key)
	return Result{}
}

func applyHealthSet(a *applyCtx) Result {
	p, bad := a.setting()
	if bad != nil {
		return *bad
	}
	c := a.staged()
	if p.Health == nil {
		delete(c.Health, p.Target)
		return Result{}
	}
	h := *p.Health
	if err := ValidateHealth(h.Path, time.Duration(h.Interval), time.Duration(h.Timeout)); err != nil {
		return fail("%v", err)
	}
	if c.Health == nil {
		c.Health = make(map[string]HealthCheck)
	}
	c.Health[p.Target] = h
	return Result{}
}

func applyRateLimitSet(a *applyCtx) Result {
	p, bad := a.setting()
	if bad != nil {
		return *bad
	}
	c := a.staged()
	if p.RateLimit == nil || p.RateLimit.Requests == 0 {
		delete(c.RateLimit, p.Target)
		return Result{}
	}
	rl := *p.RateLimit
	if err := ValidateRateLimit(rl.Requests, time.Duration(rl.Window)); err != nil {
		return fail("%v", err)
	}
	if c.RateLimit == nil {
		c.RateLimit = make(map[string]RateLimit)
	}
	c.RateLimit[p.Target] = rl
	return Result{}
}

func applyCircuitBreakerSet(a *applyCtx) Result {
	p, bad := a.setting()
	if bad != nil {
		return *bad
	}
	c := a.staged()
	if p.CircuitBreaker == nil {
		delete(c.CircuitBreaker, p.Target)
		return Result{}
	}
	cb := *p.CircuitBreaker
	cb.ResetGeneration = 0
	if err := ValidateCircuitBreaker(cb.Threshold, time.Duration(cb.Timeout), cb.HalfOpenRequests); err != nil {
		return fail("%v", err)
	}
	if c.CircuitBreaker == nil {
		c.CircuitBreaker = make(map[string]CircuitBreaker)
	}
	c.CircuitBreaker[p.Target] = cb
	return Result{}
}

func applyConfigApply(a *applyCtx) Result {
	var p ApplyPayload
	if len(a.cmd.Payload) > 0 {
		if err := a.cmd.Decode(&p); err != nil {
			return fail("invalid format: %v", err)
		}
	}
	scopes := p.Scopes
	if len(scopes) == 0 {
		scopes = AllScopes
	}
	if a.sess.Staged == nil {
		return Result{}
	}
	next := a.sess.Active.merge(a.sess.Staged, scopes)
	if msg := validateConfig(a.st, a.sess, &next); msg != "" {
		return fail("%s", msg)
	}
	a.st.removeOwner(a.sess, a.sess.Active.Routes)
	a.sess.Active = next
	a.st.addOwner(a.sess, a.sess.Active.Routes)
	if len(p.Scopes) == 0 || a.sess.Staged.equal(&a.sess.Active) {
		a.sess.Staged = nil
	}
	a.sess.LastApply = a.cmd.At
	a.sess.Maintenance.Routes = keepActive(a.sess.Maintenance.Routes, &a.sess.Active)
	if len(a.sess.Maintenance.Routes) == 0 {
		a.sess.Maintenance = Maintenance{}
	}
	a.out.tableDirty = true
	return Result{}
}

func applyConfigRollback(a *applyCtx) Result {
	a.sess.Staged = nil
	return Result{}
}

func applyDrainStart(a *applyCtx) Result {
	var p DrainPayload
	if err := a.cmd.Decode(&p); err != nil {
		return fail("invalid format: %v", err)
	}
	if p.Duration <= 0 {
		return fail("invalid duration: must be positive")
	}
	a.sess.Drain = &Drain{StartedAt: a.cmd.At, Duration: p.Duration}
	a.out.tableDirty = true
	return Result{Value: time.Unix(0, a.sess.Drain.EndsAt()).UTC().Format(time.RFC3339)}
}

func applyDrainCancel(a *applyCtx) Result {
	if a.sess.Drain == nil {
		return fail(ErrNoDrain)
	}
	a.sess.Drain = nil
	a.out.tableDirty = true
	return Result{}
}

// resolveTarget turns a maintenance target into route IDs among routes:
// ALL, a comma list of route IDs, a path ("/api") or a domain.
func resolveTarget(target string, routes []Route) ([]string, string) {
	var out []string
	switch {
	case target == TargetAll:
		for _, r := range routes {
			out = append(out, r.ID)
		}
	case strings.HasPrefix(target, "r") && ValidateRouteID(strings.Split(target, ",")[0]) == nil:
		for _, id := range strings.Split(target, ",") {
			found := false
			for _, r := range routes {
				if r.ID == id {
					found = true
				}
			}
			if !found {
				return nil, ErrRouteNotFound
			}
			out = append(out, id)
		}
	case strings.HasPrefix(target, "/"):
		for _, r := range routes {
			if r.Path == target {
				out = append(out, r.ID)
			}
		}
	default:
		d := strings.ToLower(target)
		for _, r := range routes {
			for _, rd := range r.Domains {
				if rd == d {
					out = append(out, r.ID)
					break
				}
			}
		}
	}
	if len(out) == 0 {
		return nil, "no route matches target: " + target
	}
	return sortedUnique(out), ""
}

func applyMaintEnter(a *applyCtx) Result {
	var p MaintPayload
	if err := a.cmd.Decode(&p); err != nil {
		return fail("invalid format: %v", err)
	}
	if p.Backend != "" {
		if err := ValidateBackendURL(p.Backend); err != nil {
			return fail("%v", err)
		}
	}
	ids, msg := resolveTarget(p.Target, a.sess.Active.Routes)
	if msg != "" {
		return fail("%s", msg)
	}
	m := &a.sess.Maintenance
	m.Routes = sortedUnique(append(m.Routes, ids...))
	m.Backend = p.Backend
	m.EnteredAt = a.cmd.At
	a.out.tableDirty = true
	return Result{Value: strings.Join(ids, ",")}
}

func applyMaintExit(a *applyCtx) Result {
	var p MaintPayload
	if err := a.cmd.Decode(&p); err != nil {
		return fail("invalid format: %v", err)
	}
	var inMaint []Route
	for _, id := range a.sess.Maintenance.Routes {
		if r := a.sess.Active.route(id); r != nil {
			inMaint = append(inMaint, *r)
		}
	}
	ids, msg := resolveTarget(p.Target, inMaint)
	if msg != "" {
		return fail("not in maintenance: %s", p.Target)
	}
	drop := make(map[string]bool, len(ids))
	for _, id := range ids {
		drop[id] = true
	}
	var keep []string
	for _, id := range a.sess.Maintenance.Routes {
		if !drop[id] {
			keep = append(keep, id)
		}
	}
	a.sess.Maintenance.Routes = keep
	if len(keep) == 0 {
		a.sess.Maintenance = Maintenance{}
	}
	a.out.tableDirty = true
	return Result{Value: strings.Join(ids, ",")}
}

func applySubscribe(a *applyCtx) Result {
	var p SubscribePayload
	if err := a.cmd.Decode(&p); err != nil {
		return fail("invalid format: %v", err)
	}
	if err := ValidateEventType(p.Type); err != nil {
		return fail("%v", err)
	}
	a.sess.Subscriptions = sortedUnique(append(a.sess.Subscriptions, p.Type))
	return Result{}
}

func applyUnsubscribe(a *applyCtx) Result {
	var p SubscribePayload
	if err := a.cmd.Decode(&p); err != nil {
		return fail("invalid format: %v", err)
	}
	if err := ValidateEventType(p.Type); err != nil {
		return fail("%v", err)
	}
	if p.Type == "all" {
		a.sess.Subscriptions = nil
		return Result{}
	}
	var keep []string
	for _, t := range a.sess.Subscriptions {
		if t != p.Type {
			keep = append(keep, t)
		}
	}
	a.sess.Subscriptions = keep
	return Result{}
}

func applyCircuitBreakerReset(a *applyCtx) Result {
	var p RoutePayload
	if err := a.cmd.Decode(&p); err != nil {
		return fail("invalid format: %v", err)
	}
	if a.sess.Active.route(p.RouteID) == nil {
		return fail(ErrRouteNotFound)
	}
	if a.sess.BreakerResets == nil {
		a.sess.BreakerResets = make(map[string]uint64)
	}
	a.sess.BreakerResets[p.RouteID]++
	a.out.tableDirty = true
	return Result{}
}

func applyDetachNode(a *applyCtx) Result {
	var p DetachNodePayload
	if err := a.cmd.Decode(&p); err != nil {
		return fail("invalid format: %v", err)
	}
	var detached []string
	for _, id := range a.st.sortedSessionIDs() {
		s := a.st.Sessions[id]
		if s.Attachment.Node != p.Node {
			continue
		}
		if p.KeepIncarnation != "" && strings.HasPrefix(s.Attachment.Conn, p.KeepIncarnation+"-") {
			continue
		}
		s.Attachment = Attachment{}
		if a.cmd.At > s.LastActivity {
			s.LastActivity = a.cmd.At
		}
		detached = append(detached, id)
	}
	return Result{Value: strings.Join(detached, ",")}
}

func applyExtendLeases(a *applyCtx) Result {
	for _, s := range a.st.Sessions {
		if !s.Attachment.Attached() && a.cmd.At > s.LastActivity {
			s.LastActivity = a.cmd.At
		}
	}
	return Result{}
}

func applyDiscardStaged(a *applyCtx) Result {
	var p SessionsPayload
	if err := a.cmd.Decode(&p); err != nil {
		return fail("invalid format: %v", err)
	}
	for _, id := range p.Sessions {
		if s := a.st.Sessions[id]; s != nil && s.Staged != nil && a.cmd.At-s.StagedAt > p.Grace {
			s.Staged = nil
		}
	}
	return Result{}
}

func sortedUnique(in []string) []string {
	if len(in) == 0 {
		return nil
	}
	out := append([]string(nil), in...)
	sort.Strings(out)
	w := 1
	for i := 1; i < len(out); i++ {
		if out[i] != out[w-1] {
			out[w] = out[i]
			w++
		}
	}
	return out[:w]
}

func keepActive(ids []string, c *Config) []string {
	var out []string
	for _, id := range ids {
		if c.route(id) != nil {
			out = append(out, id)
		}
	}
	return out
}
