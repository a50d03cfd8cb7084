package protocol

import (
	"context"
	"encoding/json"
	"sort"
	"time"

	"github.com/raftgate/raftgate/fsm"
	"github.com/raftgate/raftgate/proxy"
)

// backendTestTimeout is BACKEND_TEST's limit from PROTOCOL.md.
const backendTestTimeout = 5 * time.Second

func (s *Server) cmdDrainStart(c *conn, r *request) reply {
	d, err := fsm.ParseDuration(r.args[0])
	if err != nil {
		return errReply(err.Error())
	}
	if d <= 0 {
		return errReply("invalid duration: must be positive")
	}
	res, bad := s.propose(fsm.CmdDrainStart, r.session, fsm.DrainPayload{Duration: int64(d)})
	if bad != nil {
		return *bad
	}
	return ok("DRAIN_OK", res.Value)
}

func (s *Server) cmdDrainCancel(c *conn, r *request) reply {
	return s.write("DRAIN_OK", fsm.CmdDrainCancel, r.session, nil)
}

// drainStatus is the DRAIN_STATUS answer.
type drainStatus struct {
	Active           bool    `json:"active"`
	StartedAt        string  `json:"started_at"`
	DurationSeconds  float64 `json:"duration_seconds"`
	ElapsedSeconds   float64 `json:"elapsed_seconds"`
	RemainingSeconds float64 `json:"remaining_seconds"`
	TrafficPercent   float64 `json:"traffic_percent"`
	InFlight         int64   `json:"in_flight"`
}

func (s *Server) cmdDrainStatus(c *conn, r *request) reply {
	var drain *fsm.Drain
	bad := s.read(r.session, func(st *fsm.State, sess *fsm.Session) reply {
		if sess.Drain == nil {
			return errReply(fsm.ErrNoDrain)
		}
		d := *sess.Drain
		drain = &d
		return reply{}
	})
	if drain == nil {
		return bad
	}
	now := time.Now().UnixNano()
	elapsed := min(max(now-drain.StartedAt, 0), drain.Duration)
	st := drainStatus{
		Active:           now < drain.EndsAt(),
		StartedAt:        *rfc3339(drain.StartedAt),
		DurationSeconds:  round3(time.Duration(drain.Duration).Seconds()),
		ElapsedSeconds:   round3(time.Duration(elapsed).Seconds()),
		RemainingSeconds: round3(time.Duration(drain.Duration - elapsed).Seconds()),
		TrafficPercent:   round3(100 * drain.TrafficShare(now)),
	}
	ctx, cancel := c.commandContext()
	defer cancel()
	answers, _ := s.cfg.Cluster.FanOut(ctx, rpcInFlight, []byte(r.session))
	for _, a := range answers {
		var n int64
		if json.Unmarshal(a, &n) == nil {
			st.InFlight += n
		}
	}
	return jsonReply("DRAIN_STATUS_OK", st, false)
}

func round3(f float64) float64 { return float64(int64(f*1000+0.5)) / 1000 }

func (s *Server) cmdMaintEnter(c *conn, r *request) reply {
	target := r.args[0]
	backend := ""
	if len(r.args) == 2 {
		backend = r.args[1]
	}
	if err := fsm.ValidateMaintTarget(target); err != nil {
		return errReply(err.Error())
	}
	if backend != "" {
		if err := fsm.ValidateBackendURL(backend); err != nil {
			return errReply(err.Error())
		}
	}
	return s.write("ACK", fsm.CmdMaintEnter, r.session, fsm.MaintPayload{Target: target, Backend: backend})
}

func (s *Server) cmdMaintExit(c *conn, r *request) reply {
	if err := fsm.ValidateMaintTarget(r.args[0]); err != nil {
		return errReply(err.Error())
	}
	return s.write("ACK", fsm.CmdMaintExit, r.session, fsm.MaintPayload{Target: r.args[0]})
}

// maintStatus is the MAINT_STATUS answer.
type maintStatus struct {
	InMaintenance      []string `json:"in_maintenance"`
	MaintenanceBackend string   `json:"maintenance_backend"`
	EnteredAt          *string  `json:"entered_at"`
}

func (s *Server) cmdMaintStatus(c *conn, r *request) reply {
	return s.read(r.session, func(st *fsm.State, sess *fsm.Session) reply {
		m := maintStatus{
			InMaintenance:      append([]string{}, sess.Maintenance.Routes...),
			MaintenanceBackend: sess.Maintenance.Backend,
			EnteredAt:          rfc3339(sess.Maintenance.EnteredAt),
		}
		return jsonReply("MAINT_STATUS_OK", m, false)
	})
}

// activeRoute reports whether the session serves route id.
func activeRoute(sess *fsm.Session, id string) bool {
	for _, rt := range sess.Active.Routes {
		if rt.ID == id {
			return true
		}
	}
	return false
}

func (s *Server) cmdCircuitBreakerReset(c *conn, r *request) reply {
	if err := fsm.ValidateRouteID(r.args[0]); err != nil {
		return errReply(fsm.ErrRouteNotFound)
	}
	return s.write("CIRCUIT_OK", fsm.CmdCircuitBreakerReset, r.session, fsm.RoutePayload{RouteID: r.args[0]})
}

// breakerNode is one node's breaker in CIRCUIT_BREAKER_STATUS.
type breakerNode struct {
	Node        string  `json:"node"`
	State       string  `json:"state"`
	Failures    int64   `json:"failures"`
	LastFailure *string `json:"last_failure"`
	NextAttempt *string `json:"next_attempt"`
}

