package protocol

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/raftgate/raftgate/fsm"
	"github.com/raftgate/raftgate/proxy"
)

// Internal RPC names this server serves to the other nodes.
const (
	rpcStats    = "protocol.stats"    // req: JSON route IDs; resp: map route ID → proxy.RouteStats
	rpcBreaker  = "protocol.breaker"  // req: route ID; resp: proxy.BreakerStatus
	rpcInFlight = "protocol.inflight" // req: session ID; resp: int64
	rpcEvent    = "protocol.event"    // req: eventEnvelope; delivered to a locally attached session
)

// eventEnvelope carries an event to the node holding a session.
type eventEnvelope struct {
	Session string          `json:"session"`
	Type    string          `json:"type"`
	Data    json.RawMessage `json:"data"`
}

func (s *Server) registerRPC() {
	cl := s.cfg.Cluster
	cl.RegisterHandler(rpcStats, func(_ context.Context, req []byte) ([]byte, error) {
		var ids []string
		if err := json.Unmarshal(req, &ids); err != nil {
			return nil, err
		}
		out := make(map[string]proxy.RouteStats, len(ids))
		for _, id := range ids {
			out[id] = s.cfg.DataPlane.RouteStats(id)
		}
		return json.Marshal(out)
	})
	cl.RegisterHandler(rpcBreaker, func(_ context.Context, req []byte) ([]byte, error) {
		return json.Marshal(s.cfg.DataPlane.BreakerStatus(string(req)))
	})
	cl.RegisterHandler(rpcInFlight, func(_ context.Context, req []byte) ([]byte, error) {
		return json.Marshal(s.cfg.DataPlane.SessionInFlight(string(req)))
	})
	cl.RegisterHandler(rpcEvent, func(_ context.Context, req []byte) ([]byte, error) {
		var ev eventEnvelope
		if err := json.Unmarshal(req, &ev); err != nil {
			return nil, err
		}
		s.deliverLocal(ev.Session, ev.Type, ev.Data)
		return nil, nil
	})
}

// subscribed reports whether the session wants events of type t.
func (s *Server) subscribed(sessionID, t string) (attachedNode string, ok bool) {
	s.cfg.FSM.View(func(st *fsm.State) {
		sess := st.Sessions[sessionID]
		if sess == nil {
			return
		}
		attachedNode = sess.Attachment.Node
		for _, sub := range sess.Subscriptions {
			if sub == t || sub == "all" {
				ok = true
				return
			}
		}
	})
	return attachedNode, ok
}

// deliverLocal writes an event to the session's connection on this node,
// if it is attached here and subscribed.
func (s *Server) deliverLocal(sessionID, t string, data json.RawMessage) {
	if _, ok := s.subscribed(sessionID, t); !ok {
		return
	}
	if c := s.attachedConn(sessionID); c != nil {
		c.sendAsync("EVENT|" + t + "|" + string(data))
	}
}

// Emit sends an event to one session wherever in the cluster it is
// attached.
func (s *Server) Emit(sessionID, t string, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		return
	}
	node, ok := s.subscribed(sessionID, t)
	if !ok || node == "" {
		return
	}
	if node == s.nodeID {
		s.deliverLocal(sessionID, t, data)
		return
	}
	req, _ := json.Marshal(eventEnvelope{Session: sessionID, Type: t, Data: data})
	go func() {
		ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
		defer cancel()
		if _, err := s.cfg.Cluster.Call(ctx, node, rpcEvent, req); err != nil {
			s.log.Debug("forward event", "session", sessionID, "type", t, "to", node, "err", err)
		}
	}()
}

// EmitLocal sends an event to every session attached on this node that
// subscribed to its type. Cluster-wide events (leader_changed, node_joined,
// node_left, global_config_changed, cert_renewed) are observed by every
// node, so each delivers to its own connections and every subscriber gets
// one copy.
func (s *Server) EmitLocal(t string, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		return
	}
	s.mu.Lock()
	ids := make([]string, 0, len(s.attached))
	for id := range s.attached {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	for _, id := range ids {
		s.deliverLocal(id, t, data)
	}
}

// HealthChanged forwards a proxy health flip as backend_health_changed to
// the sessions owning the route.
func (s *Server) HealthChanged(ev proxy.HealthEvent) {
	// The routing table knows each active route's session: no scan of
	// every session per event.
	members := s.cfg.FSM.Table().Routes.Get(ev.RouteID)
	if len(members) == 0 {
		return
	}
	s.Emit(members[0].SessionID, "backend_health_changed", map[string]any{
		"route_id": ev.RouteID, "backend": ev.Backend, "healthy": ev.Healthy, "reason": ev.Reason, "node": ev.Node,
	})
}

