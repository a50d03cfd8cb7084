package fsm

import "encoding/json"

// Session is one registered service instance: its identity, its liveness
// lease and its staged and active configuration.
//
// Times are Unix nanoseconds stamped by the node that proposed the command
// that set them; the FSM never reads a clock.
type Session struct {
	ID              string          `json:"id"`
	Service         string          `json:"service"`
	Instance        string          `json:"instance"`
	MaintenancePort int             `json:"maintenance_port"`
	Metadata        json.RawMessage `json:"metadata,omitempty"`
	CreatedAt       int64           `json:"created_at"`

	// Attachment names the node and connection holding the session's
	// attached connection; empty Node means detached.
	Attachment Attachment `json:"attachment"`
	// LastActivity is the last time any command named the session, or the
	// time its lease was last extended. Expiry counts the grace from here.
	LastActivity int64 `json:"last_activity"`
	// LastApply is when CONFIG_APPLY last made staged changes active; 0 never.
	LastApply int64 `json:"last_apply"`

	// Active is the configuration the data plane serves.
	Active Config `json:"active"`
	// Staged is the configuration CONFIG_APPLY would activate; nil means
	// nothing is staged (it equals Active).
	Staged *Config `json:"staged,omitempty"`
	// StagedAt is the last time a staging command touched Staged.
	StagedAt int64 `json:"staged_at,omitempty"`

	Maintenance   Maintenance `json:"maintenance"`
	Drain         *Drain      `json:"drain,omitempty"`
	Subscriptions []string    `json:"subscriptions,omitempty"` // sorted event types
	// BreakerResets counts CIRCUIT_BREAKER_RESET commands per route; each
	// node closes a route's breaker when it sees the number change.
	BreakerResets map[string]uint64 `json:"breaker_resets,omitempty"`
}

// Attachment is where a session's attached connection lives.
type Attachment struct {
	Node        string `json:"node,omitempty"`
	Conn        string `json:"conn,omitempty"` // connection ID unique within the node's incarnation
	ConnectedAt int64  `json:"connected_at,omitempty"`
}

// Attached reports whether the session has an attached connection.
func (a Attachment) Attached() bool { return a.Node != "" }

// Config is one session's configuration: routes and the settings keyed by
// target ("ALL" or a route ID). Maps encode with sorted keys, so snapshots
// stay byte-identical across nodes.
type Config struct {
	Routes         []Route                      `json:"routes,omitempty"` // ordered by route number
	Headers        map[string]map[string]string `json:"headers,omitempty"`
	Options        map[string]map[string]string `json:"options,omitempty"`
	Health         map[string]HealthCheck       `json:"health,omitempty"`
	RateLimit      map[string]RateLimit         `json:"ratelimit,omitempty"`
	CircuitBreaker map[string]CircuitBreaker    `json:"circuit_breaker,omitempty"`
}

// TargetAll is the settings target that applies to every route of a session.
const TargetAll = "ALL"

// Route is one routing rule of a session.
type Route struct {
	ID       string   `json:"id"`
	Domains  []string `json:"domains"` // lower case; "*.example.com" wildcards allowed
	Path     string   `json:"path"`
	Backend  string   `json:"backend"`
	Priority int      `json:"priority"`
}

// HealthCheck is an active health check: GET Path every Interval, failing
// after Timeout. Durations are nanoseconds.
type HealthCheck struct {
	Path     string `json:"path"`
	Interval int64  `json:"interval"`
	Timeout  int64  `json:"timeout"`
}

// RateLimit allows Requests per Window (nanoseconds) per client IP.
type RateLimit struct {
	Requests int   `json:"requests"`
	Window   int64 `json:"window"`
}

// CircuitBreaker opens after Threshold consecutive failures, stays open for
// Timeout nanoseconds, then lets HalfOpenRequests trial requests decide.
type CircuitBreaker struct {
	Threshold        int   `json:"threshold"`
	Timeout          int64 `json:"timeout"`
	HalfOpenRequests int   `json:"half_open_requests"`
	// ResetGeneration is set in routing tables only (from
	// Session.BreakerResets): each node closes the route's breaker when the
	// number changes.
	ResetGeneration uint64 `json:"reset_generation,omitempty"`
}

// Maintenance lists the session's routes that answer from a maintenance
// backend (or the built-in page when Backend is empty).
type Maintenance struct {
	Routes    []string `json:"routes,omitempty"` // sorted route IDs
	Backend   string   `json:"backend,omitempty"`
	EnteredAt int64    `json:"entered_at,omitempty"`
}

// Drain is a linear fall of the session's traffic share from 100% at
// StartedAt to 0% at StartedAt+Duration.
type Drain struct {
	StartedAt int64 `json:"started_at"`
	Duration  int64 `json:"duration"`
}

// EndsAt is when the session's traffic share reaches zero.
func (d Drain) EndsAt() int64 { return d.StartedAt + d.Duration }

// TrafficShare is the fraction (0..1) of new requests the session still
// takes at time now (Unix nanoseconds).
func (d Drain) TrafficShare(now int64) float64 {
	if d.Duration <= 0 || now >= d.EndsAt() {
		return 0
	}
	if now <= d.StartedAt {
		return 1
	}
	return 1 - float64(now-d.StartedAt)/float64(d.Duration)
}
