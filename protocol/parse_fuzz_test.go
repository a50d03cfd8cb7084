package protocol

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/raftgate/raftgate/cluster"
	"github.com/raftgate/raftgate/fsm"
)

// fakeCluster implements Cluster with function fields; nil fields do the
// simplest thing (Apply records the command and succeeds with an empty
// result, except REGISTER, which answers the proposed session ID).
type fakeCluster struct {
	apply    func(ctx context.Context, cmd *fsm.Command) (fsm.Result, error)
	status   func(ctx context.Context) cluster.Status
	fanOut   func(ctx context.Context, name string, req []byte) (map[string][]byte, error)
	activity func(sessionID string)

	mu      sync.Mutex
	applied []*fsm.Command
}

func (f *fakeCluster) Apply(ctx context.Context, cmd *fsm.Command) (fsm.Result, error) {
	f.mu.Lock()
	f.applied = append(f.applied, cmd)
	f.mu.Unlock()
	if f.apply != nil {
		return f.apply(ctx, cmd)
	}
	if cmd.Type == fsm.CmdRegister {
		var p fsm.RegisterPayload
		if err := cmd.Decode(&p); err == nil {
			return fsm.Result{Value: p.SessionID}, nil
		}
	}
	return fsm.Result{}, nil
}

// commands returns the commands Apply has seen and forgets them.
func (f *fakeCluster) commands() []*fsm.Command {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.applied
	f.applied = nil
	return out
}

func (f *fakeCluster) LinearizableRead(context.Context) error { return nil }

func (f *fakeCluster) RecordActivity(id string) {
	if f.activity != nil {
		f.activity(id)
	}
}

func (f *fakeCluster) Incarnation() string { return "inc1" }
func (f *fakeCluster) NodeID() string      { return "n1" }

func (f *fakeCluster) Status(ctx context.Context) cluster.Status {
	if f.status != nil {
		return f.status(ctx)
	}
	return cluster.Status{Leader: "n1", Nodes: []cluster.NodeStatus{{ID: "n1", Alive: true}}}
}

func (f *fakeCluster) FanOut(ctx context.Context, name string, req []byte) (map[string][]byte, error) {
	if f.fanOut != nil {
		return f.fanOut(ctx, name, req)
	}
	return map[string][]byte{}, nil
}

func (f *fakeCluster) Call(context.Context, string, string, []byte) ([]byte, error) {
	return nil, io.ErrClosedPipe
}

func (f *fakeCluster) RegisterHandler(string, func(context.Context, []byte) ([]byte, error)) {}

// addrConn is a net.Conn that is never read or written: handleLine only
// asks it for the client's address.
type addrConn struct{ net.Conn }

func (addrConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000} }
func (addrConn) Close() error         { return nil }

// newFakeServer returns a server over a fresh FSM and fake cluster; it is
// shut down when the test ends.
func newFakeServer(t testing.TB, cfg Config) (*Server, *fakeCluster) {
	t.Helper()
	fc, _ := cfg.Cluster.(*fakeCluster)
	if fc == nil {
		fc = &fakeCluster{}
		cfg.Cluster = fc
	}
	if cfg.FSM == nil {
		cfg.FSM = fsm.New()
	}
	if cfg.Logger == nil {
		cfg.Logger = discardLogger()
	}
	s := NewServer(cfg)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return s, fc
}

// responseCodes are the first fields a response line may have.
var responseCodes = map[string]bool{
	"ACK": true, "OK": true, "REREGISTER": true, "PONG": true, "SESSION_OK": true, "SHUTDOWN_OK": true,
	"ROUTE_OK": true, "ROUTE_BULK_OK": true, "ROUTE_LIST_OK": true, "HEADERS_OK": true, "OPTIONS_OK": true,
	"HEALTH_OK": true, "RATELIMIT_OK": true, "CIRCUIT_OK": true, "CIRCUIT_STATUS_OK": true, "DIFF_OK": true,
	"DRAIN_OK": true, "DRAIN_STATUS_OK": true, "MAINT_STATUS_OK": true, "STATS_OK": true,
	"BACKEND_OK": true, "BACKEND_FAIL": true, "SUBSCRIBE_OK": true, "UNSUBSCRIBE_OK": true,
	"CLUSTER_OK": true, "ERROR": true,
}

