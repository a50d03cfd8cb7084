package protocol

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/raftgate/raftgate/fsm"
)

// Response size limits of PROTOCOL.md.
const (
	MaxResponseBytes           = 64 << 10
	MaxCompressedResponseBytes = 1 << 20
)

// reply is one response line before the transaction ID is inserted.
type reply struct {
	code   string
	fields []string
}

func ok(code string, fields ...string) reply { return reply{code: code, fields: fields} }

func errReply(msg string) reply { return reply{code: "ERROR", fields: []string{msg}} }

func errReplyf(format string, args ...any) reply { return errReply(fmt.Sprintf(format, args...)) }

// request is one parsed command line.
type request struct {
	name    string
	txn     string
	session string   // the session ID field, when the command names one
	args    []string // the fields after the session (or after the command word)
}

// spec describes one command: its fields and its handler.
type spec struct {
	// usage lists the fields after the command word, as in
	// "invalid format: ROUTE_ADD needs <usage>".
	usage string
	// session: the first field is a session ID. optionalSession: it may be
	// absent (PING, CLUSTER_STATUS).
	session, optionalSession bool
	// minArgs and maxArgs bound the fields after the session (or command).
	minArgs, maxArgs int
	// jsonLast: the last field is JSON and may contain '|'.
	jsonLast bool
	handle   func(s *Server, c *conn, r *request) reply
	// closeAfter closes the connection after the answer (CLIENT_SHUTDOWN).
	closeAfter func(reply) bool
}

var commands map[string]*spec

func init() {
	commands = map[string]*spec{
		"REGISTER":               {usage: "service|instance|maintenance_port[|metadata]", minArgs: 3, maxArgs: 4, jsonLast: true, handle: (*Server).cmdRegister},
		"RECONNECT":              {usage: "session_id", session: true, handle: (*Server).cmdReconnect},
		"PING":                   {usage: "[session_id]", session: true, optionalSession: true, handle: (*Server).cmdPing},
		"SESSION_INFO":           {usage: "session_id", session: true, handle: (*Server).cmdSessionInfo},
		"CLIENT_SHUTDOWN":        {usage: "session_id", session: true, handle: (*Server).cmdClientShutdown, closeAfter: func(r reply) bool { return r.code == "SHUTDOWN_OK" }},
		"ROUTE_ADD":              {usage: "session_id|domains|path|backend_url|priority", session: true, minArgs: 4, maxArgs: 4, handle: (*Server).cmdRouteAdd},
		"ROUTE_ADD_BULK":         {usage: "session_id|json_array", session: true, minArgs: 1, maxArgs: 1, jsonLast: true, handle: (*Server).cmdRouteAddBulk},
		"ROUTE_UPDATE":           {usage: "session_id|route_id|field|value", session: true, minArgs: 3, maxArgs: 3, handle: (*Server).cmdRouteUpdate},
		"ROUTE_REMOVE":           {usage: "session_id|route_id", session: true, minArgs: 1, maxArgs: 1, handle: (*Server).cmdRouteRemove},
		"ROUTE_LIST":             {usage: "session_id[|compressed]", session: true, minArgs: 0, maxArgs: 1, handle: (*Server).cmdRouteList},
		"HEADERS_SET":            {usage: "session_id|target|name|value", session: true, minArgs: 3, maxArgs: 3, handle: (*Server).cmdHeadersSet},
		"HEADERS_REMOVE":         {usage: "session_id|target|name", session: true, minArgs: 2, maxArgs: 2, handle: (*Server).cmdHeadersRemove},
		"OPTIONS_SET":            {usage: "session_id|target|key|value", session: true, minArgs: 3, maxArgs: 3, handle: (*Server).cmdOptionsSet},
		"OPTIONS_REMOVE":         {usage: "session_id|target|key", session: true, minArgs: 2, maxArgs: 2, handle: (*Server).cmdOptionsRemove},
		"HEALTH_SET":             {usage: "session_id|target|path|interval|timeout", session: true, minArgs: 4, maxArgs: 4, handle: (*Server).cmdHealthSet},
		"RATELIMIT_SET":          {usage: "session_id|target|requests|window", session: true, minArgs: 3, maxArgs: 3, handle: (*Server).cmdRateLimitSet},
		"CIRCUIT_BREAKER_SET":    {usage: "session_id|target|threshold|timeout|half_open_requests", session: true, minArgs: 4, maxArgs: 4, handle: (*Server).cmdCircuitBreakerSet},
		"CIRCUIT_BREAKER_STATUS": {usage: "session_id|route_id", session: true, minArgs: 1, maxArgs: 1, handle: (*Server).cmdCircuitBreakerStatus},
		"CIRCUIT_BREAKER_RESET":  {usage: "session_id|route_id", session: true, minArgs: 1, maxArgs: 1, handle: (*Server).cmdCircuitBreakerReset},
		"CONFIG_VALIDATE":        {usage: "session_id", session: true, handle: (*Server).cmdConfigValidate},
		"CONFIG_APPLY":           {usage: "session_id", session: true, handle: (*Server).cmdConfigApply},
		"CONFIG_ROLLBACK":        {usage: "session_id", session: true, handle: (*Server).cmdConfigRollback},
		"CONFIG_DIFF":            {usage: "session_id", session: true, handle: (*Server).cmdConfigDiff},
		"CONFIG_APPLY_PARTIAL":   {usage: "session_id|scopes", session: true, minArgs: 1, maxArgs: 1, handle: (*Server).cmdConfigApplyPartial},
		"DRAIN_START":            {usage: "session_id|duration", session: true, minArgs: 1, maxArgs: 1, handle: (*Server).cmdDrainStart},
		"DRAIN_STATUS":           {usage: "session_id", session: true, handle: (*Server).cmdDrainStatus},
		"DRAIN_CANCEL":           {usage: "session_id", session: true, handle: (*Server).cmdDrainCancel},
		"MAINT_ENTER":            {usage: "session_id|target|backend_url", session: true, minArgs: 1, maxArgs: 2, handle: (*Server).cmdMaintEnter},
		"MAINT_EXIT":             {usage: "session_id|target", session: true, minArgs: 1, maxArgs: 1, handle: (*Server).cmdMaintExit},
		"MAINT_STATUS":           {usage: "session_id", session: true, handle: (*Server).cmdMaintStatus},
		"STATS_GET":              {usage: "session_id[|target][|compressed]", session: true, minArgs: 0, maxArgs: 2, handle: (*Server).cmdStatsGet},
		"BACKEND_TEST":           {usage: "session_id|backend_url", session: true, minArgs: 1, maxArgs: 1, handle: (*Server).cmdBackendTest},
		"SUBSCRIBE":              {usage: "session_id|type", session: true, minArgs: 1, maxArgs: 1, handle: (*Server).cmdSubscribe},
		"UNSUBSCRIBE":            {usage: "session_id|type", session: true, minArgs: 1, maxArgs: 1, handle: (*Server).cmdUnsubscribe},
		"CLUSTER_STATUS":         {usage: "[session_id]", session: true, optionalSession: true, handle: (*Server).cmdClusterStatus},
	}
}

