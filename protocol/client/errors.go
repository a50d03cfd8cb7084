package client

import (
	"errors"
	"fmt"
	"strings"
)

// ErrConnectionLost is wrapped by the error of every command that was
// written (or may have been written) to a connection that died before its
// response arrived. The outcome of such a command is unknown: the server may
// or may not have executed it. The client never retries it on its own,
// because the protocol gives a plain command no request ID the server could
// use to deduplicate a second copy.
var ErrConnectionLost = errors.New("raftgate client: connection lost before the response arrived")

// ErrUnavailable is wrapped by the error of a command that could not be sent
// because no node was reachable before its context ended. Such a command was
// never written, so retrying it is always safe.
var ErrUnavailable = errors.New("raftgate client: no node reachable, command not sent")

// ErrClosed is returned by every method once Close (or Shutdown) was called.
var ErrClosed = errors.New("raftgate client: client closed")

// ErrNoSession is returned by session commands on a client made with Dial,
// which has no session.
var ErrNoSession = errors.New("raftgate client: no session (client made with Dial)")

// ErrSessionLost is returned by a MaintEnter or MaintExit that was waiting
// for MAINT_OK when failover found the session expired (REREGISTER): the new
// session has no maintenance state, so the confirmation will never come.
var ErrSessionLost = errors.New("raftgate client: session expired during failover")

// ErrMaintenanceTimeout matches (with errors.Is) the ServerError that a node
// sends when the maintenance backend did not become reachable in time.
var ErrMaintenanceTimeout = errors.New("raftgate client: maintenance page did not become reachable")

// ErrInvalidField is wrapped by every *FieldError.
var ErrInvalidField = errors.New("raftgate client: invalid field")

// ErrProtocol is wrapped when a node answers with a line this client does
// not understand (an unexpected response code or malformed JSON).
var ErrProtocol = errors.New("raftgate client: protocol error")

// maintTimeoutMsg is the exact text of the asynchronous error that follows
// the ACK of MAINT_ENTER (or MAINT_EXIT) when the backend never answers. No
// synchronous response of the protocol carries this text, which is how the
// reader tells it apart from the response to a pipelined command (see
// classifyAsync).
const maintTimeoutMsg = "timeout waiting for maintenance page to become reachable"

// ServerError is an `ERROR|msg` line sent by a node in answer to a command.
// Msg is the server's text without the `ERROR|` prefix, e.g.
// "route not found" or "invalid format: ROUTE_ADD needs ...".
type ServerError struct {
	// Command is the command word the error answered (e.g. "ROUTE_ADD");
	// empty for the asynchronous maintenance timeout.
	Command string
	// Msg is the message exactly as the server sent it.
	Msg string
}

// Error implements error.
func (e *ServerError) Error() string {
	if e.Command == "" {
		return "raftgate: " + e.Msg
	}
	return "raftgate: " + e.Command + ": " + e.Msg
}

// Is reports whether the error is the maintenance timeout, so that
// errors.Is(err, ErrMaintenanceTimeout) works.
func (e *ServerError) Is(target error) bool {
	return target == ErrMaintenanceTimeout && e.Msg == maintTimeoutMsg
}

// FieldError reports a field that cannot be sent because it holds a
// character reserved by the line framing (`|`, CR or LF) or is otherwise
// malformed. Nothing was sent.
type FieldError struct {
	Field  string
	Value  string
	Reason string
}

// Error implements error.
func (e *FieldError) Error() string {
	return fmt.Sprintf("raftgate client: field %s %q: %s", e.Field, e.Value, e.Reason)
}

// Unwrap returns ErrInvalidField.
func (e *FieldError) Unwrap() error { return ErrInvalidField }

// serverMsg returns the server message of err when err wraps a *ServerError.
func serverMsg(err error) (string, bool) {
	var se *ServerError
	if errors.As(err, &se) {
		return se.Msg, true
	}
	return "", false
}

// IsNotFound reports whether err is a server error saying that something
// does not exist: "session not found", "route not found", and any other
// message ending in "not found".
func IsNotFound(err error) bool {
	msg, ok := serverMsg(err)
	return ok && strings.HasSuffix(msg, "not found")
}

// IsSessionNotFound reports whether err is the server's "session not found"
// (the session expired or never existed).
func IsSessionNotFound(err error) bool {
	msg, ok := serverMsg(err)
	return ok && msg == "session not found"
}

// IsRouteNotFound reports whether err is the server's "route not found",
// which is also the answer for another session's route.
func IsRouteNotFound(err error) bool {
	msg, ok := serverMsg(err)
	return ok && msg == "route not found"
}

// IsNoLeader reports whether err is the server's "no leader: ..." answer,
// given when the cluster has no quorum. A write answered this way was not
// applied and may be retried later.
func IsNoLeader(err error) bool {
	msg, ok := serverMsg(err)
	return ok && strings.HasPrefix(msg, "no leader")
}

// IsInvalidFormat reports whether err is the server's "invalid format: ..."
// answer to a command with the wrong number of fields.
func IsInvalidFormat(err error) bool {
	msg, ok := serverMsg(err)
	return ok && strings.HasPrefix(msg, "invalid format")
}

// IsUnknownOutcome reports whether err leaves it open whether the command
// took effect: the connection broke after the command was written
// (ErrConnectionLost), or the node answered "timeout: ..." because it could
// not learn the outcome from the cluster in time. Retrying a ROUTE_ADD after
// such an error may create a second route; check with RouteList first.
func IsUnknownOutcome(err error) bool {
	if errors.Is(err, ErrConnectionLost) {
		return true
	}
	msg, ok := serverMsg(err)
	return ok && strings.HasPrefix(msg, "timeout:")
}

// isTooLarge reports the server's refusal of an uncompressed JSON answer
// over 64 KiB ("response too large (max 65536 bytes): ask with |compressed").
func isTooLarge(err error) bool {
	msg, ok := serverMsg(err)
	return ok && strings.HasPrefix(msg, "response too large") && strings.HasSuffix(msg, "|compressed")
}

// IsNoDrain reports whether err is the server's "no drain in progress".
func IsNoDrain(err error) bool {
	msg, ok := serverMsg(err)
	return ok && msg == "no drain in progress"
}

// checkField rejects values that would break the line framing.
func checkField(name, v string) error {
	if strings.ContainsAny(v, "|\r\n") {
		return &FieldError{Field: name, Value: v, Reason: "must not contain '|', CR or LF"}
	}
	return nil
}

// checkFields validates name/value pairs: checkFields("path", p, "target", t).
func checkFields(pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if err := checkField(pairs[i], pairs[i+1]); err != nil {
			return err
		}
	}
	return nil
}
