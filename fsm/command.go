package fsm

import (
	"encoding/json"
	"fmt"
)

// CommandType tags every log entry.
//
// The numbers are append-only: a number, once released, keeps its meaning
// forever because old logs and snapshots replay it. Never reuse or renumber.
type CommandType uint8

// The command types of the replicated log.
const (
	CmdRegister            CommandType = 1
	CmdAttach              CommandType = 2
	CmdDetach              CommandType = 3
	CmdTouch               CommandType = 4
	CmdExpire              CommandType = 5
	CmdShutdown            CommandType = 6
	CmdRouteAdd            CommandType = 7
	CmdRouteAddBulk        CommandType = 8
	CmdRouteUpdate         CommandType = 9
	CmdRouteRemove         CommandType = 10
	CmdHeadersSet          CommandType = 11
	CmdHeadersRemove       CommandType = 12
	CmdOptionsSet          CommandType = 13
	CmdOptionsRemove       CommandType = 14
	CmdHealthSet           CommandType = 15
	CmdRateLimitSet        CommandType = 16
	CmdCircuitBreakerSet   CommandType = 17
	CmdConfigApply         CommandType = 18
	CmdConfigRollback      CommandType = 19
	CmdDrainStart          CommandType = 20
	CmdDrainCancel         CommandType = 21
	CmdMaintEnter          CommandType = 22
	CmdMaintExit           CommandType = 23
	CmdSubscribe           CommandType = 24
	CmdUnsubscribe         CommandType = 25
	CmdCircuitBreakerReset CommandType = 26
	CmdDetachNode          CommandType = 27
	CmdExtendLeases        CommandType = 28
	CmdDiscardStaged       CommandType = 29
	CmdNoop                CommandType = 30
)

// Command is the envelope of every log entry. The proposing node stamps At
// (its clock, Unix nanoseconds), Node and RequestID before the entry reaches
// Raft, so Apply needs no clock and no randomness.
type Command struct {
	Type      CommandType     `json:"-"`
	RequestID string          `json:"rid,omitempty"`
	Node      string          `json:"node,omitempty"`
	At        int64           `json:"at"`
	Session   string          `json:"s,omitempty"`
	Payload   json.RawMessage `json:"p,omitempty"`
}

// NewCommand builds a command with payload p encoded as JSON.
func NewCommand(t CommandType, session string, p any) (*Command, error) {
	c := &Command{Type: t, Session: session}
	if p != nil {
		b, err := json.Marshal(p)
		if err != nil {
			return nil, fmt.Errorf("encode %s payload: %w", t, err)
		}
		c.Payload = b
	}
	return c, nil
}

// Encode returns the log entry bytes: one type byte, then the JSON envelope.
func (c *Command) Encode() ([]byte, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode command %s: %w", c.Type, err)
	}
	out := make([]byte, 0, len(b)+1)
	out = append(out, byte(c.Type))
	return append(out, b...), nil
}

// IsNoop reports whether a log entry written by Encode is a CmdNoop, an
// entry that changes no state, without decoding it.
func IsNoop(entry []byte) bool {
	return len(entry) > 0 && CommandType(entry[0]) == CmdNoop
}

// DecodeCommand parses a log entry written by Encode.
func DecodeCommand(b []byte) (*Command, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("decode command: entry of %d bytes is too short", len(b))
	}
	c := &Command{}
	if err := json.Unmarshal(b[1:], c); err != nil {
		return nil, fmt.Errorf("decode command type %d: %w", b[0], err)
	}
	c.Type = CommandType(b[0])
	return c, nil
}

// Decode unmarshals the payload into p.
func (c *Command) Decode(p any) error {
	if len(c.Payload) == 0 {
		return fmt.Errorf("%s: missing payload", c.Type)
	}
	if err := json.Unmarshal(c.Payload, p); err != nil {
		return fmt.Errorf("%s payload: %w", c.Type, err)
	}
	return nil
}

var commandNames = map[CommandType]string{
	CmdRegister: "register", CmdAttach: "attach", CmdDetach: "detach", CmdTouch: "touch",
	CmdExpire: "expire", CmdShutdown: "shutdown", CmdRouteAdd: "route_add",
	CmdRouteAddBulk: "route_add_bulk", CmdRouteUpdate: "route_update", CmdRouteRemove: "route_remove",
	CmdHeadersSet: "headers_set", CmdHeadersRemove: "headers_remove", CmdOptionsSet: "options_set",
	CmdOptionsRemove: "options_remove", CmdHealthSet: "health_set", CmdRateLimitSet: "ratelimit_set",
	CmdCircuitBreakerSet: "circuit_breaker_set", CmdConfigApply: "config_apply",
	CmdConfigRollback: "config_rollback", CmdDrainStart: "drain_start", CmdDrainCancel: "drain_cancel",
	CmdMaintEnter: "maint_enter", CmdMaintExit: "maint_exit", CmdSubscribe: "subscribe",
	CmdUnsubscribe: "unsubscribe", CmdCircuitBreakerReset: "circuit_breaker_reset",
	CmdDetachNode: "detach_node", CmdExtendLeases: "extend_leases", CmdDiscardStaged: "discard_staged",
	CmdNoop: "noop",
}

