package fsm

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// wantErr checks err against want: "" means no error, otherwise err's text
// must start with want. Every error text must also be safe to send after
// "ERROR|": one line, no field separator, no Go type names.
func wantErr(t *testing.T, name string, err error, want string) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Errorf("%s: unexpected error %q", name, err)
		}
		return
	}
	if err == nil {
		t.Errorf("%s: no error, want %q", name, want)
		return
	}
	if !strings.HasPrefix(err.Error(), want) {
		t.Errorf("%s: error %q, want prefix %q", name, err, want)
	}
	checkWireSafe(t, name, err)
}

func checkWireSafe(t *testing.T, name string, err error) {
	t.Helper()
	msg := err.Error()
	if strings.ContainsAny(msg, "\r\n\x00|") {
		t.Errorf("%s: error %q holds a line break, NUL or |", name, msg)
	}
	if strings.Contains(msg, "fsm.") || strings.Contains(msg, "Go value") || strings.Contains(msg, "strconv.") {
		t.Errorf("%s: error %q leaks Go internals", name, msg)
	}
	if len(msg) > 400 {
		t.Errorf("%s: error of %d bytes is too long", name, len(msg))
	}
}

var long = strings.Repeat("a", 100_000)

func TestValidateNames(t *testing.T) {
	tests := []struct {
		in              string
		service, instce bool
	}{
		{"api", true, true},
		{"my-svc_1.v2", true, true},
		{strings.Repeat("x", 64), true, true},
		{strings.Repeat("x", 65), false, false},
		{"", false, true},
		{"a b", false, false},
		{"a|b", false, false},
		{"a\r\nb", false, false},
		{"a\x00", false, false},
		{"ünïcode", false, false},
		{"a/b", false, false},
		{long, false, false},
	}
	for _, tc := range tests {
		err := ValidateServiceName(tc.in)
		if (err == nil) != tc.service {
			t.Errorf("ValidateServiceName(%q) = %v, want ok=%v", show(tc.in), err, tc.service)
		} else if err != nil && err.Error() != "invalid service name" {
			t.Errorf("ValidateServiceName text %q", err)
		}
		err = ValidateInstanceName(tc.in)
		if (err == nil) != tc.instce {
			t.Errorf("ValidateInstanceName(%q) = %v, want ok=%v", show(tc.in), err, tc.instce)
		} else if err != nil && err.Error() != "invalid instance name" {
			t.Errorf("ValidateInstanceName text %q", err)
		}
	}
}

