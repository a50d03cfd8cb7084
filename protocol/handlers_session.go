package protocol

import (
	"time"

	"github.com/raftgate/raftgate/fsm"
)

func (s *Server) cmdRegister(c *conn, r *request) reply {
	service, instance, portText := r.args[0], r.args[1], r.args[2]
	if err := fsm.ValidateServiceName(service); err != nil {
		return errReply("invalid service name")
	}
	if instance == "" {
		instance = c.remoteIP()
	}
	if err := fsm.ValidateInstanceName(instance); err != nil {
		return errReply("invalid instance name")
	}
	port, err := fsm.ParsePort(portText)
	if err != nil {
		return errReply(err.Error())
	}
	p := fsm.RegisterPayload{Service: service, Instance: instance, MaintenancePort: port, Conn: c.id}
	if len(r.args) == 4 {
		md, err := fsm.ParseMetadata(r.args[3])
		if err != nil {
			return errReply("invalid metadata json")
		}
		p.Metadata = md
	}
	// The session ID is made here, not in Apply: it is random, and Apply
	// must be deterministic.
	id, err := fsm.NewSessionID(service)
	if err != nil {
		return errReply("internal error: could not make a session id")
	}
	p.SessionID = id
	res, bad := s.propose(fsm.CmdRegister, "", p)
	if bad != nil {
		return *bad
	}
	s.attach(res.Value, c)
	s.log.Info("session registered", "session", res.Value, "service", service, "instance", printable(instance, 64), "conn", c.id)
	return ok("ACK", res.Value)
}

func (s *Server) cmdReconnect(c *conn, r *request) reply {
	if _, bad := s.propose(fsm.CmdAttach, r.session, fsm.ConnPayload{Conn: c.id}); bad != nil {
		if bad.fields[0] == fsm.ErrSessionNotFound {
			return ok("REREGISTER")
		}
		return *bad
	}
	s.attach(r.session, c)
	s.log.Info("session reattached", "session", r.session, "conn", c.id)
	return ok("OK")
}

func (s *Server) cmdPing(c *conn, r *request) reply {
	if r.session == "" {
		return ok("PONG")
	}
	// A local look first: PING is a keepalive and should stay cheap; only
	// a miss pays for the linearizable read.
	found := false
	s.cfg.FSM.View(func(st *fsm.State) { found = st.Sessions[r.session] != nil })
	if found {
		return ok("PONG")
	}
	return s.read(r.session, func(*fsm.State, *fsm.Session) reply { return ok("PONG") })
}

// sessionInfo is the SESSION_INFO answer; keys in PROTOCOL.md order.
type sessionInfo struct {
	SessionID       string  `json:"session_id"`
	ServiceName     string  `json:"service_name"`
	InstanceName    string  `json:"instance_name"`
	MaintenancePort int     `json:"maintenance_port"`
	Connected       bool    `json:"connected"`
	Node            string  `json:"node"`
	ConnectedAt     *string `json:"connected_at"`
	UptimeSeconds   int64   `json:"uptime_seconds"`
	RoutesActive    int     `json:"routes_active"`
	RoutesStaged    int     `json:"routes_staged"`
	LastApply       *string `json:"last_apply"`
	LastActivity    string  `json:"last_activity"`
	Metadata        any     `json:"metadata"`
	ExpiresAt       *string `json:"expires_at,omitempty"`
}

// rfc3339 formats Unix nanoseconds as RFC 3339 UTC; nil for zero.
func rfc3339(ns int64) *string {
	if ns == 0 {
		return nil
	}
	t := time.Unix(0, ns).UTC().Format(time.RFC3339)
	return &t
}

func (s *Server) cmdSessionInfo(c *conn, r *request) reply {
	now := time.Now()
	return s.read(r.session, func(st *fsm.State, sess *fsm.Session) reply {
		info := sessionInfo{
			SessionID:       sess.ID,
			ServiceName:     sess.Service,
			InstanceName:    sess.Instance,
			MaintenancePort: sess.MaintenancePort,
			Connected:       sess.Attachment.Attached(),
			Node:            sess.Attachment.Node,
			ConnectedAt:     rfc3339(sess.Attachment.ConnectedAt),
			UptimeSeconds:   int64(now.Sub(time.Unix(0, sess.CreatedAt)).Seconds()),
			RoutesActive:    len(sess.Active.Routes),
			LastApply:       rfc3339(sess.LastApply),
			LastActivity:    *rfc3339(max(sess.LastActivity, 1)),
			Metadata:        map[string]any{},
		}
		for _, rs := range sess.RouteList() {
			if rs.Status == "staged" {
				info.RoutesStaged++
			}
		}
		if len(sess.Metadata) > 0 {
			info.Metadata = sess.Metadata
		}
		if !info.Connected {
			info.ExpiresAt = rfc3339(sess.LastActivity + int64(s.cfg.SessionGrace))
		}
		return jsonReply("SESSION_OK", info, false)
	})
}

func (s *Server) cmdClientShutdown(c *conn, r *request) reply {
	if _, bad := s.propose(fsm.CmdShutdown, r.session, nil); bad != nil {
		return *bad
	}
	s.release(r.session, c)
	s.log.Info("session shut down by client", "session", r.session, "conn", c.id)
	return ok("SHUTDOWN_OK")
}

func (s *Server) cmdClusterStatus(c *conn, r *request) reply {
	ctx, cancel := c.commandContext()
	defer cancel()
	return jsonReply("CLUSTER_OK", s.cfg.Cluster.Status(ctx), false)
}
