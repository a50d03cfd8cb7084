package protocol

import (
	"reflect"
	"strings"
	"testing"
)

const sid = fuzzSessionID

func TestParseRequestTxnExtraction(t *testing.T) {
	tests := []struct {
		line      string
		txn       string
		session   string
		args      []string
		wantError string
	}{
		// A txn- field right after the session is the transaction ID when
		// the command without it is well formed.
		{line: "ROUTE_REMOVE|" + sid + "|txn-42|r7", txn: "txn-42", session: sid, args: []string{"r7"}},
		{line: "CONFIG_APPLY|" + sid + "|txn-a.B_c-9", txn: "txn-a.B_c-9", session: sid, args: []string{}},
		{line: "PING|" + sid + "|txn-1", txn: "txn-1", session: sid, args: []string{}},
		// Without it the command has the right count, so txn-x is a value.
		{line: "ROUTE_REMOVE|" + sid + "|txn-42", session: sid, args: []string{"txn-42"}},
		{line: "ROUTE_LIST|" + sid + "|txn-1", txn: "txn-1", session: sid, args: []string{}},
		// Not a valid txn ID: an ordinary field, so the count is wrong.
		{line: "ROUTE_REMOVE|" + sid + "|txn-|r7", wantError: "invalid format: ROUTE_REMOVE needs session_id|route_id"},
		{line: "ROUTE_REMOVE|" + sid + "|txn-a b|r7", wantError: "invalid format: ROUTE_REMOVE needs session_id|route_id"},
		{line: "ROUTE_REMOVE|" + sid + "|txn-" + strings.Repeat("x", 65) + "|r7", wantError: "invalid format: ROUTE_REMOVE needs session_id|route_id"},
		// Only right after the session, never elsewhere.
		{line: "ROUTE_REMOVE|" + sid + "|r7|txn-1", wantError: "invalid format: ROUTE_REMOVE needs session_id|route_id"},
		// A command without a session takes no transaction ID.
		{line: "REGISTER|svc|txn-1|0", args: []string{"svc", "txn-1", "0"}},
		// Even with a txn the remaining fields must fit.
		{line: "ROUTE_REMOVE|" + sid + "|txn-1|r7|r8", wantError: "invalid format: ROUTE_REMOVE needs session_id|route_id"},
	}
	for _, tc := range tests {
		req, _, bad := parseRequest(tc.line)
		if tc.wantError != "" {
			if bad == nil || bad.format("") != "ERROR|"+tc.wantError {
				t.Errorf("%q: got %+v, %+v; want ERROR|%s", tc.line, req, bad, tc.wantError)
			}
			continue
		}
		if bad != nil {
			t.Errorf("%q: unexpected %q", tc.line, bad.format(""))
			continue
		}
		if req.txn != tc.txn || req.session != tc.session || !reflect.DeepEqual(req.args, tc.args) {
			t.Errorf("%q: got txn %q session %q args %q; want %q %q %q", tc.line, req.txn, req.session, req.args, tc.txn, tc.session, tc.args)
		}
	}
}

func TestParseRequestTxnInResponse(t *testing.T) {
	s, _ := newFakeServer(t, Config{})
	c := s.newConn(addrConn{})
	for line, want := range map[string]string{
		"ROUTE_REMOVE|" + sid + "|txn-42|r1":      "ROUTE_OK|txn-42",
		"ROUTE_REMOVE|" + sid + "|txn-42|bad":     "ERROR|txn-42|route not found",
		"CONFIG_APPLY|" + sid + "|txn-7":          "OK|txn-7",
		"CONFIG_APPLY|bad session!|txn-7":         "ERROR|txn-7|session not found",
		"HEADERS_SET|" + sid + "|txn-1|ALL|X-A|b": "HEADERS_OK|txn-1",
	} {
		if got, _ := s.handleLine(c, line); got != want {
			t.Errorf("%q answered %q, want %q", line, got, want)
		}
	}
}

func TestParseRequestJSONLastKeepsPipes(t *testing.T) {
	md := `{"note":"a|b||c","x":{"y":"|"}}`
	req, _, bad := parseRequest("REGISTER|svc|inst|8080|" + md)
	if bad != nil {
		t.Fatalf("REGISTER with | in metadata: %q", bad.format(""))
	}
	if want := []string{"svc", "inst", "8080", md}; !reflect.DeepEqual(req.args, want) {
		t.Errorf("REGISTER args %q, want %q", req.args, want)
	}

	bulk := `[{"domains":"a.com","path":"/x|y","backend_url":"http://h"},{"domains":["b.com"],"path":"/|"}]`
	req, _, bad = parseRequest("ROUTE_ADD_BULK|" + sid + "|" + bulk)
	if bad != nil {
		t.Fatalf("ROUTE_ADD_BULK with | in JSON: %q", bad.format(""))
	}
	if req.session != sid || len(req.args) != 1 || req.args[0] != bulk {
		t.Errorf("ROUTE_ADD_BULK parsed as session %q args %q", req.session, req.args)
	}

	simple := `[{"domains":"a.com","path":"/x","backend_url":"http://h"}]`
	req, _, bad = parseRequest("ROUTE_ADD_BULK|" + sid + "|txn-9|" + simple)
	if bad != nil || req.txn != "txn-9" || len(req.args) != 1 || req.args[0] != simple {
		t.Errorf("ROUTE_ADD_BULK with txn: %+v, %+v", req, bad)
	}
	t.Run("txn and pipe in JSON", func(t *testing.T) {
		req, _, bad := parseRequest("ROUTE_ADD_BULK|" + sid + "|txn-9|" + bulk)
		if bad != nil || req.txn != "txn-9" || len(req.args) != 1 || req.args[0] != bulk {
			t.Errorf("ROUTE_ADD_BULK with txn and | in JSON: %+v, %+v", req, bad)
		}
	})

	// The handlers then see the JSON whole: '|' inside a bulk path is
	// judged by the path rule, not by the framing.
	s, fc := newFakeServer(t, Config{})
	c := s.newConn(addrConn{})
	if got, _ := s.handleLine(c, "REGISTER|svc|inst|8080|"+md); !strings.HasPrefix(got, "ACK|svc-") {
		t.Errorf("REGISTER with | in metadata answered %q", got)
	}
	if got, _ := s.handleLine(c, `ROUTE_ADD_BULK|`+sid+`|[{"domains":"a.com","path":"/x|y","backend_url":"http://h"}]`); !strings.HasPrefix(got, "ROUTE_BULK_OK|") {
		t.Errorf("bulk route with | in its path answered %q", got)
	}
	for _, cmd := range fc.commands() {
		checkCommand(t, "", cmd)
	}
}