// String names the command type for logs.
func (t CommandType) String() string {
	if n, ok := commandNames[t]; ok {
		return n
	}
	return fmt.Sprintf("command(%d)", uint8(t))
}

// Result is what applying a command returned. Err is a business error
// ("route not found") sent to the client as ERROR|Err; it is a value, not a
// failure of the log.
type Result struct {
	Value string `json:"v,omitempty"`
	Err   string `json:"err,omitempty"`
}

// RegisterPayload creates a session. The proposer makes SessionID with
// crypto/rand; the FSM only checks it is unused.
type RegisterPayload struct {
	SessionID       string          `json:"session_id"`
	Service         string          `json:"service"`
	Instance        string          `json:"instance"`
	MaintenancePort int             `json:"maintenance_port"`
	Metadata        json.RawMessage `json:"metadata,omitempty"`
	Conn            string          `json:"conn,omitempty"` // attaching connection; empty registers detached
}

// ConnPayload names a connection of the proposing node (attach, detach).
type ConnPayload struct {
	Conn string `json:"conn"`
}

// SessionsPayload names sessions (touch, expire, discard_staged).
type SessionsPayload struct {
	Sessions []string `json:"sessions"`
	// Grace is the idle time after which a detached session expires, or
	// staged changes are discarded; the FSM re-checks it against At so an
	// entry racing with fresh activity changes nothing.
	Grace int64 `json:"grace,omitempty"`
}

// RouteSpec is a route as the client wrote it, already validated.
type RouteSpec struct {
	Domains  []string `json:"domains"`
	Path     string   `json:"path"`
	Backend  string   `json:"backend"`
	Priority int      `json:"priority"`
}

// RouteAddBulkPayload stages several routes, all or nothing.
type RouteAddBulkPayload struct {
	Routes []RouteSpec `json:"routes"`
}

// RouteUpdatePayload changes one field of a route.
type RouteUpdatePayload struct {
	RouteID string `json:"route_id"`
	Field   string `json:"field"`
	Value   string `json:"value"`
}

// RoutePayload names one route (remove, circuit breaker reset).
type RoutePayload struct {
	RouteID string `json:"route_id"`
}

// SettingPayload stages one setting of a target. Key and Value carry
// headers and options; the typed fields carry the other settings, where a
// nil pointer removes the setting.
type SettingPayload struct {
	Target         string          `json:"target"`
	Key            string          `json:"key,omitempty"`
	Value          string          `json:"value,omitempty"`
	Health         *HealthCheck    `json:"health,omitempty"`
	RateLimit      *RateLimit      `json:"ratelimit,omitempty"`
	CircuitBreaker *CircuitBreaker `json:"circuit_breaker,omitempty"`
}

// ApplyPayload activates staged configuration; empty Scopes means all.
type ApplyPayload struct {
	Scopes []string `json:"scopes,omitempty"`
}

// Scopes of CONFIG_APPLY_PARTIAL.
const (
	ScopeRoutes         = "routes"
	ScopeHeaders        = "headers"
	ScopeOptions        = "options"
	ScopeHealth         = "health"
	ScopeRateLimit      = "ratelimit"
	ScopeCircuitBreaker = "circuit_breaker"
)

// AllScopes lists every scope in a fixed order.
var AllScopes = []string{ScopeRoutes, ScopeHeaders, ScopeOptions, ScopeHealth, ScopeRateLimit, ScopeCircuitBreaker}

// DrainPayload starts a drain of Duration nanoseconds at the command's At.
type DrainPayload struct {
	Duration int64 `json:"duration"`
}

// MaintPayload enters or leaves maintenance for a target: ALL, a comma list
// of route IDs, a path ("/api") or a domain.
type MaintPayload struct {
	Target  string `json:"target"`
	Backend string `json:"backend,omitempty"`
}

// SubscribePayload adds or removes one event type.
type SubscribePayload struct {
	Type string `json:"type"`
}

// DetachNodePayload detaches every session attached on Node, except those
// attached through connections of the incarnation KeepIncarnation (a node
// that restarted clears the attachments of its earlier life).
type DetachNodePayload struct {
	Node            string `json:"node"`
	KeepIncarnation string `json:"keep_incarnation,omitempty"`
}