// parseRequest splits a line into a request, or returns the error reply.
func parseRequest(line string) (*request, *spec, *reply) {
	fields := SplitFields(line)
	name := fields[0]
	sp := commands[name]
	if sp == nil {
		r := errReply("unknown command: " + printable(name, 64))
		return nil, nil, &r
	}
	rest := fields[1:]
	req := &request{name: name}
	// A txn- field right after the session is a transaction ID when the
	// command without it is well formed.
	// A JSON-last command's final field may hold '|', so it counts as one
	// field however many pieces the split made of it.
	limit := sp.maxArgs
	if sp.session {
		limit++
	}
	counted := func(n int) int {
		if sp.jsonLast && n > limit {
			return limit
		}
		return n
	}
	if len(rest) >= 2 && sp.session && fsm.ValidTxnID(rest[1]) && sp.fits(counted(len(rest)-1)) {
		req.txn = rest[1]
		rest = append([]string{rest[0]}, rest[2:]...)
	}
	if sp.jsonLast && len(rest) > limit {
		rest = append(rest[:limit-1:limit-1], strings.Join(rest[limit-1:], "|"))
	}
	if !sp.fits(len(rest)) {
		r := errReplyf("invalid format: %s needs %s", name, sp.usage)
		return nil, nil, &r
	}
	if sp.session && len(rest) > 0 {
		req.session = rest[0]
		rest = rest[1:]
	}
	req.args = rest
	return req, sp, nil
}

// fits reports whether n fields after the command word are well formed.
func (sp *spec) fits(n int) bool {
	if sp.session {
		if n == 0 {
			return sp.optionalSession
		}
		n--
	}
	return n >= sp.minArgs && n <= sp.maxArgs
}