func TestParsePort(t *testing.T) {
	tests := []struct {
		in   string
		want int
		err  string
	}{
		{"", 0, ""}, {"0", 0, ""}, {"8080", 8080, ""}, {"65535", 65535, ""}, {" 81 ", 81, ""},
		{"65536", 0, "invalid maintenance port: 65536"}, {"-1", 0, "invalid maintenance port"},
		{"abc", 0, "invalid maintenance port"}, {"0x50", 0, "invalid maintenance port"},
		{"1_000", 0, "invalid maintenance port"}, {"99999999999999999999999", 0, "invalid maintenance port"},
		{"80\r\n", 80, ""}, {"8\x000", 0, "invalid maintenance port"}, {"++1", 0, "invalid maintenance port"},
	}
	for _, tc := range tests {
		got, err := ParsePort(tc.in)
		wantErr(t, fmt.Sprintf("ParsePort(%q)", tc.in), err, tc.err)
		if err == nil && got != tc.want {
			t.Errorf("ParsePort(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestParseMetadata(t *testing.T) {
	tests := []struct {
		in, want, err string
	}{
		{"", "", ""},
		{"{}", "{}", ""},
		{` { "a" : 1, "b": [1, 2] } `, `{"a":1,"b":[1,2]}`, ""},
		{`{"nested":{"x":"y|z"}}`, `{"nested":{"x":"y|z"}}`, ""},
		{`[]`, "", "invalid metadata json"},
		{`"str"`, "", "invalid metadata json"},
		{`null`, "", "invalid metadata json"},
		{`42`, "", "invalid metadata json"},
		{`{"a":}`, "", "invalid metadata json"},
		{`{"a":1}{}`, "", "invalid metadata json"},
		{"{\"a\":\"\xff\"}", "", "invalid metadata json"},
		{`{"a":"` + strings.Repeat("x", 4096) + `"}`, "", "invalid metadata json"},
		{`{"a":"` + strings.Repeat("x", 4000) + `"}`, `{"a":"` + strings.Repeat("x", 4000) + `"}`, ""},
	}
	for _, tc := range tests {
		got, err := ParseMetadata(tc.in)
		wantErr(t, fmt.Sprintf("ParseMetadata(%.40q)", tc.in), err, tc.err)
		if err == nil && string(got) != tc.want {
			t.Errorf("ParseMetadata(%.40q) = %s, want %s", tc.in, got, tc.want)
		}
		if err != nil && err.Error() != "invalid metadata json" {
			t.Errorf("ParseMetadata text %q", err)
		}
	}
}

func TestParseDomains(t *testing.T) {
	tests := []struct {
		in   string
		want []string
		err  string
	}{
		{"example.com", []string{"example.com"}, ""},
		{"Example.COM, www.example.com", []string{"example.com", "www.example.com"}, ""},
		{"a.com,A.com,b.com,a.com", []string{"a.com", "b.com"}, ""},
		{"*.example.com", []string{"*.example.com"}, ""},
		{"localhost", []string{"localhost"}, ""},
		{"127.0.0.1", []string{"127.0.0.1"}, ""},
		{"xn--bcher-kva.example", []string{"xn--bcher-kva.example"}, ""},
		{strings.Repeat("a", 63) + ".com", []string{strings.Repeat("a", 63) + ".com"}, ""},
		{strings.Repeat("a", 64) + ".com", nil, "invalid domain:"},
		{strings.Repeat("abcdefghi.", 25) + "com", []string{strings.Repeat("abcdefghi.", 25) + "com"}, ""}, // 253 bytes
		{strings.Repeat("abcdefghi.", 25) + "comx", nil, "invalid domain:"},
		{"", nil, "invalid domain: empty name"},
		{"a.com,", nil, "invalid domain: empty name"},
		{"a..com", nil, "invalid domain: a..com (empty label)"},
		{".a.com", nil, "invalid domain:"},
		{"a.com.", nil, "invalid domain:"},
		{"-a.com", nil, "invalid domain:"},
		{"a-.com", nil, "invalid domain:"},
		{"a_b.com", nil, "invalid domain:"},
		{"*.com", nil, "invalid domain: *.com (a wildcard"},
		{"*", nil, "invalid domain:"},
		{"*.*.a.com", nil, "invalid domain:"},
		{"a.*.com", nil, "invalid domain:"},
		{"ex ample.com", nil, "invalid domain:"},
		{"example.com:8080", nil, "invalid domain:"},
		{"exa\r\nmple.com", nil, "invalid domain:"},
		{"a.com\x00", nil, "invalid domain:"},
		{"bücher.de", nil, "invalid domain:"},
		{"\u212Aelvin.com", nil, "invalid domain:"}, // Kelvin sign lower-cases to 'k' in Unicode
		{"a|b.com", nil, "invalid domain:"},
		{long, nil, "invalid domain:"},
		{strings.Repeat("a.com,", 32) + "a.com", nil, "too many domains (max 32)"},
	}
	for _, tc := range tests {
		got, err := ParseDomains(tc.in)
		wantErr(t, fmt.Sprintf("ParseDomains(%.40q)", tc.in), err, tc.err)
		if err == nil && !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseDomains(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	// 32 names are the limit, not one fewer.
	var names []string
	for i := range 32 {
		names = append(names, fmt.Sprintf("h%d.example.com", i))
	}
	if got, err := ParseDomains(strings.Join(names, ",")); err != nil || len(got) != 32 {
		t.Errorf("32 domains: %d, %v", len(got), err)
	}
}

func TestValidatePath(t *testing.T) {
	tests := []struct{ in, err string }{
		{"/", ""}, {"/api", ""}, {"/api/v1/", ""}, {"/caf%C3%A9", ""}, {"/café", ""},
		{"/" + strings.Repeat("a", 1023), ""},
		{"/" + strings.Repeat("a", 1024), "invalid path: longer than 1024 bytes"},
		{"", "invalid path: must start with /"}, {"api", "invalid path: must start with /"},
		{"/a b", "invalid path:"}, {"/a\tb", "invalid path:"}, {"/a\r\nb", "invalid path:"},
		{"/a\x00", "invalid path:"}, {"/a\x7f", "invalid path:"}, {"/a?x=1", "invalid path:"},
		{"/a#frag", "invalid path:"}, {"/\xff\xfe", "invalid path: not valid utf-8"},
		{"/a\u2028b", "invalid path:"}, {long, "invalid path:"},
	}
	for _, tc := range tests {
		wantErr(t, fmt.Sprintf("ValidatePath(%.40q)", tc.in), ValidatePath(tc.in), tc.err)
	}
}

func TestValidateBackendURL(t *testing.T) {
	tests := []struct{ in, err string }{
		{"http://127.0.0.1:8080", ""}, {"https://api.internal", ""}, {"ws://chat:9000/socket", ""},
		{"wss://x.example.com:443/a/b?c=d", ""}, {"http://[::1]:8080/", ""}, {"HTTP://Example.com", ""},
		{"http://my_service:80", ""}, {"http://a:65535", ""},
		{"", "invalid backend url: empty"},
		{"ftp://a", "invalid backend url: ftp://a (scheme"},
		{"127.0.0.1:8080", "invalid backend url:"},
		{"http://", "invalid backend url:"}, {"http:///path", "invalid backend url:"},
		{"http:opaque", "invalid backend url:"}, {"http://user:pw@a", "invalid backend url:"},
		{"http://a:0", "invalid backend url:"}, {"http://a:65536", "invalid backend url:"},
		{"http://a:-1", "invalid backend url:"}, {"http://a:", "invalid backend url:"},
		{"http://a:+80", "invalid backend url:"}, {"http://a:80:90", "invalid backend url:"},
		{"http://a#x", "invalid backend url:"}, {"http://a/#", "invalid backend url:"},
		{"http://a b", "invalid backend url:"}, {"http://a\r\nHost: evil", "invalid backend url:"},
		{"http://a\x00", "invalid backend url:"}, {"http://bücher.de", "invalid backend url:"},
		{"http://a%20b", "invalid backend url:"}, {"http://[::1", "invalid backend url:"},
		{"http://[1.2.3.4]", "invalid backend url:"}, {"http://a..b", "invalid backend url:"},
		{"http://" + strings.Repeat("a", 2048), "invalid backend url:"},
		{"javascript:alert(1)", "invalid backend url:"},
	}
	for _, tc := range tests {
		wantErr(t, fmt.Sprintf("ValidateBackendURL(%.40q)", tc.in), ValidateBackendURL(tc.in), tc.err)
	}
}

func TestParsePriority(t *testing.T) {
	tests := []struct {
		in   string
		want int
		err  string
	}{
		{"", 0, ""}, {"0", 0, ""}, {"10", 10, ""}, {"-5", -5, ""}, {"+7", 7, ""},
		{"1000000", 1000000, ""}, {"-1000000", -1000000, ""},
		{"1000001", 0, "invalid priority: 1000001"}, {"-1000001", 0, "invalid priority"},
		{"1.5", 0, "invalid priority"}, {"1e3", 0, "invalid priority"}, {"high", 0, "invalid priority"},
		{"99999999999999999999999999", 0, "invalid priority"}, {"--1", 0, "invalid priority"},
		{"-", 0, "invalid priority"}, {"0x10", 0, "invalid priority"}, {"1\x00", 0, "invalid priority"},
	}
	for _, tc := range tests {
		got, err := ParsePriority(tc.in)
		wantErr(t, fmt.Sprintf("ParsePriority(%q)", tc.in), err, tc.err)
		if err == nil && got != tc.want {
			t.Errorf("ParsePriority(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		err  string
	}{
		{"500ms", 500 * time.Millisecond, ""}, {"30s", 30 * time.Second, ""}, {"2m", 2 * time.Minute, ""},
		{"1h30m", 90 * time.Minute, ""}, {"30", 30 * time.Second, ""}, {"0", 0, ""}, {" 5 ", 5 * time.Second, ""},
		{"8760h", MaxDuration, ""}, {"31536000", MaxDuration, ""},
		{"8761h", 0, "invalid duration: 8761h (longer than"}, {"31536001", 0, "invalid duration"},
		{"99999999999999999999", 0, "invalid duration"}, {"9999999999h", 0, "invalid duration"},
		{"-1", 0, "invalid duration: -1 (negative)"}, {"-5s", 0, "invalid duration"},
		{"", 0, "invalid duration: "}, {"abc", 0, "invalid duration"}, {"1.5", 0, "invalid duration"},
		{"5 s", 0, "invalid duration"}, {"5s\x00", 0, "invalid duration"}, {"1d", 0, "invalid duration"},
	}
	for _, tc := range tests {
		got, err := ParseDuration(tc.in)
		wantErr(t, fmt.Sprintf("ParseDuration(%q)", tc.in), err, tc.err)
		if err == nil && got != tc.want {
			t.Errorf("ParseDuration(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestParseBool(t *testing.T) {
	for in, want := range map[string]bool{
		"true": true, "TRUE": true, "1": true, "on": true, "On": true,
		"false": false, "False": false, "0": false, "off": false, "OFF": false,
	} {
		got, err := ParseBool(in)
		if err != nil || got != want {
			t.Errorf("ParseBool(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "yes", "no", "2", "tru", "true\x00", "t"} {
		_, err := ParseBool(in)
		wantErr(t, fmt.Sprintf("ParseBool(%q)", in), err, "invalid boolean")
	}
}

func TestValidateHeaders(t *testing.T) {
	names := []struct{ in, err string }{
		{"X-Frame-Options", ""}, {"request:X-Api-Key", ""}, {"x_custom.1~!", ""}, {strings.Repeat("a", 256), ""},
		{"", "invalid header name"}, {"request:", "invalid header name"}, {"X Bad", "invalid header name"},
		{"X-A\r\nSet-Cookie", "invalid header name"}, {"X:Y", "invalid header name"}, {"Ünï", "invalid header name"},
		{"request:request:X", "invalid header name"}, {"Request:X-A", "invalid header name"},
		{strings.Repeat("a", 257), "invalid header name"}, {"X\x00", "invalid header name"},
		{"Content-Length", "invalid header name: Content-Length is managed"},
		{"request:transfer-encoding", "invalid header name"}, {"Connection", "invalid header name"},
	}
	for _, tc := range names {
		wantErr(t, fmt.Sprintf("ValidateHeaderName(%.40q)", tc.in), ValidateHeaderName(tc.in), tc.err)
	}
	values := []struct{ in, err string }{
		{"", ""}, {"DENY", ""}, {"a\tb", ""}, {"max-age=31536000; includeSubDomains", ""}, {"ünïcödé", ""},
		{strings.Repeat("v", 4096), ""},
		{strings.Repeat("v", 4097), "invalid header value: longer than 4096"},
		{"a\r\nSet-Cookie: x=1", "invalid header value: contains a control character"},
		{"a\nb", "invalid header value"}, {"a\rb", "invalid header value"}, {"a\x00b", "invalid header value"},
		{"a\x7f", "invalid header value"}, {"a\x01", "invalid header value"},
	}
	for _, tc := range values {
		wantErr(t, fmt.Sprintf("ValidateHeaderValue(%.40q)", tc.in), ValidateHeaderValue(tc.in), tc.err)
	}
}

func TestNormalizeOption(t *testing.T) {
	tests := []struct{ key, val, want, err string }{
		{OptTimeout, "30", "30s", ""}, {OptTimeout, "1500ms", "1.5s", ""}, {OptTimeout, "2m", "2m0s", ""},
		{OptTimeout, "0", "", "invalid value for timeout: must be positive"},
		{OptTimeout, "-1s", "", "invalid value for timeout: negative"},
		{OptTimeout, "soon", "", "invalid value for timeout: want a duration"},
		{OptWebSocket, "on", "true", ""}, {OptCompression, "0", "false", ""}, {OptHTTP2, "TRUE", "true", ""},
		{OptPreserveHost, "off", "false", ""}, {OptStripPrefix, "1", "true", ""}, {OptTLSSkipVerify, "false", "false", ""},
		{OptWebSocket, "yes", "", "invalid value for websocket: want true, false"},
		{OptRetries, "0", "0", ""}, {OptRetries, "5", "5", ""}, {OptRetries, " 3", "3", ""},
		{OptRetries, "6", "", "invalid value for retries: want an integer from 0 to 5"},
		{OptRetries, "-1", "", "invalid value for retries"}, {OptRetries, "two", "", "invalid value for retries"},
		{OptLBPolicy, "round_robin", "round_robin", ""}, {OptLBPolicy, "least_conn", "least_conn", ""},
		{OptLBPolicy, "ip_hash", "ip_hash", ""}, {OptLBPolicy, "Random", "random", ""},
		{OptLBPolicy, "weighted", "", "invalid value for lb_policy: want round_robin"},
		{OptMaxBodyBytes, "0", "0", ""}, {OptMaxBodyBytes, "1048576", "1048576", ""},
		{OptMaxBodyBytes, "-1", "", "invalid value for max_body_bytes"},
		{OptMaxBodyBytes, "1MB", "", "invalid value for max_body_bytes"},
		{OptMaxBodyBytes, "99999999999999999999999", "", "invalid value for max_body_bytes"},
		{OptHealthCheckInterval, "10", "10s", ""},
		{OptHealthCheckInterval, "500ms", "", "invalid value for health_check_interval: must be at least 1s"},
		{"bogus", "1", "", "unknown option: bogus"}, {"Timeout", "1", "", "unknown option: Timeout"},
		{"", "1", "", "unknown option: "}, {"x\r\ny", "1", "", "unknown option: x??y"},
	}
	for _, tc := range tests {
		got, err := NormalizeOption(tc.key, tc.val)
		wantErr(t, fmt.Sprintf("NormalizeOption(%q, %q)", tc.key, tc.val), err, tc.err)
		if err == nil && got != tc.want {
			t.Errorf("NormalizeOption(%q, %q) = %q, want %q", tc.key, tc.val, got, tc.want)
		}
		if err == nil {
			// The canonical form is a fixed point and is what the table reads.
			again, err2 := NormalizeOption(tc.key, got)
			if err2 != nil || again != got {
				t.Errorf("NormalizeOption(%q, %q) not a fixed point: %q, %v", tc.key, got, again, err2)
			}
		}
	}
	// Every canonical value must reach the typed options the proxy reads.
	o := DefaultOptions()
	for _, kv := range [][2]string{{OptTimeout, "45"}, {OptRetries, "4"}, {OptWebSocket, "on"}, {OptLBPolicy, "ip_hash"}, {OptMaxBodyBytes, "77"}, {OptHealthCheckInterval, "2m"}} {
		v, err := NormalizeOption(kv[0], kv[1])
		if err != nil {
			t.Fatal(err)
		}
		applyOption(&o, kv[0], v)
	}
	want := Options{Timeout: 45 * time.Second, Retries: 4, WebSocket: true, LBPolicy: "ip_hash", MaxBodyBytes: 77, HealthCheckInterval: 2 * time.Minute}
	if o != want {
		t.Errorf("applied options = %+v, want %+v", o, want)
	}
}

func TestRouteIDAndTarget(t *testing.T) {
	tests := []struct {
		in            string
		route, target bool
	}{
		{"r1", true, true}, {"r42", true, true}, {"r1234567890123456789", true, true},
		{"ALL", false, true}, {"all", false, false}, {"r0", false, false}, {"r01", false, false},
		{"r", false, false}, {"R1", false, false}, {"r-1", false, false}, {"r1a", false, false},
		{"r12345678901234567890", false, false}, {"", false, false}, {"r1\r\n", false, false}, {long, false, false},
	}
	for _, tc := range tests {
		err := ValidateRouteID(tc.in)
		if (err == nil) != tc.route {
			t.Errorf("ValidateRouteID(%.30q) = %v", tc.in, err)
		} else if err != nil {
			wantErr(t, "ValidateRouteID", err, "invalid route id: ")
		}
		err = ValidateTarget(tc.in)
		if (err == nil) != tc.target {
			t.Errorf("ValidateTarget(%.30q) = %v", tc.in, err)
		} else if err != nil {
			wantErr(t, "ValidateTarget", err, "invalid target: ")
		}
	}
}

func TestValidateRouteSpec(t *testing.T) {
	ok := RouteSpec{Domains: []string{"example.com", "*.example.com"}, Path: "/api", Backend: "http://127.0.0.1:9000", Priority: 5}
	tests := []struct {
		name string
		mod  func(*RouteSpec)
		err  string
	}{
		{"ok", func(*RouteSpec) {}, ""},
		{"no domains", func(r *RouteSpec) { r.Domains = nil }, "invalid domain: empty list"},
		{"upper case", func(r *RouteSpec) { r.Domains = []string{"Example.com"} }, "invalid domain: list not normalized"},
		{"padded", func(r *RouteSpec) { r.Domains = []string{" a.com"} }, "invalid domain:"},
		{"duplicate", func(r *RouteSpec) { r.Domains = []string{"a.com", "a.com"} }, "invalid domain: list not normalized"},
		{"bad domain", func(r *RouteSpec) { r.Domains = []string{"a..com"} }, "invalid domain:"},
		{"too many", func(r *RouteSpec) { r.Domains = make([]string, 33) }, "too many domains"},
		{"path", func(r *RouteSpec) { r.Path = "api" }, "invalid path:"},
		{"backend", func(r *RouteSpec) { r.Backend = "ftp://x" }, "invalid backend url:"},
		{"priority", func(r *RouteSpec) { r.Priority = 2_000_000 }, "invalid priority: 2000000"},
	}
	for _, tc := range tests {
		r := ok
		r.Domains = append([]string(nil), ok.Domains...)
		tc.mod(&r)
		wantErr(t, tc.name, ValidateRouteSpec(r), tc.err)
	}
}

func TestParseBulkRoutes(t *testing.T) {
	good := `[
	 {"domains":["A.com","b.com"],"path":"/","backend_url":"http://127.0.0.1:1","priority":3},
	 {"domains":"c.com, d.com","path":"/x","backend_url":"ws://h:2","priority":"-4"},
	 {"domains":["e.com"],"path":"/y","backend":"https://h","extra":true}
	]`
	got, err := ParseBulkRoutes(good)
	if err != nil {
		t.Fatal(err)
	}
	want := []RouteSpec{
		{Domains: []string{"a.com", "b.com"}, Path: "/", Backend: "http://127.0.0.1:1", Priority: 3},
		{Domains: []string{"c.com", "d.com"}, Path: "/x", Backend: "ws://h:2", Priority: -4},
		{Domains: []string{"e.com"}, Path: "/y", Backend: "https://h"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseBulkRoutes = %+v\nwant %+v", got, want)
	}
	for _, r := range got {
		if err := ValidateRouteSpec(r); err != nil {
			t.Errorf("parsed route does not re-validate: %v", err)
		}
	}

	one := func(fields string) string {
		return `[{"domains":["a.com"],"path":"/","backend_url":"http://h"},{` + fields + `}]`
	}
	var many strings.Builder
	many.WriteString("[")
	for i := range 1001 {
		if i > 0 {
			many.WriteString(",")
		}
		many.WriteString(`{"domains":"a.com","path":"/","backend_url":"http://h"}`)
	}
	many.WriteString("]")
	tests := []struct{ in, err string }{
		{``, "invalid json: empty"},
		{`[`, "invalid json: syntax error"},
		{`{"domains":"a.com"}`, "invalid json: expected an array of routes"},
		{`null`, "invalid json: expected an array"},
		{`[]`, "invalid json: empty route list"},
		{`[1]`, "route 0: expected an object"},
		{`[{"domains":"a.com","path":"/","backend_url":"http://h"}] x`, "invalid json: syntax error"},
		{"[{\"domains\":\"a.com\xff\",\"path\":\"/\",\"backend_url\":\"http://h\"}]", "invalid json: not valid utf-8"},
		{one(`"domains":["a.com"],"path":"/","backend_url":"ftp://h"`), "route 1: invalid backend url: ftp://h"},
		{one(`"path":"/","backend_url":"http://h"`), "route 1: invalid domain: missing domains"},
		{one(`"domains":[1],"path":"/","backend_url":"http://h"`), "route 1: invalid domain: want an array"},
		{one(`"domains":{},"path":"/","backend_url":"http://h"`), "route 1: invalid domain: want an array"},
		{one(`"domains":[],"path":"/","backend_url":"http://h"`), "route 1: invalid domain: empty list"},
		{one(`"domains":["a.com"],"path":5,"backend_url":"http://h"`), "route 1: invalid path: want a string"},
		{one(`"domains":["a.com"],"backend_url":"http://h"`), "route 1: invalid path: want a string"},
		{one(`"domains":["a.com"],"path":"/a?b","backend_url":"http://h"`), "route 1: invalid path"},
		{one(`"domains":["a.com"],"path":"/"`), "route 1: invalid backend url: want a string"},
		{one(`"domains":["a.com"],"path":"/","backend_url":"http://h\r\nX: y"`), "route 1: invalid backend url"},
		{one(`"domains":["a.com"],"path":"/","backend_url":"http://h","priority":1.5`), "route 1: invalid priority: 1.5"},
		{one(`"domains":["a.com"],"path":"/","backend_url":"http://h","priority":"high"`), "route 1: invalid priority"},
		{one(`"domains":["a.com"],"path":"/","backend_url":"http://h","priority":true`), "route 1: invalid priority"},
		{one(`"domains":["a.com"],"path":"/","backend_url":"http://h","priority":1e400`), "route 1: invalid priority"},
		{many.String(), "too many routes (max 1000)"},
		{"[" + strings.Repeat(" ", MaxBulkJSONBytes) + "]", "invalid json: larger than"},
	}
	for _, tc := range tests {
		_, err := ParseBulkRoutes(tc.in)
		wantErr(t, fmt.Sprintf("ParseBulkRoutes(%.60q)", tc.in), err, tc.err)
	}
}

func TestValidateSettings(t *testing.T) {
	health := []struct {
		path          string
		interval, tmo time.Duration
		err           string
	}{
		{"/health", 10 * time.Second, 2 * time.Second, ""},
		{"/health", time.Second, 999 * time.Millisecond, ""},
		{"health", 10 * time.Second, time.Second, "invalid path"},
		{"/h", 999 * time.Millisecond, time.Millisecond, "invalid interval: must be at least 1s"},
		{"/h", MaxDuration + 1, time.Second, "invalid interval: longer than"},
		{"/h", 10 * time.Second, 0, "invalid timeout: must be positive"},
		{"/h", 10 * time.Second, 10 * time.Second, "invalid timeout: must be less than the interval"},
	}
	for _, tc := range health {
		wantErr(t, fmt.Sprintf("ValidateHealth(%q,%v,%v)", tc.path, tc.interval, tc.tmo), ValidateHealth(tc.path, tc.interval, tc.tmo), tc.err)
	}
	rate := []struct {
		n   int
		w   time.Duration
		err string
	}{
		{100, time.Minute, ""}, {0, 0, ""}, {1_000_000, time.Second, ""},
		{-1, time.Second, "invalid requests"}, {1_000_001, time.Second, "invalid requests"},
		{10, 0, "invalid window: must be positive"}, {10, MaxDuration + 1, "invalid window: longer than"},
	}
	for _, tc := range rate {
		wantErr(t, fmt.Sprintf("ValidateRateLimit(%d,%v)", tc.n, tc.w), ValidateRateLimit(tc.n, tc.w), tc.err)
	}
	breaker := []struct {
		th  int
		tmo time.Duration
		ho  int
		err string
	}{
		{5, 30 * time.Second, 1, ""}, {1000, time.Second, 100, ""},
		{0, time.Second, 1, "invalid threshold"}, {1001, time.Second, 1, "invalid threshold"},
		{5, 0, 1, "invalid timeout: must be positive"}, {5, MaxDuration + 1, 1, "invalid timeout: longer"},
		{5, time.Second, 0, "invalid half_open_requests"}, {5, time.Second, 101, "invalid half_open_requests"},
	}
	for _, tc := range breaker {
		wantErr(t, fmt.Sprintf("ValidateCircuitBreaker(%d,%v,%d)", tc.th, tc.tmo, tc.ho), ValidateCircuitBreaker(tc.th, tc.tmo, tc.ho), tc.err)
	}
}

func TestEventTypesAndScopes(t *testing.T) {
	if len(EventTypes) != 9 {
		t.Errorf("EventTypes has %d entries", len(EventTypes))
	}
	for _, e := range EventTypes {
		if err := ValidateEventType(e); err != nil {
			t.Errorf("ValidateEventType(%q) = %v", e, err)
		}
	}
	for _, e := range []string{"", "ALL", "cert", "config_applied ", "x\r\n"} {
		wantErr(t, fmt.Sprintf("ValidateEventType(%q)", e), ValidateEventType(e), "unknown event type: ")
	}

	got, err := ValidateScopes("options, routes,routes")
	if err != nil || !reflect.DeepEqual(got, []string{ScopeRoutes, ScopeOptions}) {
		t.Errorf("ValidateScopes = %q, %v", got, err)
	}
	got, err = ValidateScopes(strings.Join(AllScopes, ","))
	if err != nil || !reflect.DeepEqual(got, AllScopes) {
		t.Errorf("ValidateScopes(all) = %q, %v", got, err)
	}
	for _, in := range []string{"", "routes,", "Routes", "routes,bogus", "rate_limit"} {
		_, err := ValidateScopes(in)
		wantErr(t, fmt.Sprintf("ValidateScopes(%q)", in), err, "unknown scope: ")
	}
}

func TestSessionIDs(t *testing.T) {
	seen := make(map[string]bool)
	for range 1000 {
		id, err := NewSessionID("my-svc")
		if err != nil {
			t.Fatal(err)
		}
		rest, ok := strings.CutPrefix(id, "my-svc-")
		if !ok || len(rest) != 26 || strings.ToLower(rest) != rest {
			t.Fatalf("session id %q has the wrong shape", id)
		}
		if err := ValidateSessionID(id); err != nil {
			t.Fatalf("ValidateSessionID(%q) = %v", id, err)
		}
		if seen[id] {
			t.Fatalf("session id %q repeated", id)
		}
		seen[id] = true
	}
	if _, err := NewSessionID("bad name"); err == nil {
		t.Error("NewSessionID accepted an invalid service name")
	}
	if id, err := NewSessionID(strings.Repeat("s", 64)); err != nil || ValidateSessionID(id) != nil {
		t.Errorf("longest service: %q %v", id, err)
	}
	for _, bad := range []string{"", "a b", "a|b", "a\r\n", strings.Repeat("a", 129), "ü"} {
		err := ValidateSessionID(bad)
		if err == nil || err.Error() != "invalid session id" {
			t.Errorf("ValidateSessionID(%.20q) = %v", bad, err)
		}
	}

	for in, want := range map[string]bool{
		"txn-42": true, "txn-a.b_c-D": true, "txn-" + strings.Repeat("x", 64): true,
		"txn-": false, "txn-" + strings.Repeat("x", 65): false, "TXN-1": false, "txn_1": false,
		"txn-a b": false, "txn-a|b": false, "r1": false, "": false,
	} {
		if got := ValidTxnID(in); got != want {
			t.Errorf("ValidTxnID(%.30q) = %v, want %v", in, got, want)
		}
	}
}

func TestShow(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", "plain"}, {"a\r\nb", "a??b"}, {"a|b", "a?b"}, {"\xff", "?"}, {"ünï", "ünï"},
		{"\uFFFD", "\uFFFD"}, {"a\u2028b", "a?b"}, {strings.Repeat("x", 70), strings.Repeat("x", 64) + "..."},
	}
	for _, tc := range tests {
		if got := show(tc.in); got != tc.want {
			t.Errorf("show(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestErrorsAreValues makes sure callers can compare nothing but text: the
// protocol layer sends err.Error() as is, so no wrapped Go error may hide
// inside.
func TestErrorsAreValues(t *testing.T) {
	_, err := ParseBulkRoutes(`[{"domains":"a.com","path":"/","backend_url":"gopher://x"}]`)
	if err == nil || errors.Unwrap(errors.Unwrap(err)) != nil {
		t.Errorf("bulk error wraps a Go error: %#v", err)
	}
}