// checkResponse asserts the wire rules of one response to line:
//   - one line: no '\n', and no other control character either (a raw CR or
//     NUL from the input would reach the client's terminal or parser);
//   - a documented response code first, and a transaction ID second only
//     when the line carried one;
//   - errors are "ERROR|[txn|]message" with the message in one field (only
//     the usage text of "invalid format: CMD needs a|b" holds '|'), lower
//     case. Upper-case letters are allowed only in words the protocol
//     mandates (command names in "invalid format: ROUTE_ADD needs ..." and
//     "unknown command: X", the target keyword ALL) and in client input
//     echoed back (which always appears in the line itself).
func checkResponse(t *testing.T, line, resp string) {
	t.Helper()
	if p := responseProblem(line, resp); p != "" {
		t.Fatalf("response to %q %s: %q", line, p, resp)
	}
}

// responseProblem is checkResponse's rule; "" when resp obeys it.
func responseProblem(line, resp string) string {
	for i := 0; i < len(resp); i++ {
		if c := resp[i]; c < 0x20 || c == 0x7f {
			return fmt.Sprintf("holds control byte %#x", c)
		}
	}
	fields := strings.Split(resp, "|")
	if !responseCodes[fields[0]] {
		return "has an unknown code"
	}
	if fields[0] != "ERROR" {
		return ""
	}
	msg := strings.TrimPrefix(resp, "ERROR|")
	if len(fields) > 2 && fsm.ValidTxnID(fields[1]) && strings.Contains(line, "|"+fields[1]) {
		msg = strings.TrimPrefix(msg, fields[1]+"|")
	}
	// The usage in "invalid format: ROUTE_ADD needs session_id|domains|..."
	// is the one message with '|' in it: it is the whole rest of the line.
	if msg == "" || strings.Contains(msg, "|") && !isUsageMessage(msg) {
		return "is not ERROR|[txn|]message"
	}
	for _, w := range strings.FieldsFunc(msg, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_')
	}) {
		if strings.ToLower(w) == w || w == fsm.TargetAll || commands[w] != nil || strings.Contains(line, w) {
			continue
		}
		return fmt.Sprintf("has the upper-case word %q that the server made up", w)
	}
	return ""
}