// handleLine answers one command line. It returns the response and whether
// the connection closes after it.
func (s *Server) handleLine(c *conn, line string) (string, bool) {
	req, sp, bad := parseRequest(line)
	if bad != nil {
		return bad.format(""), false
	}
	if req.session != "" || sp.session && !sp.optionalSession {
		if err := fsm.ValidateSessionID(req.session); err != nil {
			return errReply(fsm.ErrSessionNotFound).format(req.txn), false
		}
		s.cfg.Cluster.RecordActivity(req.session)
	}
	r := sp.handle(s, c, req)
	closeAfter := sp.closeAfter != nil && sp.closeAfter(r)
	return r.format(req.txn), closeAfter
}

// format renders the reply with the transaction ID as its second field.
func (r reply) format(txn string) string {
	var b strings.Builder
	b.WriteString(r.code)
	if txn != "" {
		b.WriteByte('|')
		b.WriteString(txn)
	}
	for _, f := range r.fields {
		b.WriteByte('|')
		b.WriteString(f)
	}
	return b.String()
}

// printable shortens untrusted text for an error message and replaces
// anything that is not printable ASCII, so no input reaches a client or a
// log line raw.
func printable(s string, max int) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < max; i++ {
		ch := s[i]
		if ch < 0x20 || ch > 0x7e || ch == '|' {
			b.WriteByte('?')
		} else {
			b.WriteByte(ch)
		}
	}
	if len(s) > max {
		b.WriteString("...")
	}
	return b.String()
}

// propose sends one write through the cluster and turns the outcome into
// either the result or an error reply.
func (s *Server) propose(t fsm.CommandType, session string, payload any) (fsm.Result, *reply) {
	cmd, err := fsm.NewCommand(t, session, payload)
	if err != nil {
		r := errReply("internal error: could not encode command")
		return fsm.Result{}, &r
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.CommandTimeout)
	defer cancel()
	res, err := s.cfg.Cluster.Apply(ctx, cmd)
	if err != nil {
		r := errReply(clusterError(err))
		s.log.Warn("write failed", "command", t.String(), "session", session, "err", err)
		return fsm.Result{}, &r
	}
	if res.Err != "" {
		r := errReply(res.Err)
		return res, &r
	}
	return res, nil
}

// write proposes a command whose success answer is code.
func (s *Server) write(code string, t fsm.CommandType, session string, payload any) reply {
	if _, bad := s.propose(t, session, payload); bad != nil {
		return *bad
	}
	return ok(code)
}

// clusterError turns a cluster failure into a lower-case message for the
// client.
func clusterError(err error) string {
	msg := err.Error()
	switch {
	case strings.HasPrefix(msg, "no leader"):
		return printable(msg, 200)
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout: the cluster did not answer in time"
	case errors.Is(err, context.Canceled):
		return "node is shutting down"
	}
	return "cluster unavailable: " + printable(strings.ToLower(msg), 200)
}

// read runs fn on the session after a linearizable read barrier.
func (s *Server) read(session string, fn func(st *fsm.State, sess *fsm.Session) reply) reply {
	if bad := s.barrier(); bad != nil {
		return *bad
	}
	var r reply
	s.cfg.FSM.View(func(st *fsm.State) {
		sess := st.Sessions[session]
		if sess == nil && session != "" {
			r = errReply(fsm.ErrSessionNotFound)
			return
		}
		r = fn(st, sess)
	})
	return r
}

// barrier waits until this node has applied every write acknowledged
// before the call (a no-op with stale reads).
func (s *Server) barrier() *reply {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.CommandTimeout)
	defer cancel()
	if err := s.cfg.Cluster.LinearizableRead(ctx); err != nil {
		r := errReply(clusterError(err))
		return &r
	}
	return nil
}

// jsonReply encodes v as the payload of code, gzip+base64 when compressed,
// within the response size limits.
func jsonReply(code string, v any, compressed bool) reply {
	b, err := json.Marshal(v)
	if err != nil {
		return errReply("internal error: could not encode response")
	}
	if compressed {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		_, _ = zw.Write(b)
		_ = zw.Close()
		out := base64.StdEncoding.EncodeToString(buf.Bytes())
		if len(out)+len(code)+80 > MaxCompressedResponseBytes {
			return errReplyf("response too large (max %d bytes compressed)", MaxCompressedResponseBytes)
		}
		return ok(code, out)
	}
	if len(b)+len(code)+80 > MaxResponseBytes {
		return errReplyf("response too large (max %d bytes): ask with |compressed", MaxResponseBytes)
	}
	return ok(code, string(b))
}
