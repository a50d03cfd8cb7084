package fsm

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
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
	// dirty lists the routes whose place in the routing table may have
	// changed (what they served before the entry, after it, or both); the
	// FSM recomputes only them and their hosts.
	dirty []dirtyRoute
}

// dirtyRoute names a route of a session that a command changed.
type dirtyRoute struct{ session, route string }

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

// idempotent commands are the lease and staging housekeeping the nodes
// propose on their own: applying one twice changes nothing more, because
// each change is guarded by the entry's own time (activity only moves
// forward, expiry and discard re-check their deadline). They skip the
// request-ID table, so that housekeeping under many sessions does not
// push clients' writes out of the dedupe window.
var idempotent = map[CommandType]bool{
	CmdTouch: true, CmdExpire: true, CmdExtendLeases: true, CmdDiscardStaged: true, CmdNoop: true,
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
	if cmd.RequestID != "" && !idempotent[cmd.Type] {
		if r, ok := f.state.Requests.Lookup(cmd.RequestID); ok {
			// A retry of a write that already went in: answer as before,
			// change nothing.
			a.out.Result = r
			return a.out
		}
	}
	a.out.Result = a.dispatch()
	if !idempotent[cmd.Type] {
		f.state.Requests.Record(cmd.RequestID, a.out.Result)
	}
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

// routesChanged records that routes of a session may serve differently.
func (a *applyCtx) routesChanged(session string, ids ...string) {
	for _, id := range ids {
		a.out.dirty = append(a.out.dirty, dirtyRoute{session, id})
	}
}

// sessionChanged records that every active route of s may serve
// differently. A command that removes routes calls it before removing them.
func (a *applyCtx) sessionChanged(s *Session) {
	for i := range s.Active.Routes {
		a.routesChanged(s.ID, s.Active.Routes[i].ID)
	}
}

func fail(format string, args ...any) Result { return Result{Err: fmt.Sprintf(format, args...)} }

// endSession removes a session and everything it serves in one step.
func (a *applyCtx) endSession(s *Session, reason string) {
	a.st.removeOwner(s, s.Active.Routes)
	delete(a.st.Sessions, s.ID)
	if a.st.byInstance[instanceKey(s.Service, s.Instance)] == s.ID {
		delete(a.st.byInstance, instanceKey(s.Service, s.Instance))
	}
	a.sessionChanged(s)
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