// breakerStatus is the CIRCUIT_BREAKER_STATUS answer: the worst node's
// state at the top, every node below.
type breakerStatus struct {
	State       string        `json:"state"`
	Failures    int64         `json:"failures"`
	LastFailure *string       `json:"last_failure"`
	NextAttempt *string       `json:"next_attempt"`
	Nodes       []breakerNode `json:"nodes"`
}

var breakerRank = map[string]int{"closed": 0, "half_open": 1, "open": 2}

func timePtr(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	return rfc3339(t.UnixNano())
}

func (s *Server) cmdCircuitBreakerStatus(c *conn, r *request) reply {
	id := r.args[0]
	if bad := s.read(r.session, func(st *fsm.State, sess *fsm.Session) reply {
		if fsm.ValidateRouteID(id) != nil || !activeRoute(sess, id) {
			return errReply(fsm.ErrRouteNotFound)
		}
		return reply{}
	}); bad.code != "" {
		return bad
	}
	ctx, cancel := c.commandContext()
	defer cancel()
	answers, _ := s.cfg.Cluster.FanOut(ctx, rpcBreaker, []byte(id))
	out := breakerStatus{State: "closed", Nodes: []breakerNode{}}
	worst := -1
	for _, node := range sortedKeys(answers) {
		var b proxy.BreakerStatus
		if json.Unmarshal(answers[node], &b) != nil {
			continue
		}
		bn := breakerNode{Node: node, State: b.State, Failures: int64(b.Failures),
			LastFailure: timePtr(b.LastFailure), NextAttempt: timePtr(b.NextAttempt)}
		out.Nodes = append(out.Nodes, bn)
		if rank := breakerRank[b.State]; rank > worst {
			worst = rank
			out.State, out.Failures, out.LastFailure, out.NextAttempt = bn.State, bn.Failures, bn.LastFailure, bn.NextAttempt
		}
	}
	return jsonReply("CIRCUIT_STATUS_OK", out, false)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// routeStats is one element of the STATS_GET answer.
type routeStats struct {
	RouteID        string           `json:"route_id"`
	Requests       int64            `json:"requests"`
	Errors         int64            `json:"errors"`
	AvgLatencyMs   float64          `json:"avg_latency_ms"`
	P95LatencyMs   float64          `json:"p95_latency_ms"`
	P99LatencyMs   float64          `json:"p99_latency_ms"`
	BytesSent      int64            `json:"bytes_sent"`
	BytesReceived  int64            `json:"bytes_received"`
	StatusCodes    map[string]int64 `json:"status_codes"`
	NodesReporting int              `json:"nodes_reporting"`
}

func (s *Server) cmdStatsGet(c *conn, r *request) reply {
	target, compressed := fsm.TargetAll, false
	args := r.args
	if n := len(args); n > 0 && args[n-1] == "compressed" {
		compressed = true
		args = args[:n-1]
	}
	if len(args) == 2 {
		return errReplyf("invalid format: STATS_GET needs %s", commands["STATS_GET"].usage)
	}
	if len(args) == 1 && args[0] != "" {
		target = args[0]
	}
	var ids []string
	if bad := s.read(r.session, func(st *fsm.State, sess *fsm.Session) reply {
		if target == fsm.TargetAll {
			for _, rt := range sess.Active.Routes {
				ids = append(ids, rt.ID)
			}
			return reply{}
		}
		if fsm.ValidateRouteID(target) != nil || !activeRoute(sess, target) {
			return errReply(fsm.ErrRouteNotFound)
		}
		ids = []string{target}
		return reply{}
	}); bad.code != "" {
		return bad
	}
	req, _ := json.Marshal(ids)
	ctx, cancel := c.commandContext()
	defer cancel()
	answers, _ := s.cfg.Cluster.FanOut(ctx, rpcStats, req)
	perNode := make([]map[string]proxy.RouteStats, 0, len(answers))
	for _, node := range sortedKeys(answers) {
		var m map[string]proxy.RouteStats
		if json.Unmarshal(answers[node], &m) == nil {
			perNode = append(perNode, m)
		}
	}
	out := make([]routeStats, 0, len(ids))
	for _, id := range ids {
		parts := make([]proxy.RouteStats, 0, len(perNode))
		for _, m := range perNode {
			parts = append(parts, m[id])
		}
		merged := proxy.MergeRouteStats(parts...)
		rs := routeStats{
			RouteID:        id,
			Requests:       merged.Requests,
			Errors:         merged.Errors,
			AvgLatencyMs:   round3(merged.Latency.Mean()),
			P95LatencyMs:   round3(merged.Latency.Quantile(0.95)),
			P99LatencyMs:   round3(merged.Latency.Quantile(0.99)),
			BytesSent:      merged.BytesSent,
			BytesReceived:  merged.BytesReceived,
			StatusCodes:    map[string]int64{},
			NodesReporting: len(perNode),
		}
		for code, n := range merged.StatusCodes {
			rs.StatusCodes[itoa(code)] = n
		}
		out = append(out, rs)
	}
	if target != fsm.TargetAll {
		return jsonReply("STATS_OK", out[0], compressed)
	}
	return jsonReply("STATS_OK", out, compressed)
}

func (s *Server) cmdBackendTest(c *conn, r *request) reply {
	if err := fsm.ValidateBackendURL(r.args[0]); err != nil {
		return errReply(err.Error())
	}
	// The session must exist: BACKEND_TEST is not an open relay.
	if bad := s.read(r.session, func(*fsm.State, *fsm.Session) reply { return reply{} }); bad.code != "" {
		return bad
	}
	ctx, cancel := context.WithTimeout(s.ctx, backendTestTimeout+time.Second)
	defer cancel()
	res := proxy.TestBackend(ctx, r.args[0], backendTestTimeout)
	if res.Reachable {
		return jsonReply("BACKEND_OK", res, false)
	}
	return jsonReply("BACKEND_FAIL", res, false)
}
