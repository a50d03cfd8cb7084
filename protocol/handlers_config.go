package protocol

import (
	"strconv"
	"time"

	"github.com/raftgate/raftgate/fsm"
)

func (s *Server) cmdRouteAdd(c *conn, r *request) reply {
	domains, err := fsm.ParseDomains(r.args[0])
	if err != nil {
		return errReply(err.Error())
	}
	priority, err := fsm.ParsePriority(r.args[3])
	if err != nil {
		return errReply(err.Error())
	}
	spec := fsm.RouteSpec{Domains: domains, Path: r.args[1], Backend: r.args[2], Priority: priority}
	if err := fsm.ValidateRouteSpec(spec); err != nil {
		return errReply(err.Error())
	}
	res, bad := s.propose(fsm.CmdRouteAdd, r.session, spec)
	if bad != nil {
		return *bad
	}
	return ok("ROUTE_OK", res.Value)
}

func (s *Server) cmdRouteAddBulk(c *conn, r *request) reply {
	routes, err := fsm.ParseBulkRoutes(r.args[0])
	if err != nil {
		return errReply(err.Error())
	}
	res, bad := s.propose(fsm.CmdRouteAddBulk, r.session, fsm.RouteAddBulkPayload{Routes: routes})
	if bad != nil {
		return *bad
	}
	return ok("ROUTE_BULK_OK", res.Value)
}

func (s *Server) cmdRouteUpdate(c *conn, r *request) reply {
	id, field, value := r.args[0], r.args[1], r.args[2]
	if err := fsm.ValidateRouteID(id); err != nil {
		return errReply(fsm.ErrRouteNotFound)
	}
	var err error
	switch field {
	case "backend_url":
		err = fsm.ValidateBackendURL(value)
	case "priority":
		_, err = fsm.ParsePriority(value)
	case "domains":
		_, err = fsm.ParseDomains(value)
	case "path":
		err = fsm.ValidatePath(value)
	default:
		return errReply("unknown route field: " + printable(field, 64) + " (backend_url, priority, domains, path)")
	}
	if err != nil {
		return errReply(err.Error())
	}
	return s.write("ROUTE_OK", fsm.CmdRouteUpdate, r.session, fsm.RouteUpdatePayload{RouteID: id, Field: field, Value: value})
}

func (s *Server) cmdRouteRemove(c *conn, r *request) reply {
	if err := fsm.ValidateRouteID(r.args[0]); err != nil {
		return errReply(fsm.ErrRouteNotFound)
	}
	return s.write("ROUTE_OK", fsm.CmdRouteRemove, r.session, fsm.RoutePayload{RouteID: r.args[0]})
}

// compressedFlag parses the optional trailing "compressed" field.
func compressedFlag(f string) (bool, *reply) {
	if f == "compressed" {
		return true, nil
	}
	r := errReply("invalid format: expected compressed, got " + printable(f, 32))
	return false, &r
}

func (s *Server) cmdRouteList(c *conn, r *request) reply {
	compressed := false
	if len(r.args) == 1 {
		var bad *reply
		if compressed, bad = compressedFlag(r.args[0]); bad != nil {
			return *bad
		}
	}
	return s.read(r.session, func(st *fsm.State, sess *fsm.Session) reply {
		return jsonReply("ROUTE_LIST_OK", sess.RouteList(), compressed)
	})
}

// checkTarget validates a settings target before it reaches the log.
func checkTarget(target string) *reply {
	if err := fsm.ValidateTarget(target); err != nil {
		r := errReply(err.Error())
		return &r
	}
	return nil
}

func (s *Server) cmdHeadersSet(c *conn, r *request) reply {
	if bad := checkTarget(r.args[0]); bad != nil {
		return *bad
	}
	if err := fsm.ValidateHeaderName(r.args[1]); err != nil {
		return errReply(err.Error())
	}
	if err := fsm.ValidateHeaderValue(r.args[2]); err != nil {
		return errReply(err.Error())
	}
	return s.write("HEADERS_OK", fsm.CmdHeadersSet, r.session, fsm.SettingPayload{Target: r.args[0], Key: r.args[1], Value: r.args[2]})
}

func (s *Server) cmdHeadersRemove(c *conn, r *request) reply {
	if bad := checkTarget(r.args[0]); bad != nil {
		return *bad
	}
	if err := fsm.ValidateHeaderName(r.args[1]); err != nil {
		return errReply(err.Error())
	}
	return s.write("HEADERS_OK", fsm.CmdHeadersRemove, r.session, fsm.SettingPayload{Target: r.args[0], Key: r.args[1]})
}

func (s *Server) cmdOptionsSet(c *conn, r *request) reply {
	if bad := checkTarget(r.args[0]); bad != nil {
		return *bad
	}
	v, err := fsm.NormalizeOption(r.args[1], r.args[2])
	if err != nil {
		return errReply(err.Error())
	}
	return s.write("OPTIONS_OK", fsm.CmdOptionsSet, r.session, fsm.SettingPayload{Target: r.args[0], Key: r.args[1], Value: v})
}

