package fsm

import (
	"net/url"
	"reflect"
	"strings"
	"testing"
)

// The fuzz targets check the validators' contract with the protocol layer:
// no input panics, every accepted value re-validates (so the FSM's re-check
// never disagrees with the proposer), and every error is safe to send after
// "ERROR|". Their seed corpus (f.Add plus testdata/fuzz) runs in every
// `go test`.

func FuzzParseDomains(f *testing.F) {
	for _, s := range []string{
		"example.com", "A.com, b.COM ,a.com", "*.example.com", "*.com", "a..b", "-a.com",
		"a.com,", strings.Repeat("a,", 40), "\u212Aelvin.com", "xn--bcher-kva.example", "a\r\nb",
		strings.Repeat("x", 64) + ".com", "*", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseDomains(s)
		if err != nil {
			checkWireSafe(t, "ParseDomains", err)
			return
		}
		if len(got) == 0 || len(got) > MaxDomains {
			t.Fatalf("ParseDomains(%q) returned %d names", s, len(got))
		}
		seen := make(map[string]bool)
		for _, d := range got {
			if d != strings.ToLower(d) || d != strings.TrimSpace(d) || len(d) > MaxDomainLen {
				t.Fatalf("ParseDomains(%q) returned %q", s, d)
			}
			if strings.ContainsAny(d, ", \r\n\x00|:/") {
				t.Fatalf("ParseDomains(%q) returned %q with a separator", s, d)
			}
			if seen[d] {
				t.Fatalf("ParseDomains(%q) returned %q twice", s, d)
			}
			seen[d] = true
		}
		again, err := ParseDomains(strings.Join(got, ","))
		if err != nil || !reflect.DeepEqual(again, got) {
			t.Fatalf("ParseDomains not idempotent on %q: %q, %v", got, again, err)
		}
		r := RouteSpec{Domains: got, Path: "/", Backend: "http://h"}
		if err := ValidateRouteSpec(r); err != nil {
			t.Fatalf("parsed domains %q fail ValidateRouteSpec: %v", got, err)
		}
	})
}

func FuzzBackendURL(f *testing.F) {
	for _, s := range []string{
		"http://127.0.0.1:8080", "https://a.example/x?y=z", "ws://[::1]:1/", "wss://h", "http://u:p@h",
		"http://h:0", "http://h:65536", "http://h#f", "ftp://h", "http:opaque", "http://a%20b",
		"http://[fe80::1%25eth0]/", "HTTP://H", "http://h:08080", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := ValidateBackendURL(s)
		if err != nil {
			checkWireSafe(t, "ValidateBackendURL", err)
			return
		}
		if err := ValidateBackendURL(s); err != nil {
			t.Fatalf("ValidateBackendURL(%q) not stable: %v", s, err)
		}
		u, perr := url.Parse(s)
		if perr != nil {
			t.Fatalf("accepted %q does not parse: %v", s, perr)
		}
		switch u.Scheme {
		case "http", "https", "ws", "wss":
		default:
			t.Fatalf("accepted %q has scheme %q", s, u.Scheme)
		}
		if u.Hostname() == "" || u.User != nil || len(s) > MaxBackendURLLen || strings.ContainsAny(s, " \r\n\x00#") {
			t.Fatalf("accepted bad backend %q", s)
		}
	})
}

func FuzzNormalizeOption(f *testing.F) {
	for _, kv := range [][2]string{
		{OptTimeout, "30"}, {OptTimeout, "1.5s"}, {OptTimeout, "-1s"}, {OptTimeout, "9999999999h"},
		{OptWebSocket, "ON"}, {OptRetries, "5"}, {OptRetries, "+3"}, {OptLBPolicy, "IP_HASH"},
		{OptMaxBodyBytes, "99999999999999999999"}, {OptHealthCheckInterval, "999ms"}, {"bogus", "1"},
		{"x\r\n", "y"},
	} {
		f.Add(kv[0], kv[1])
	}
	f.Fuzz(func(t *testing.T, key, value string) {
		v, err := NormalizeOption(key, value)
		if err != nil {
			checkWireSafe(t, "NormalizeOption", err)
			return
		}
		if !KnownOption(key) {
			t.Fatalf("NormalizeOption accepted unknown key %q", key)
		}
		again, err := NormalizeOption(key, v)
		if err != nil || again != v {
			t.Fatalf("NormalizeOption(%q, %q) = %q is not a fixed point: %q, %v", key, value, v, again, err)
		}
		if strings.ContainsAny(v, "\r\n\x00| ") {
			t.Fatalf("NormalizeOption(%q, %q) = %q", key, value, v)
		}
	})
}

func FuzzParseBulkRoutes(f *testing.F) {
	for _, s := range []string{
		`[{"domains":["a.com"],"path":"/","backend_url":"http://h","priority":1}]`,
		`[{"domains":"A.com,b.com","path":"/x","backend":"ws://h:1","priority":"-3"}]`,
		`[{"domains":[],"path":"/","backend_url":"http://h"}]`,
		`[{"domains":["a.com"],"path":"/","backend_url":"http://h","priority":1e400}]`,
		`[null]`, `[]`, `{}`, `[`, `[{"domains":[1]}]`, "[\"\xff\"]", ``,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		routes, err := ParseBulkRoutes(s)
		if err != nil {
			checkWireSafe(t, "ParseBulkRoutes", err)
			return
		}
		if len(routes) == 0 || len(routes) > MaxBulkRoutes {
			t.Fatalf("ParseBulkRoutes returned %d routes", len(routes))
		}
		for i, r := range routes {
			if err := ValidateRouteSpec(r); err != nil {
				t.Fatalf("route %d of accepted %q does not re-validate: %v", i, s, err)
			}
		}
	})
}