// checkCommand asserts that a command handed to Cluster.Apply is well
// formed: its payload decodes strictly and passes the fsm validators, so
// nothing the FSM would refuse on its own reaches the log.
func checkCommand(t *testing.T, line string, cmd *fsm.Command) {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		b, _ := json.Marshal(cmd)
		t.Fatalf("line %q proposed an invalid %s command %s: %s", line, cmd.Type, b, strings.TrimSpace(fmt.Sprintf(format, args...)))
	}
	decode := func(p any) {
		t.Helper()
		if err := cmd.Decode(p); err != nil {
			fail("payload does not decode: %v", err)
		}
	}
	if cmd.Type != fsm.CmdRegister {
		if err := fsm.ValidateSessionID(cmd.Session); err != nil {
			fail("session %q: %v", cmd.Session, err)
		}
	}
	target := func(tg string) {
		t.Helper()
		if err := fsm.ValidateTarget(tg); err != nil {
			fail("%v", err)
		}
	}
	switch cmd.Type {
	case fsm.CmdRegister:
		var p fsm.RegisterPayload
		decode(&p)
		if fsm.ValidateServiceName(p.Service) != nil || fsm.ValidateInstanceName(p.Instance) != nil || p.Instance == "" {
			fail("bad service or instance")
		}
		if p.MaintenancePort < 0 || p.MaintenancePort > 65535 {
			fail("port %d", p.MaintenancePort)
		}
		if len(p.Metadata) > 0 {
			md, err := fsm.ParseMetadata(string(p.Metadata))
			if err != nil || string(md) != string(p.Metadata) {
				fail("metadata not canonical: %v", err)
			}
		}
		if fsm.ValidateSessionID(p.SessionID) != nil || !strings.HasPrefix(p.SessionID, p.Service+"-") || p.Conn == "" {
			fail("bad session id or connection")
		}
	case fsm.CmdAttach:
		var p fsm.ConnPayload
		decode(&p)
		if p.Conn == "" {
			fail("no connection")
		}
	case fsm.CmdShutdown, fsm.CmdConfigRollback, fsm.CmdDrainCancel:
		if len(cmd.Payload) != 0 {
			fail("unexpected payload")
		}
	case fsm.CmdRouteAdd:
		var p fsm.RouteSpec
		decode(&p)
		if err := fsm.ValidateRouteSpec(p); err != nil {
			fail("%v", err)
		}
	case fsm.CmdRouteAddBulk:
		var p fsm.RouteAddBulkPayload
		decode(&p)
		if len(p.Routes) == 0 || len(p.Routes) > fsm.MaxBulkRoutes {
			fail("%d routes", len(p.Routes))
		}
		for _, r := range p.Routes {
			if err := fsm.ValidateRouteSpec(r); err != nil {
				fail("%v", err)
			}
		}
	case fsm.CmdRouteUpdate:
		var p fsm.RouteUpdatePayload
		decode(&p)
		var err error
		switch p.Field {
		case "backend_url":
			err = fsm.ValidateBackendURL(p.Value)
		case "priority":
			_, err = fsm.ParsePriority(p.Value)
		case "domains":
			_, err = fsm.ParseDomains(p.Value)
		case "path":
			err = fsm.ValidatePath(p.Value)
		default:
			fail("field %q", p.Field)
		}
		if err != nil || fsm.ValidateRouteID(p.RouteID) != nil {
			fail("%v", err)
		}
	case fsm.CmdRouteRemove, fsm.CmdCircuitBreakerReset:
		var p fsm.RoutePayload
		decode(&p)
		if err := fsm.ValidateRouteID(p.RouteID); err != nil {
			fail("%v", err)
		}
	case fsm.CmdHeadersSet, fsm.CmdHeadersRemove:
		var p fsm.SettingPayload
		decode(&p)
		target(p.Target)
		if err := fsm.ValidateHeaderName(p.Key); err != nil {
			fail("%v", err)
		}
		if err := fsm.ValidateHeaderValue(p.Value); err != nil {
			fail("%v", err)
		}
	case fsm.CmdOptionsSet:
		var p fsm.SettingPayload
		decode(&p)
		target(p.Target)
		v, err := fsm.NormalizeOption(p.Key, p.Value)
		if err != nil || v != p.Value {
			fail("option %q=%q not canonical (%q, %v)", p.Key, p.Value, v, err)
		}
	case fsm.CmdOptionsRemove:
		var p fsm.SettingPayload
		decode(&p)
		target(p.Target)
		if !fsm.KnownOption(p.Key) {
			fail("unknown option %q", p.Key)
		}
	case fsm.CmdHealthSet:
		var p fsm.SettingPayload
		decode(&p)
		target(p.Target)
		if p.Health == nil {
			fail("no health check")
		}
		if err := fsm.ValidateHealth(p.Health.Path, time.Duration(p.Health.Interval), time.Duration(p.Health.Timeout)); err != nil {
			fail("%v", err)
		}
	case fsm.CmdRateLimitSet:
		var p fsm.SettingPayload
		decode(&p)
		target(p.Target)
		if p.RateLimit != nil {
			if err := fsm.ValidateRateLimit(p.RateLimit.Requests, time.Duration(p.RateLimit.Window)); err != nil || p.RateLimit.Requests == 0 {
				fail("rate limit %+v: %v", *p.RateLimit, err)
			}
		}
	case fsm.CmdCircuitBreakerSet:
		var p fsm.SettingPayload
		decode(&p)
		target(p.Target)
		cb := p.CircuitBreaker
		if cb == nil {
			fail("no breaker")
		}
		if err := fsm.ValidateCircuitBreaker(cb.Threshold, time.Duration(cb.Timeout), cb.HalfOpenRequests); err != nil {
			fail("%v", err)
		}
	case fsm.CmdConfigApply:
		if len(cmd.Payload) == 0 {
			return
		}
		var p fsm.ApplyPayload
		decode(&p)
		if len(p.Scopes) == 0 {
			fail("empty scope list")
		}
		for _, sc := range p.Scopes {
			if !slices.Contains(fsm.AllScopes, sc) {
				fail("scope %q", sc)
			}
		}
	case fsm.CmdDrainStart:
		var p fsm.DrainPayload
		decode(&p)
		if p.Duration <= 0 || p.Duration > int64(fsm.MaxDuration) {
			fail("duration %d", p.Duration)
		}
	case fsm.CmdMaintEnter, fsm.CmdMaintExit:
		var p fsm.MaintPayload
		decode(&p)
		if err := fsm.ValidateMaintTarget(p.Target); err != nil {
			fail("%v", err)
		}
		if p.Backend != "" {
			if err := fsm.ValidateBackendURL(p.Backend); err != nil {
				fail("%v", err)
			}
		}
	case fsm.CmdSubscribe, fsm.CmdUnsubscribe:
		var p fsm.SubscribePayload
		decode(&p)
		if err := fsm.ValidateEventType(p.Type); err != nil {
			fail("%v", err)
		}
	default:
		fail("a command line never proposes this type")
	}
}

// fuzzSessionID is a well-formed session ID the seeds use; the FSM knows
// no session, so reads answer "session not found" and no handler reaches
// the network.
const fuzzSessionID = "svc-aaaaaaaaaaaaaaaaaaaaaaaaaa"

