package client

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// TargetAll is the settings, maintenance and statistics target that
// names every route of the session.
const TargetAll = "ALL"

// Event types for Subscribe and Unsubscribe.
const (
	EventCertRenewed          = "cert_renewed"
	EventGlobalConfigChanged  = "global_config_changed"
	EventBackendHealthChanged = "backend_health_changed"
	EventConfigApplied        = "config_applied"
	EventSessionExpired       = "session_expired"
	EventLeaderChanged        = "leader_changed"
	EventNodeJoined           = "node_joined"
	EventNodeLeft             = "node_left"
	EventAll                  = "all"
	// EventOverflow is sent by a node after it had to drop asynchronous
	// lines for a client that read too slowly: {"dropped":N}.
	EventOverflow = "overflow"
)

// Route fields for RouteUpdate.
const (
	RouteFieldBackendURL = "backend_url"
	RouteFieldPriority   = "priority"
	RouteFieldDomains    = "domains"
	RouteFieldPath       = "path"
)

// Scopes for ConfigApplyPartial.
const (
	ScopeRoutes         = "routes"
	ScopeHeaders        = "headers"
	ScopeOptions        = "options"
	ScopeHealth         = "health"
	ScopeRateLimit      = "ratelimit"
	ScopeCircuitBreaker = "circuit_breaker"
)

// Route statuses in RouteList.
const (
	RouteActive         = "active"
	RouteStaged         = "staged"
	RoutePendingRemoval = "pending_removal"
)

// flexTime decodes an RFC 3339 time and treats null and "" as the zero
// time, since a server may send either for "never" (e.g. last_apply).
type flexTime time.Time

func (t *flexTime) UnmarshalJSON(b []byte) error {
	var s *string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("time: %w", err)
	}
	if s == nil || *s == "" {
		*t = flexTime{}
		return nil
	}
	v, err := time.Parse(time.RFC3339Nano, *s)
	if err != nil {
		return fmt.Errorf("time: %w", err)
	}
	*t = flexTime(v)
	return nil
}

// flexDomains decodes domains given as an array or as a comma list.
type flexDomains []string

func (d *flexDomains) UnmarshalJSON(b []byte) error {
	var list []string
	if err := json.Unmarshal(b, &list); err == nil {
		*d = list
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("domains: want an array or a comma list: %w", err)
	}
	*d = nil
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*d = append(*d, part)
		}
	}
	return nil
}

