package app

import (
	"context"
	"io"
	"math/rand"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/raftgate/raftgate/fsm"
)

// badCase is one hostile line and the answer PROTOCOL.md (or the
// decisions in docs/PROTOCOL.md) gives it: exact, or a prefix when the
// rest echoes a long value.
type badCase struct {
	line   string
	want   string
	prefix bool
}

// badInputCases covers every command with missing and extra fields, and
// each kind of bad value: numbers, JSON, URLs, control characters in
// values (CR alone, NUL, JSON-escaped CR LF), unknown options.
func badInputCases(s string) []badCase {
	fmtErr := func(cmd, usage string) string { return "ERROR|invalid format: " + cmd + " needs " + usage }
	bulk := func(js string) string { return "ROUTE_ADD_BULK|" + s + "|" + js }
	cases := []badCase{
		// Unknown commands and garbage words.
		{line: "ping", want: "ERROR|unknown command: ping"},
		{line: "GET / HTTP/1.1", want: "ERROR|unknown command: GET / HTTP/1.1"},
		{line: "\x00\x01\xff|PING", want: "ERROR|unknown command: ???"},
		{line: "PING\r\x00", want: "ERROR|unknown command: PING??"},

		// Non-numeric and out-of-range numbers.
		{line: "REGISTER|svc|i|abc", want: "ERROR|invalid maintenance port: abc"},
		{line: "REGISTER|svc|i|65536", want: "ERROR|invalid maintenance port: 65536"},
		{line: "ROUTE_ADD|" + s + "|a.example.com|/|http://127.0.0.1:1|high", want: "ERROR|invalid priority: high (an integer from -1000000 to 1000000)"},
		{line: "ROUTE_ADD|" + s + "|a.example.com|/|http://127.0.0.1:1|0x10", want: "ERROR|invalid priority: 0x10 (an integer from -1000000 to 1000000)"},
		{line: "ROUTE_UPDATE|" + s + "|r1|priority|1e3", want: "ERROR|invalid priority: 1e3 (an integer from -1000000 to 1000000)"},
		{line: "RATELIMIT_SET|" + s + "|ALL|many|1m", want: "ERROR|invalid requests: many"},
		{line: "RATELIMIT_SET|" + s + "|ALL|-5|1m", want: "ERROR|invalid requests: want an integer from 0 to 1000000"},
		{line: "RATELIMIT_SET|" + s + "|ALL|10|soon", want: "ERROR|invalid duration: soon (want a duration like 500ms, 30s, 2m or a number of seconds)"},
		{line: "CIRCUIT_BREAKER_SET|" + s + "|r1|x|30s|2", want: "ERROR|invalid threshold: x"},
		{line: "CIRCUIT_BREAKER_SET|" + s + "|r1|5|30s|y", want: "ERROR|invalid half_open_requests: y"},
		{line: "CIRCUIT_BREAKER_SET|" + s + "|r1|5|-1s|2", want: "ERROR|invalid duration: -1s (negative)"},
		{line: "HEALTH_SET|" + s + "|ALL|/h|fast|1s", want: "ERROR|invalid duration: fast (want a duration like 500ms, 30s, 2m or a number of seconds)"},
		{line: "DRAIN_START|" + s + "|0", want: "ERROR|invalid duration: must be positive"},
		{line: "OPTIONS_SET|" + s + "|ALL|retries|nine", want: "ERROR|invalid value for retries: ", prefix: true},
		{line: "OPTIONS_SET|" + s + "|ALL|timeout|forever", want: "ERROR|invalid value for timeout: ", prefix: true},

		// Invalid JSON.
		{line: "REGISTER|svc|i|0|{bad", want: "ERROR|invalid metadata json"},
		{line: "REGISTER|svc|i|0|[1,2]", want: "ERROR|invalid metadata json"},
		{line: "REGISTER|svc|i|0|{\"a\":1}|{\"b\":2}", want: "ERROR|invalid metadata json"},
		{line: "REGISTER|svc|i|0|{\"a\":\"" + strings.Repeat("m", 5000) + "\"}", want: "ERROR|invalid metadata json"},
		{line: bulk("["), want: "ERROR|invalid json: ", prefix: true},
		{line: bulk("{}"), want: "ERROR|invalid json: expected an array of routes"},
		{line: bulk("[]"), want: "ERROR|invalid json: empty route list"},
		{line: bulk("\xff\xfe"), want: "ERROR|invalid json: not valid utf-8"},
		{line: bulk(`[{"domains":["a.example.com"],"path":"/","backend_url":"http://127.0.0.1:1","priority":"x"}]`), want: "ERROR|route 0: invalid priority: x", prefix: true},

		// Invalid URLs.
		{line: "ROUTE_ADD|" + s + "|a.example.com|/|ftp://h|0", want: "ERROR|invalid backend url: ftp://h (scheme must be http, https, ws or wss)"},
		{line: "ROUTE_ADD|" + s + "|a.example.com|/|http://|0", want: "ERROR|invalid backend url: http:// (missing host)"},
		{line: "ROUTE_ADD|" + s + "|a.example.com|/|http://u:p@h|0", want: "ERROR|invalid backend url: http://u:p@h (user info is not allowed)"},
		{line: "ROUTE_ADD|" + s + "|a.example.com|/|http://h:99999|0", want: "ERROR|invalid backend url: ", prefix: true},
		{line: "ROUTE_UPDATE|" + s + "|r1|backend_url|javascript:alert(1)", want: "ERROR|invalid backend url: ", prefix: true},
		{line: "BACKEND_TEST|" + s + "|file:///etc/passwd", want: "ERROR|invalid backend url: ", prefix: true},
		{line: "MAINT_ENTER|" + s + "|ALL|gopher://h", want: "ERROR|invalid backend url: ", prefix: true},
		{line: bulk(`[{"domains":["a.example.com"],"path":"/","backend_url":"http://h\r\nX-Evil: 1"}]`), want: "ERROR|route 0: invalid backend url: ", prefix: true},

		// Control characters inside values: CR alone and NUL reach the
		// server (LF cannot: it ends the line); JSON-escaped CR LF can.
		{line: "HEADERS_SET|" + s + "|ALL|X-A|a\rSet-Cookie: x=1", want: "ERROR|invalid header value: contains a control character (cr, lf, nul)"},
		{line: "HEADERS_SET|" + s + "|ALL|X-A|a\x00b", want: "ERROR|invalid header value: contains a control character (cr, lf, nul)"},
		{line: "HEADERS_SET|" + s + "|ALL|X-A\r|b", want: "ERROR|invalid header name: X-A?"},
		{line: "HEADERS_SET|" + s + "|ALL|Transfer-Encoding|chunked", want: "ERROR|invalid header name: Transfer-Encoding is managed by the proxy"},
		{line: "HEADERS_REMOVE|" + s + "|ALL|X\x00", want: "ERROR|invalid header name: X?"},
		{line: "ROUTE_ADD|" + s + "|a.example.com|/a\rb|http://127.0.0.1:1|0", want: "ERROR|invalid path: /a?b contains a space or control character"},
		{line: "ROUTE_ADD|" + s + "|a.example.com\x00.evil|/|http://127.0.0.1:1|0", want: "ERROR|invalid domain: ", prefix: true},
		{line: "ROUTE_ADD|" + s + "|a.example.com|/|http://h\r|0", want: "ERROR|invalid backend url: http://h? (contains a space, control or non-ascii character)"},
		{line: bulk(`[{"domains":["a.example.com\r\nX-Evil: 1"],"path":"/","backend_url":"http://127.0.0.1:1"}]`), want: "ERROR|route 0: invalid domain: ", prefix: true},
		{line: bulk(`[{"domains":"a.example.com","path":"/\r\nX-Evil: 1","backend_url":"http://127.0.0.1:1"}]`), want: "ERROR|route 0: invalid path: ", prefix: true},
		{line: bulk(`[{"domains":"a.example.com","path":"/ok","backend_url":"http://127.0.0.1:1"},{"domains":"b.example.com","path":"/\u0000","backend_url":"http://127.0.0.1:1"}]`), want: "ERROR|route 1: invalid path: ", prefix: true},

		// Unknown options, fields, scopes, event types, targets.
		{line: "OPTIONS_SET|" + s + "|ALL|turbo|on", want: "ERROR|unknown option: turbo"},
		{line: "OPTIONS_REMOVE|" + s + "|ALL|turbo", want: "ERROR|unknown option: turbo"},
		{line: "ROUTE_UPDATE|" + s + "|r1|color|red", want: "ERROR|unknown route field: color (backend_url, priority, domains, path)"},
		{line: "CONFIG_APPLY_PARTIAL|" + s + "|routes,everything", want: "ERROR|unknown scope: everything"},
		{line: "SUBSCRIBE|" + s + "|gossip", want: "ERROR|unknown event type: gossip"},
		{line: "HEADERS_SET|" + s + "|everything|X-A|b", want: "ERROR|invalid target: everything (want ALL or a route id like r1)"},
		{line: "ROUTE_LIST|" + s + "|gzip", want: "ERROR|invalid format: expected compressed, got gzip"},

		// Sessions that are malformed or empty never reach a handler.
		{line: "ROUTE_ADD||a.example.com|/|http://127.0.0.1:1|0", want: "ERROR|session not found"},
		{line: "ROUTE_LIST|", want: "ERROR|session not found"},
		{line: "CONFIG_APPLY|bad session!", want: "ERROR|session not found"},
		{line: "CONFIG_APPLY|" + strings.Repeat("s", 129), want: "ERROR|session not found"},
	}

	// Missing fields (the bare command word) and extra fields for every
	// command. PING and CLUSTER_STATUS take no field; REGISTER and
	// ROUTE_ADD_BULK end in JSON, so extra '|' become part of it.
	usages := map[string]string{
		"REGISTER": "service|instance|maintenance_port[|metadata]", "RECONNECT": "session_id",
		"PING": "[session_id]", "SESSION_INFO": "session_id", "CLIENT_SHUTDOWN": "session_id",
		"ROUTE_ADD": "session_id|domains|path|backend_url|priority", "ROUTE_ADD_BULK": "session_id|json_array",
		"ROUTE_UPDATE": "session_id|route_id|field|value", "ROUTE_REMOVE": "session_id|route_id",
		"ROUTE_LIST": "session_id[|compressed]", "HEADERS_SET": "session_id|target|name|value",
		"HEADERS_REMOVE": "session_id|target|name", "OPTIONS_SET": "session_id|target|key|value",
		"OPTIONS_REMOVE": "session_id|target|key", "HEALTH_SET": "session_id|target|path|interval|timeout",
		"RATELIMIT_SET":          "session_id|target|requests|window",
		"CIRCUIT_BREAKER_SET":    "session_id|target|threshold|timeout|half_open_requests",
		"CIRCUIT_BREAKER_STATUS": "session_id|route_id", "CIRCUIT_BREAKER_RESET": "session_id|route_id",
		"CONFIG_VALIDATE": "session_id", "CONFIG_APPLY": "session_id", "CONFIG_ROLLBACK": "session_id",
		"CONFIG_DIFF": "session_id", "CONFIG_APPLY_PARTIAL": "session_id|scopes",
		"DRAIN_START": "session_id|duration", "DRAIN_STATUS": "session_id", "DRAIN_CANCEL": "session_id",
		"MAINT_ENTER": "session_id|target|backend_url", "MAINT_EXIT": "session_id|target",
		"MAINT_STATUS": "session_id", "STATS_GET": "session_id[|target][|compressed]",
		"BACKEND_TEST": "session_id|backend_url", "SUBSCRIBE": "session_id|type", "UNSUBSCRIBE": "session_id|type",
		"CLUSTER_STATUS": "[session_id]",
	}
	for cmd, usage := range usages {
		extra := cmd + "|" + s + strings.Repeat("|x", strings.Count(usage, "|")+2)
		switch cmd {
		case "PING", "CLUSTER_STATUS":
			cases = append(cases, badCase{line: extra, want: fmtErr(cmd, usage)})
			continue
		case "REGISTER":
			cases = append(cases, badCase{line: "REGISTER", want: fmtErr(cmd, usage)},
				badCase{line: "REGISTER|svc|i", want: fmtErr(cmd, usage)},
				badCase{line: "REGISTER|svc|i|0|x|y", want: "ERROR|invalid metadata json"})
			continue
		case "ROUTE_ADD_BULK":
			cases = append(cases, badCase{line: cmd, want: fmtErr(cmd, usage)},
				badCase{line: cmd + "|" + s, want: fmtErr(cmd, usage)},
				badCase{line: extra, want: "ERROR|invalid json: ", prefix: true})
			continue
		}
		cases = append(cases, badCase{line: cmd, want: fmtErr(cmd, usage)}, badCase{line: extra, want: fmtErr(cmd, usage)})
		// MAINT_ENTER's backend_url may be left out (the built-in page).
		if n := strings.Count(usage, "|"); n >= 2 && !strings.Contains(usage, "[") && cmd != "MAINT_ENTER" {
			// One field short, with the session present.
			short := cmd + "|" + s + strings.Repeat("|x", n-1)
			cases = append(cases, badCase{line: short, want: fmtErr(cmd, usage)})
		}
	}
	return cases
}