// fuzzSeeds are lines for every command: well formed, with missing and
// extra fields, bad numbers, bad JSON, bad URLs and control characters.
func fuzzSeeds() []string {
	s := fuzzSessionID
	return []string{
		"PING", "PING|" + s, "PING|txn-1", "ping", "", "|", "||||", "\x00", "\xff\xfe", "UNKNOWN|x",
		"REGISTER|svc|inst|8080", "REGISTER|svc||0|{\"a\":\"b|c\"}", "REGISTER|svc|i|0|{\"a\":1}|x",
		"REGISTER|svc|i", "REGISTER|svc|i|99999", "REGISTER|svc|i|abc", "REGISTER|Svc!|i|0",
		"REGISTER|svc|i|0|{bad", "REGISTER|svc|i|0|[1]", "REGISTER|svc|i\r|0", "REGISTER|svc|i|0|{\"k\":\"\\r\\n\"}",
		"RECONNECT|" + s, "RECONNECT|" + s + "|x", "RECONNECT", "SESSION_INFO|" + s, "CLIENT_SHUTDOWN|" + s,
		"ROUTE_ADD|" + s + "|example.com|/api|http://127.0.0.1:9000|10",
		"ROUTE_ADD|" + s + "|txn-42|example.com|/api|http://127.0.0.1:9000|",
		"ROUTE_ADD|" + s + "|example.com|/api|http://127.0.0.1:9000",
		"ROUTE_ADD|" + s + "|example.com|/api|http://127.0.0.1:9000|1|2",
		"ROUTE_ADD|" + s + "|example.com|/api|http://127.0.0.1:9000|high",
		"ROUTE_ADD|" + s + "|EXAMPLE.com|api|ftp://x|0", "ROUTE_ADD|" + s + "|a.com|/\r|http://h|0",
		"ROUTE_ADD|" + s + "|a.com|/x\x00y|http://h\r|0", "ROUTE_ADD|bad id!|a.com|/|http://h|0",
		"ROUTE_ADD_BULK|" + s + "|[{\"domains\":[\"a.com\"],\"path\":\"/\",\"backend_url\":\"http://h\"}]",
		"ROUTE_ADD_BULK|" + s + "|[{\"domains\":\"a.com|b.com\",\"path\":\"/\",\"backend_url\":\"http://h\"}]",
		"ROUTE_ADD_BULK|" + s + "|[{\"domains\":[\"a.com\\r\\nX-Evil: 1\"],\"path\":\"/\\r\\n\",\"backend_url\":\"http://h\"}]",
		"ROUTE_ADD_BULK|" + s + "|[{\"domains\":[\"a.com\"],\"path\":\"/\",\"backend_url\":\"http://h\",\"priority\":\"x\"}]",
		"ROUTE_ADD_BULK|" + s + "|{}", "ROUTE_ADD_BULK|" + s + "|[", "ROUTE_ADD_BULK|" + s + "|[]", "ROUTE_ADD_BULK|" + s,
		"ROUTE_UPDATE|" + s + "|r1|priority|5", "ROUTE_UPDATE|" + s + "|r1|color|red", "ROUTE_UPDATE|" + s + "|r01|path|/x",
		"ROUTE_UPDATE|" + s + "|r1|backend_url|javascript:x", "ROUTE_REMOVE|" + s + "|r1", "ROUTE_REMOVE|" + s + "|R1",
		"ROUTE_LIST|" + s, "ROUTE_LIST|" + s + "|compressed", "ROUTE_LIST|" + s + "|gzip",
		"HEADERS_SET|" + s + "|ALL|X-A|b", "HEADERS_SET|" + s + "|r1|request:X-A|b\rc", "HEADERS_SET|" + s + "|all|X A|b",
		"HEADERS_SET|" + s + "|ALL|Content-Length|1", "HEADERS_REMOVE|" + s + "|ALL|X-A",
		"OPTIONS_SET|" + s + "|ALL|timeout|5s", "OPTIONS_SET|" + s + "|ALL|retries|9", "OPTIONS_SET|" + s + "|ALL|turbo|on",
		"OPTIONS_SET|" + s + "|ALL|websocket|ON", "OPTIONS_REMOVE|" + s + "|r1|timeout", "OPTIONS_REMOVE|" + s + "|r1|turbo",
		"HEALTH_SET|" + s + "|ALL|/health|10s|2s", "HEALTH_SET|" + s + "|ALL|/health|1|2", "HEALTH_SET|" + s + "|ALL|health|x|y",
		"RATELIMIT_SET|" + s + "|ALL|100|1m", "RATELIMIT_SET|" + s + "|ALL|0|", "RATELIMIT_SET|" + s + "|ALL|many|1m",
		"RATELIMIT_SET|" + s + "|ALL|-1|1m", "CIRCUIT_BREAKER_SET|" + s + "|r1|5|30s|2", "CIRCUIT_BREAKER_SET|" + s + "|r1|x|30s|2",
		"CIRCUIT_BREAKER_SET|" + s + "|r1|5|30s|0", "CIRCUIT_BREAKER_STATUS|" + s + "|r1", "CIRCUIT_BREAKER_RESET|" + s + "|r1",
		"CONFIG_VALIDATE|" + s, "CONFIG_APPLY|" + s, "CONFIG_APPLY|" + s + "|txn-a.b_c", "CONFIG_ROLLBACK|" + s,
		"CONFIG_DIFF|" + s, "CONFIG_APPLY_PARTIAL|" + s + "|routes, headers", "CONFIG_APPLY_PARTIAL|" + s + "|everything",
		"DRAIN_START|" + s + "|30s", "DRAIN_START|" + s + "|0", "DRAIN_START|" + s + "|-5s", "DRAIN_STATUS|" + s, "DRAIN_CANCEL|" + s,
		"MAINT_ENTER|" + s + "|ALL|", "MAINT_ENTER|" + s + "|r1,r2|http://127.0.0.1:1", "MAINT_ENTER|" + s + "|/api|gopher://x",
		"MAINT_ENTER|" + s + "|example.com", "MAINT_EXIT|" + s + "|ALL", "MAINT_EXIT|" + s + "|", "MAINT_STATUS|" + s,
		"STATS_GET|" + s, "STATS_GET|" + s + "|ALL|compressed", "STATS_GET|" + s + "|r1|x", "STATS_GET|" + s + "|a|b|c",
		"BACKEND_TEST|" + s + "|http://127.0.0.1:1", "BACKEND_TEST|" + s + "|file:///etc/passwd",
		"SUBSCRIBE|" + s + "|all", "SUBSCRIBE|" + s + "|ALL", "UNSUBSCRIBE|" + s + "|config_applied",
		"CLUSTER_STATUS", "CLUSTER_STATUS|" + s, "CLUSTER_STATUS|" + s + "|x",
	}
}