func TestParseRequestWrongFieldCounts(t *testing.T) {
	// Every command, one field short and one field too many, gets the
	// exact usage message (REGISTER and ROUTE_ADD_BULK take any number of
	// '|' in their JSON field, so only "too few" applies to them).
	for name, sp := range commands {
		full := []string{name}
		n := sp.maxArgs
		if sp.session {
			full = append(full, sid)
		}
		for i := 0; i < n; i++ {
			full = append(full, "x")
		}
		want := "ERROR|invalid format: " + name + " needs " + sp.usage
		tooMany := strings.Join(append(full, "extra"), "|")
		if !sp.jsonLast {
			if _, _, bad := parseRequest(tooMany); bad == nil || bad.format("") != want {
				t.Errorf("%q: got %v, want %q", tooMany, bad, want)
			}
		}
		if minFields := 1 + sp.minArgs; sp.session && !sp.optionalSession || sp.minArgs > 0 {
			if sp.session {
				minFields++
			}
			tooFew := strings.Join(full[:minFields-1], "|")
			if _, _, bad := parseRequest(tooFew); bad == nil || bad.format("") != want {
				t.Errorf("%q: got %v, want %q", tooFew, bad, want)
			}
		}
	}
	// The exact texts of a few, as PROTOCOL.md writes them.
	for line, want := range map[string]string{
		"ROUTE_ADD|" + sid + "|a.com|/|http://h":     "ERROR|invalid format: ROUTE_ADD needs session_id|domains|path|backend_url|priority",
		"REGISTER|svc":                               "ERROR|invalid format: REGISTER needs service|instance|maintenance_port[|metadata]",
		"RECONNECT":                                  "ERROR|invalid format: RECONNECT needs session_id",
		"SESSION_INFO|" + sid + "|x":                 "ERROR|invalid format: SESSION_INFO needs session_id",
		"CIRCUIT_BREAKER_SET|" + sid + "|r1|5|30s":   "ERROR|invalid format: CIRCUIT_BREAKER_SET needs session_id|target|threshold|timeout|half_open_requests",
		"STATS_GET|" + sid + "|r1|compressed|extra":  "ERROR|invalid format: STATS_GET needs session_id[|target][|compressed]",
		"CLUSTER_STATUS|" + sid + "|extra":           "ERROR|invalid format: CLUSTER_STATUS needs [session_id]",
		"MAINT_ENTER|" + sid + "|ALL|http://h|extra": "ERROR|invalid format: MAINT_ENTER needs session_id|target|backend_url",
	} {
		if _, _, bad := parseRequest(line); bad == nil || bad.format("") != want {
			t.Errorf("%q: got %v, want %q", line, bad, want)
		}
	}
}

func TestParseRequestUnknownCommand(t *testing.T) {
	for line, want := range map[string]string{
		"FOO":                    "ERROR|unknown command: FOO",
		"ping":                   "ERROR|unknown command: ping",
		"Ping|x":                 "ERROR|unknown command: Ping",
		" PING":                  "ERROR|unknown command:  PING",
		"|PING":                  "ERROR|unknown command: ",
		"PING\r":                 "ERROR|unknown command: PING?",
		"\x00\xff":               "ERROR|unknown command: ??",
		"GET / HTTP/1.1":         "ERROR|unknown command: GET / HTTP/1.1",
		"X" + sid + "\x1b":       "ERROR|unknown command: X" + sid + "?",
		strings.Repeat("A", 100): "ERROR|unknown command: " + strings.Repeat("A", 64) + "...",
	} {
		_, _, bad := parseRequest(line)
		if bad == nil || bad.format("") != want {
			t.Errorf("%q: got %v, want %q", line, bad, want)
		}
	}
}

func TestErrorMessagesLowerCase(t *testing.T) {
	// Lines without upper-case input: every error the server writes is
	// then entirely lower case, apart from the mandated words.
	s, _ := newFakeServer(t, Config{})
	c := s.newConn(addrConn{})
	n := 0
	for _, line := range fuzzSeeds() {
		got, _ := s.handleLine(c, line)
		checkResponse(t, line, got)
		if strings.HasPrefix(got, "ERROR|") {
			n++
		}
	}
	if n < 40 {
		t.Errorf("only %d of the seed lines were errors; the seeds lost their bad input", n)
	}
	// The rule itself must catch what it is there for.
	for _, bad := range [][2]string{
		{"PING|x", "ERROR|Session not found"},
		{"FOO", "ERROR|unknown command: FOO\r"},
		{"X|y", "ERROR|a|b"},
		{"X", "NOPE|x"},
		{"ROUTE_ADD|a", "ERROR|invalid format: ROUTE_ADD needs session_id|x"},
	} {
		if responseProblem(bad[0], bad[1]) == "" {
			t.Errorf("responseProblem accepted %q to %q", bad[1], bad[0])
		}
	}
}