// checkWire fails unless an answer is one clean line: no control bytes.
func checkWire(t *testing.T, line, got string) {
	t.Helper()
	for i := 0; i < len(got); i++ {
		if c := got[i]; c < 0x20 || c == 0x7f {
			t.Errorf("answer to %.80q holds control byte %#x: %.120q", line, c, got)
			return
		}
	}
}

// TestBadInputNeverReachesTheLog sends a barrage of hostile input to a real
// node: each line gets its documented error on a connection that stays
// usable, the node stays up, and the replicated log gains nothing but the
// batched lease renewals of the one real session that was named.
func TestBadInputNeverReachesTheLog(t *testing.T) {
	tc := startCluster(t, 1)
	node := tc.nodes[0]
	addr := node.ControlAddr()

	id, attached := register(t, addr, "badsvc", "b1")
	expect(t, attached.send("ROUTE_ADD|"+id+"|bad.example.com|/|http://127.0.0.1:9|0"), "ROUTE_OK|r")

	// Settle, then record what the log holds.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := node.Cluster.FlushActivity(ctx); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var applied []*fsm.Command
	recording := true
	node.FSM.Observe(func(n fsm.Notification) {
		mu.Lock()
		defer mu.Unlock()
		if recording {
			applied = append(applied, n.Command)
		}
	})
	before := node.FSM.AppliedIndex()

	c := dialCtl(t, addr)

	// Over-long lines: one error each, then the connection still works.
	c.write(strings.Repeat("A", 16385))
	if got := c.read(); got != "ERROR|line too long (max 16384 bytes)" {
		t.Fatalf("16385-byte line answered %q", got)
	}
	expect(t, c.send("PING|"+id), "PONG")
	done := make(chan error, 1)
	go func() {
		// Written from a goroutine: the server answers the first error
		// while the rest of the line is still arriving.
		_ = c.c.SetWriteDeadline(time.Now().Add(30 * time.Second))
		_, err := io.WriteString(c.c, "ROUTE_ADD|"+id+"|"+strings.Repeat("x", 1<<20)+"\n")
		done <- err
	}()
	if got := c.read(); got != "ERROR|line too long (max 16384 bytes)" {
		t.Fatalf("1 MiB line answered %q", got)
	}
	if err := <-done; err != nil {
		t.Fatalf("write 1 MiB line: %v", err)
	}
	expect(t, c.send("PING|"+id), "PONG")

	// Binary garbage: random bytes, NUL and 0xff included, one line each.
	rnd := rand.New(rand.NewSource(7))
	for i := 0; i < 50; i++ {
		b := make([]byte, 1+rnd.Intn(300))
		rnd.Read(b)
		b[0] = byte(i % 2 * 0xff) // starts with NUL or 0xff: never a command word
		g := strings.ReplaceAll(string(b), "\n", "")
		got := c.send(g)
		if !strings.HasPrefix(got, "ERROR|unknown command: ") {
			t.Fatalf("garbage line %d answered %q", i, got)
		}
		checkWire(t, g, got)
	}

	for _, bc := range badInputCases(id) {
		got := c.send(bc.line)
		checkWire(t, bc.line, got)
		if bc.prefix && !strings.HasPrefix(got, bc.want) || !bc.prefix && got != bc.want {
			t.Errorf("%.100q answered %.160q, want %.160q", bc.line, got, bc.want)
		}
	}

	// The node is up and the session untouched: a fresh connection works,
	// and only the one valid route is staged.
	expect(t, once(t, addr, "PING"), "PONG")
	list := expect(t, once(t, addr, "ROUTE_LIST|"+id), "ROUTE_LIST_OK|")
	if strings.Count(list, `"route_id"`) != 1 || !strings.Contains(list, "bad.example.com") {
		t.Errorf("ROUTE_LIST after the barrage: %s", list)
	}

	// Nothing invalid reached the log. Every command that named the real
	// session counted as its activity (PROTOCOL.md), so batched lease
	// renewals may have been written; nothing else may.
	if err := node.Cluster.FlushActivity(ctx); err != nil {
		t.Fatal(err)
	}
	after := node.FSM.AppliedIndex()
	mu.Lock()
	recording = false
	got := applied
	mu.Unlock()
	for _, cmd := range got {
		if cmd.Type == fsm.CmdDetachNode && cmd.Session == "" && cmd.Node == node.cfg.NodeID {
			// The node's own start-up housekeeping (detaching sessions of
			// its earlier incarnations) may land during the barrage; it is
			// not client input.
			continue
		}
		if cmd.Type != fsm.CmdTouch {
			t.Errorf("bad input reached the log as a %s command: session %q payload %.200s", cmd.Type, cmd.Session, cmd.Payload)
			continue
		}
		var p fsm.SessionsPayload
		if err := cmd.Decode(&p); err != nil {
			t.Fatal(err)
		}
		for _, s := range p.Sessions {
			if s != id {
				t.Errorf("a lease renewal names %q, which no client registered", s)
			}
		}
	}
	if after-before != uint64(len(got)) {
		t.Errorf("applied index moved from %d to %d, but only %d entries were applied", before, after, len(got))
	}
	t.Logf("applied index %d -> %d: %d lease renewals, nothing else", before, after, len(got))

	t.Run("maintenance target with control characters", func(t *testing.T) {
		got := once(t, addr, "MAINT_ENTER|"+id+"|a\x00b\rc|")
		if !strings.HasPrefix(got, "ERROR|invalid target") {
			t.Errorf("a target with NUL and CR answered %q", got)
		}
	})
}