// FuzzParseRequest feeds arbitrary lines to parseRequest and to the whole
// command path (Server.handleLine over a real FSM and a fake cluster).
// Invariants: no panic; exactly one response line that obeys the wire
// rules (checkResponse); parseRequest's result is consistent with the
// command table; and every command that reaches Cluster.Apply is well
// formed (checkCommand). The seeds in f.Add and testdata/fuzz run in every
// `go test`.
func FuzzParseRequest(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	cfg := Config{CommandTimeout: time.Second, LineTimeout: time.Second}
	f.Fuzz(func(t *testing.T, line string) {
		if len(line) > MaxLineBytes || strings.Contains(line, "\n") {
			// The framing layer never hands such a line to the parser.
			t.Skip()
		}
		req, sp, bad := parseRequest(line)
		switch {
		case bad != nil:
			if req != nil || sp != nil || bad.code != "ERROR" {
				t.Fatalf("parseRequest(%q) returned both a request and an error", line)
			}
			checkResponse(t, line, bad.format(""))
		case req == nil || sp == nil:
			t.Fatalf("parseRequest(%q) returned neither a request nor an error", line)
		default:
			if commands[req.name] != sp || !strings.HasPrefix(line, req.name) {
				t.Fatalf("parseRequest(%q) names %q", line, req.name)
			}
			n := len(req.args)
			if sp.session && strings.Contains(line, "|") {
				n++ // the session field, possibly empty
			}
			if !sp.fits(n) || req.txn != "" && !fsm.ValidTxnID(req.txn) {
				t.Fatalf("parseRequest(%q) accepted %d fields, txn %q", line, n, req.txn)
			}
		}

		s, fc := newFakeServer(t, cfg)
		c := s.newConn(addrConn{})
		resp, _ := s.handleLine(c, line)
		checkResponse(t, line, resp)
		for _, cmd := range fc.commands() {
			checkCommand(t, line, cmd)
		}
	})
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// isUsageMessage reports whether msg is the wrong-field-count error of a
// command, with that command's usage.
func isUsageMessage(msg string) bool {
	rest, ok := strings.CutPrefix(msg, "invalid format: ")
	if !ok {
		return false
	}
	name, usage, ok := strings.Cut(rest, " needs ")
	return ok && commands[name] != nil && commands[name].usage == usage
}