// observe reacts to applied log entries on this node: it keeps the local
// attachment table true to the log, sends log-driven events, and starts
// maintenance watchers for sessions attached here. It runs on the FSM's
// goroutine, so it only queues work.
func (s *Server) observe(n fsm.Notification) {
	cmd := n.Command
	for _, e := range n.Ended {
		if c := s.attachedConn(e.Session.ID); c != nil {
			s.release(e.Session.ID, c)
		}
		if e.Reason == "expired" {
			s.emitToService(e.Session.Service, "session_expired", map[string]any{
				"session_id": e.Session.ID, "service_name": e.Session.Service, "instance_name": e.Session.Instance,
			})
		}
	}
	if n.Result.Err != "" {
		return
	}
	switch cmd.Type {
	case fsm.CmdAttach, fsm.CmdRegister:
		// A newer attachment on another connection replaces ours.
		if c := s.attachedConn(cmd.Session); c != nil && cmd.Type == fsm.CmdAttach {
			var p fsm.ConnPayload
			if cmd.Decode(&p) == nil && (cmd.Node != s.nodeID || p.Conn != c.id) {
				s.release(cmd.Session, c)
			}
		}
	case fsm.CmdConfigApply:
		s.emitLogged(cmd.Session, "config_applied", map[string]any{"session_id": cmd.Session, "index": n.Index})
	case fsm.CmdMaintEnter, fsm.CmdMaintExit:
		if s.attachedConn(cmd.Session) == nil {
			return
		}
		var p fsm.MaintPayload
		if cmd.Decode(&p) != nil {
			return
		}
		var backends []string
		if cmd.Type == fsm.CmdMaintEnter {
			if p.Backend != "" {
				backends = []string{p.Backend}
			}
		} else {
			backends = s.routeBackends(cmd.Session, strings.Split(n.Result.Value, ","))
		}
		s.watchers.Add(1)
		go func() {
			defer s.watchers.Done()
			s.watchMaintenance(cmd.Session, p.Target, backends)
		}()
	}
}

// emitToService sends an event to every subscribed session of a service.
func (s *Server) emitToService(service, t string, v any) {
	var ids []string
	s.cfg.FSM.View(func(st *fsm.State) {
		for id, sess := range st.Sessions {
			if sess.Service == service {
				ids = append(ids, id)
			}
		}
	})
	for _, id := range ids {
		s.emitLogged(id, t, v)
	}
}

// emitLogged delivers an event that comes from the applied log. Every node
// applies the same entry, so only the node holding the session's attached
// connection delivers it: each subscriber gets exactly one copy.
func (s *Server) emitLogged(sessionID, t string, v any) {
	if s.attachedConn(sessionID) == nil {
		return
	}
	data, err := json.Marshal(v)
	if err != nil {
		return
	}
	s.deliverLocal(sessionID, t, data)
}

func (s *Server) routeBackends(sessionID string, ids []string) []string {
	var out []string
	s.cfg.FSM.View(func(st *fsm.State) {
		sess := st.Sessions[sessionID]
		if sess == nil {
			return
		}
		for _, rt := range sess.Active.Routes {
			for _, id := range ids {
				if rt.ID == id {
					out = append(out, rt.Backend)
				}
			}
		}
	})
	return out
}

// watchMaintenance waits until every backend answers HTTP, then sends
// MAINT_OK|target to the session's attached connection, or the timeout
// error after MaintTimeout.
func (s *Server) watchMaintenance(sessionID, target string, backends []string) {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.MaintTimeout)
	defer cancel()
	pending := backends
	for len(pending) > 0 {
		var still []string
		for _, b := range pending {
			res := proxy.TestBackend(ctx, b, 2*time.Second)
			if !res.Reachable {
				still = append(still, b)
			}
		}
		pending = still
		if len(pending) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			if c := s.attachedConn(sessionID); c != nil && s.ctx.Err() == nil {
				c.sendAsync("ERROR|timeout waiting for maintenance page to become reachable")
			}
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
	if c := s.attachedConn(sessionID); c != nil {
		c.sendAsync("MAINT_OK|" + target)
	}
}