// SessionInfo is the SESSION_INFO payload; JSON keys are the protocol's.
type SessionInfo struct {
	SessionID       string          `json:"session_id"`
	ServiceName     string          `json:"service_name"`
	InstanceName    string          `json:"instance_name"`
	MaintenancePort int             `json:"maintenance_port"`
	Connected       bool            `json:"connected"`
	Node            string          `json:"node"`
	ConnectedAt     time.Time       `json:"connected_at"`
	UptimeSeconds   float64         `json:"uptime_seconds"`
	RoutesActive    int             `json:"routes_active"`
	RoutesStaged    int             `json:"routes_staged"`
	LastApply       time.Time       `json:"last_apply"`
	LastActivity    time.Time       `json:"last_activity"`
	Metadata        json.RawMessage `json:"metadata"`
	// ExpiresAt is set only while the session is detached.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

// UnmarshalJSON accepts null or "" for the times.
func (s *SessionInfo) UnmarshalJSON(b []byte) error {
	type plain SessionInfo
	aux := struct {
		*plain
		ConnectedAt  flexTime `json:"connected_at"`
		LastApply    flexTime `json:"last_apply"`
		LastActivity flexTime `json:"last_activity"`
		ExpiresAt    flexTime `json:"expires_at"`
	}{plain: (*plain)(s)}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	s.ConnectedAt, s.LastApply = time.Time(aux.ConnectedAt), time.Time(aux.LastApply)
	s.LastActivity, s.ExpiresAt = time.Time(aux.LastActivity), time.Time(aux.ExpiresAt)
	return nil
}

// RouteSpec describes a route to stage with RouteAdd or RouteAddBulk.
type RouteSpec struct {
	Domains    []string `json:"domains"`
	Path       string   `json:"path"`
	BackendURL string   `json:"backend_url"`
	Priority   int      `json:"priority"`
}

// BulkResult is one entry of the ROUTE_ADD_BULK answer, in request order.
type BulkResult struct {
	RouteID string `json:"route_id"`
	Status  string `json:"status"`
}

// Route is one route of the session as ROUTE_LIST reports it.
type Route struct {
	ID       string   `json:"route_id"`
	Domains  []string `json:"domains"`
	Path     string   `json:"path"`
	Backend  string   `json:"backend"`
	Priority int      `json:"priority"`
	// Status is RouteActive, RouteStaged or RoutePendingRemoval.
	Status string `json:"status"`
	// PendingUpdate is true for an active route with staged edits.
	PendingUpdate bool `json:"pending_update,omitempty"`
}

// UnmarshalJSON reads the ID from route_id or, for older servers, id, and
// accepts domains as an array or a comma list.
func (r *Route) UnmarshalJSON(b []byte) error {
	type plain Route
	aux := struct {
		*plain
		LegacyID string      `json:"id"`
		Domains  flexDomains `json:"domains"`
	}{plain: (*plain)(r)}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	if r.ID == "" {
		r.ID = aux.LegacyID
	}
	r.Domains = aux.Domains
	return nil
}

// CircuitStatus is the CIRCUIT_BREAKER_STATUS payload: the worst state
// over the cluster, and each node's own view.
type CircuitStatus struct {
	// State is "closed", "open" or "half_open".
	State       string              `json:"state"`
	Failures    int                 `json:"failures"`
	LastFailure time.Time           `json:"last_failure"`
	NextAttempt time.Time           `json:"next_attempt"`
	Nodes       []NodeCircuitStatus `json:"nodes"`
}

// NodeCircuitStatus is one node's breaker for the route.
type NodeCircuitStatus struct {
	Node        string    `json:"node"`
	State       string    `json:"state"`
	Failures    int       `json:"failures"`
	LastFailure time.Time `json:"last_failure"`
	NextAttempt time.Time `json:"next_attempt"`
}

// UnmarshalJSON accepts null or "" for the times.
func (n *NodeCircuitStatus) UnmarshalJSON(b []byte) error {
	type plain NodeCircuitStatus
	aux := struct {
		*plain
		LastFailure flexTime `json:"last_failure"`
		NextAttempt flexTime `json:"next_attempt"`
	}{plain: (*plain)(n)}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	n.LastFailure, n.NextAttempt = time.Time(aux.LastFailure), time.Time(aux.NextAttempt)
	return nil
}

// UnmarshalJSON accepts null or "" for the times, and nodes either as an
// array of objects with a "node" key or as an object keyed by node ID
// (sorted by ID then).
func (s *CircuitStatus) UnmarshalJSON(b []byte) error {
	type plain CircuitStatus
	aux := struct {
		*plain
		LastFailure flexTime        `json:"last_failure"`
		NextAttempt flexTime        `json:"next_attempt"`
		Nodes       json.RawMessage `json:"nodes"`
	}{plain: (*plain)(s)}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	s.LastFailure, s.NextAttempt = time.Time(aux.LastFailure), time.Time(aux.NextAttempt)
	s.Nodes = nil
	raw := bytes.TrimSpace(aux.Nodes)
	switch {
	case len(raw) == 0 || bytes.Equal(raw, []byte("null")):
	case raw[0] == '{':
		var m map[string]NodeCircuitStatus
		if err := json.Unmarshal(raw, &m); err != nil {
			return fmt.Errorf("nodes: %w", err)
		}
		for id, n := range m {
			if n.Node == "" {
				n.Node = id
			}
			s.Nodes = append(s.Nodes, n)
		}
		sort.Slice(s.Nodes, func(i, j int) bool { return s.Nodes[i].Node < s.Nodes[j].Node })
	default:
		if err := json.Unmarshal(raw, &s.Nodes); err != nil {
			return fmt.Errorf("nodes: %w", err)
		}
	}
	return nil
}

// ConfigDiff is the CONFIG_DIFF payload: what CONFIG_APPLY would change.
type ConfigDiff struct {
	Routes struct {
		Added    []DiffRoute `json:"added"`
		Removed  []DiffRoute `json:"removed"`
		Modified []DiffRoute `json:"modified"`
	} `json:"routes"`
	Headers struct {
		Added   int `json:"added"`
		Removed int `json:"removed"`
	} `json:"headers"`
	Options        DiffCount `json:"options"`
	Health         DiffCount `json:"health"`
	RateLimit      DiffCount `json:"ratelimit"`
	CircuitBreaker DiffCount `json:"circuit_breaker"`
}

// Empty reports whether nothing is staged.
func (d *ConfigDiff) Empty() bool {
	return len(d.Routes.Added)+len(d.Routes.Removed)+len(d.Routes.Modified) == 0 &&
		d.Headers.Added+d.Headers.Removed+d.Options.Modified+d.Health.Modified+
			d.RateLimit.Modified+d.CircuitBreaker.Modified == 0
}

// DiffCount counts modified settings of one kind.
type DiffCount struct {
	Modified int `json:"modified"`
}

// DiffRoute is one route in a ConfigDiff. The server may list a route as
// its bare ID or as an object; RouteID is filled either way and Raw keeps
// the original element.
type DiffRoute struct {
	RouteID string
	Raw     json.RawMessage
}

// UnmarshalJSON accepts "r1" or {"route_id":"r1",...} (or "id").
func (d *DiffRoute) UnmarshalJSON(b []byte) error {
	d.Raw = append(json.RawMessage(nil), b...)
	if err := json.Unmarshal(b, &d.RouteID); err == nil {
		return nil
	}
	var obj struct {
		RouteID string `json:"route_id"`
		ID      string `json:"id"`
	}
	if err := json.Unmarshal(b, &obj); err != nil {
		return fmt.Errorf("diff route: %w", err)
	}
	d.RouteID = obj.RouteID
	if d.RouteID == "" {
		d.RouteID = obj.ID
	}
	return nil
}

// MarshalJSON writes the original element back.
func (d DiffRoute) MarshalJSON() ([]byte, error) {
	if len(d.Raw) > 0 {
		return d.Raw, nil
	}
	return json.Marshal(d.RouteID)
}

// DrainStatus is the DRAIN_STATUS payload.
type DrainStatus struct {
	Active           bool      `json:"active"`
	StartedAt        time.Time `json:"started_at"`
	DurationSeconds  float64   `json:"duration_seconds"`
	ElapsedSeconds   float64   `json:"elapsed_seconds"`
	RemainingSeconds float64   `json:"remaining_seconds"`
	TrafficPercent   float64   `json:"traffic_percent"`
	// InFlight is summed over the cluster.
	InFlight int64 `json:"in_flight"`
}

// UnmarshalJSON accepts null or "" for started_at.
func (s *DrainStatus) UnmarshalJSON(b []byte) error {
	type plain DrainStatus
	aux := struct {
		*plain
		StartedAt flexTime `json:"started_at"`
	}{plain: (*plain)(s)}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	s.StartedAt = time.Time(aux.StartedAt)
	return nil
}

// MaintStatus is the MAINT_STATUS payload.
type MaintStatus struct {
	InMaintenance      []string  `json:"in_maintenance"`
	MaintenanceBackend string    `json:"maintenance_backend"`
	EnteredAt          time.Time `json:"entered_at"`
}

// UnmarshalJSON accepts null or "" for entered_at.
func (s *MaintStatus) UnmarshalJSON(b []byte) error {
	type plain MaintStatus
	aux := struct {
		*plain
		EnteredAt flexTime `json:"entered_at"`
	}{plain: (*plain)(s)}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	s.EnteredAt = time.Time(aux.EnteredAt)
	return nil
}

// RouteStats is one route's statistics, summed over the live nodes.
type RouteStats struct {
	RouteID       string  `json:"route_id"`
	Requests      int64   `json:"requests"`
	Errors        int64   `json:"errors"`
	AvgLatencyMS  float64 `json:"avg_latency_ms"`
	P95LatencyMS  float64 `json:"p95_latency_ms"`
	P99LatencyMS  float64 `json:"p99_latency_ms"`
	BytesSent     int64   `json:"bytes_sent"`
	BytesReceived int64   `json:"bytes_received"`
	// StatusCodes maps an HTTP status code ("200") to its count.
	StatusCodes    map[string]int64 `json:"status_codes"`
	NodesReporting int              `json:"nodes_reporting"`
}

// BackendTestResult is the BACKEND_TEST payload. OK is true for
// BACKEND_OK and false for BACKEND_FAIL.
type BackendTestResult struct {
	OK             bool    `json:"-"`
	Reachable      bool    `json:"reachable"`
	ResponseTimeMS float64 `json:"response_time_ms"`
	StatusCode     int     `json:"status_code"`
	TLSValid       bool    `json:"tls_valid"`
	Error          string  `json:"error,omitempty"`
}

// ClusterStatus is the CLUSTER_STATUS payload.
type ClusterStatus struct {
	// Leader is the leader's node ID, "" while there is none.
	Leader string       `json:"leader"`
	Term   uint64       `json:"term"`
	Nodes  []NodeStatus `json:"nodes"`
}

// NodeStatus is one member of the cluster.
type NodeStatus struct {
	ID           string `json:"id"`
	ControlAddr  string `json:"control_addr"`
	ProxyAddr    string `json:"proxy_addr"`
	RaftState    string `json:"raft_state"`
	AppliedIndex uint64 `json:"applied_index"`
	Alive        bool   `json:"alive"`
}

// maxDecompressed bounds a decompressed payload, so a corrupt or hostile
// response cannot make the client allocate without limit.
const maxDecompressed = 64 << 20

// decodePayload returns the JSON of a ROUTE_LIST or STATS_GET answer,
// undoing gzip+base64 when the server compressed it. The two forms cannot
// be confused: JSON starts with '[', '{' or whitespace, none of which is in
// the base64 alphabet.
func decodePayload(payload string) ([]byte, error) {
	p := strings.TrimSpace(payload)
	if p == "" || p[0] == '[' || p[0] == '{' || p == "null" {
		return []byte(p), nil
	}
	gz, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		return nil, fmt.Errorf("compressed payload: base64: %w", err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return nil, fmt.Errorf("compressed payload: gzip: %w", err)
	}
	defer zr.Close()
	out, err := io.ReadAll(io.LimitReader(zr, maxDecompressed+1))
	if err != nil {
		return nil, fmt.Errorf("compressed payload: gzip: %w", err)
	}
	if len(out) > maxDecompressed {
		return nil, fmt.Errorf("compressed payload: larger than %d bytes", maxDecompressed)
	}
	return out, nil
}