func (s *Server) cmdOptionsRemove(c *conn, r *request) reply {
	if bad := checkTarget(r.args[0]); bad != nil {
		return *bad
	}
	if !fsm.KnownOption(r.args[1]) {
		return errReply("unknown option: " + printable(r.args[1], 64))
	}
	return s.write("OPTIONS_OK", fsm.CmdOptionsRemove, r.session, fsm.SettingPayload{Target: r.args[0], Key: r.args[1]})
}

func (s *Server) cmdHealthSet(c *conn, r *request) reply {
	if bad := checkTarget(r.args[0]); bad != nil {
		return *bad
	}
	interval, err := fsm.ParseDuration(r.args[2])
	if err != nil {
		return errReply(err.Error())
	}
	timeout, err := fsm.ParseDuration(r.args[3])
	if err != nil {
		return errReply(err.Error())
	}
	if err := fsm.ValidateHealth(r.args[1], interval, timeout); err != nil {
		return errReply(err.Error())
	}
	h := &fsm.HealthCheck{Path: r.args[1], Interval: int64(interval), Timeout: int64(timeout)}
	return s.write("HEALTH_OK", fsm.CmdHealthSet, r.session, fsm.SettingPayload{Target: r.args[0], Health: h})
}

func (s *Server) cmdRateLimitSet(c *conn, r *request) reply {
	if bad := checkTarget(r.args[0]); bad != nil {
		return *bad
	}
	n, err := strconv.Atoi(r.args[1])
	if err != nil {
		return errReply("invalid requests: " + printable(r.args[1], 32))
	}
	var window int64
	if n != 0 || r.args[2] != "" {
		w, err := fsm.ParseDuration(r.args[2])
		if err != nil {
			return errReply(err.Error())
		}
		window = int64(w)
	}
	if err := fsm.ValidateRateLimit(n, time.Duration(window)); err != nil {
		return errReply(err.Error())
	}
	var rl *fsm.RateLimit
	if n > 0 {
		rl = &fsm.RateLimit{Requests: n, Window: window}
	}
	return s.write("RATELIMIT_OK", fsm.CmdRateLimitSet, r.session, fsm.SettingPayload{Target: r.args[0], RateLimit: rl})
}

func (s *Server) cmdCircuitBreakerSet(c *conn, r *request) reply {
	if bad := checkTarget(r.args[0]); bad != nil {
		return *bad
	}
	threshold, err := strconv.Atoi(r.args[1])
	if err != nil {
		return errReply("invalid threshold: " + printable(r.args[1], 32))
	}
	timeout, err := fsm.ParseDuration(r.args[2])
	if err != nil {
		return errReply(err.Error())
	}
	half, err := strconv.Atoi(r.args[3])
	if err != nil {
		return errReply("invalid half_open_requests: " + printable(r.args[3], 32))
	}
	if err := fsm.ValidateCircuitBreaker(threshold, timeout, half); err != nil {
		return errReply(err.Error())
	}
	cb := &fsm.CircuitBreaker{Threshold: threshold, Timeout: int64(timeout), HalfOpenRequests: half}
	return s.write("CIRCUIT_OK", fsm.CmdCircuitBreakerSet, r.session, fsm.SettingPayload{Target: r.args[0], CircuitBreaker: cb})
}

func (s *Server) cmdConfigValidate(c *conn, r *request) reply {
	if bad := s.barrier(); bad != nil {
		return *bad
	}
	if msg := s.cfg.FSM.ValidateStaged(r.session, nil); msg != "" {
		return errReply(msg)
	}
	return ok("OK")
}

func (s *Server) cmdConfigApply(c *conn, r *request) reply {
	return s.write("OK", fsm.CmdConfigApply, r.session, nil)
}

func (s *Server) cmdConfigApplyPartial(c *conn, r *request) reply {
	scopes, err := fsm.ValidateScopes(r.args[0])
	if err != nil {
		return errReply(err.Error())
	}
	return s.write("OK", fsm.CmdConfigApply, r.session, fsm.ApplyPayload{Scopes: scopes})
}

func (s *Server) cmdConfigRollback(c *conn, r *request) reply {
	return s.write("OK", fsm.CmdConfigRollback, r.session, nil)
}

func (s *Server) cmdConfigDiff(c *conn, r *request) reply {
	return s.read(r.session, func(st *fsm.State, sess *fsm.Session) reply {
		return jsonReply("DIFF_OK", sess.Diff(), false)
	})
}

func (s *Server) cmdSubscribe(c *conn, r *request) reply {
	if err := fsm.ValidateEventType(r.args[0]); err != nil {
		return errReply(err.Error())
	}
	return s.write("SUBSCRIBE_OK", fsm.CmdSubscribe, r.session, fsm.SubscribePayload{Type: r.args[0]})
}

func (s *Server) cmdUnsubscribe(c *conn, r *request) reply {
	if err := fsm.ValidateEventType(r.args[0]); err != nil {
		return errReply(err.Error())
	}
	return s.write("UNSUBSCRIBE_OK", fsm.CmdUnsubscribe, r.session, fsm.SubscribePayload{Type: r.args[0]})
}
