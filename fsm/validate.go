package fsm

import (
	"bytes"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// The validators below are pure functions. Their error texts are sent to the
// client verbatim after "ERROR|", so they are lower case, carry no Go error
// dumps, and echo client input only through show, which keeps a hostile
// value from injecting a line break or a field separator into the response.

// Limits of client input.
const (
	MaxNameLen         = 64
	MaxMetadataBytes   = 4096
	MaxDomains         = 32
	MaxDomainLen       = 253
	MaxLabelLen        = 63
	MaxPathLen         = 1024
	MaxBackendURLLen   = 2048
	MaxPriority        = 1_000_000
	MaxDuration        = 365 * 24 * time.Hour
	MaxHeaderNameLen   = 256
	MaxHeaderValueLen  = 4096
	MaxBulkRoutes      = 1000
	MaxBulkJSONBytes   = 1 << 20
	MaxRetries         = 5
	MaxRateRequests    = 1_000_000
	MaxBreakerFailures = 1000
	MaxHalfOpen        = 100
	MaxSessionIDLen    = 128
	MaxTxnIDLen        = 64
)

// maxShown bounds how much of a client's value an error message repeats.
const maxShown = 64

// show renders client input for an error message: control characters, '|'
// and invalid UTF-8 become '?', and long values are cut short.
func show(s string) string {
	var b strings.Builder
	n := 0
	for i, r := range s {
		if n == maxShown {
			b.WriteString("...")
			break
		}
		n++
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD"):
			b.WriteByte('?')
		case r < 0x20, r == 0x7f, r == '|', r >= 0x80 && r < 0xa0, r == '\u2028', r == '\u2029':
			b.WriteByte('?')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// isNameByte reports whether c is allowed in service, instance, session and
// transaction names: [A-Za-z0-9._-].
func isNameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '.' || c == '_' || c == '-'
}

func isName(s string, maxLen int) bool {
	if len(s) == 0 || len(s) > maxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isNameByte(s[i]) {
			return false
		}
	}
	return true
}

// ValidateServiceName checks a REGISTER service name: [A-Za-z0-9._-]{1,64}.
func ValidateServiceName(s string) error {
	if !isName(s, MaxNameLen) {
		return errors.New("invalid service name")
	}
	return nil
}

// ValidateInstanceName checks a REGISTER instance name: the service name
// rule, except that it may be empty (the caller then uses the client's IP).
func ValidateInstanceName(s string) error {
	if s != "" && !isName(s, MaxNameLen) {
		return errors.New("invalid instance name")
	}
	return nil
}

// ParsePort parses a maintenance port: empty means 0, otherwise 0..65535.
func ParsePort(s string) (int, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, nil
	}
	n, ok := parseDecimal(t, 0, 65535)
	if !ok {
		return 0, fmt.Errorf("invalid maintenance port: %s", show(s))
	}
	return n, nil
}

// parseDecimal parses a base-10 integer, optionally signed, within [lo, hi].
func parseDecimal(s string, lo, hi int64) (int, bool) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, false
	}
	return int(n), true
}

// ParseMetadata checks REGISTER metadata: empty (nil result), or a JSON
// object of at most 4 KiB, returned compacted so every node stores the same
// bytes.
func ParseMetadata(s string) (json.RawMessage, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return nil, nil
	}
	bad := errors.New("invalid metadata json")
	if len(s) > MaxMetadataBytes || t[0] != '{' || !utf8.ValidString(t) || !json.Valid([]byte(t)) {
		return nil, bad
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, []byte(t)); err != nil {
		return nil, bad
	}
	return json.RawMessage(buf.Bytes()), nil
}

// ParseDomains parses a comma list of 1..32 host names: each is trimmed and
// lower-cased, must be a valid DNS host name (optionally "*." followed by at
// least two labels), and duplicates are dropped keeping the first.
func ParseDomains(s string) ([]string, error) {
	// Count before splitting so a hostile list allocates nothing.
	if strings.Count(s, ",") >= MaxDomains {
		return nil, fmt.Errorf("too many domains (max %d)", MaxDomains)
	}
	return normalizeDomains(strings.Split(s, ","))
}

func normalizeDomains(parts []string) ([]string, error) {
	if len(parts) == 0 {
		return nil, errors.New("invalid domain: empty list")
	}
	if len(parts) > MaxDomains {
		return nil, fmt.Errorf("too many domains (max %d)", MaxDomains)
	}
	out := make([]string, 0, len(parts))
	seen := make(map[string]bool, len(parts))
	for _, p := range parts {
		d, err := normalizeDomain(p)
		if err != nil {
			return nil, err
		}
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out, nil
}

// normalizeDomain trims and lower-cases one host name and checks it.
func normalizeDomain(raw string) (string, error) {
	d := strings.TrimSpace(raw)
	if d == "" {
		return "", errors.New("invalid domain: empty name")
	}
	// Lower-case ASCII only: strings.ToLower would turn the Kelvin sign into
	// 'k' and let a non-ASCII name pass as an ASCII one.
	b := []byte(d)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + ('a' - 'A')
		}
	}
	d = string(b)
	if why := domainProblem(d); why != "" {
		return "", fmt.Errorf("invalid domain: %s (%s)", show(d), why)
	}
	return d, nil
}

// domainProblem explains why a lower-case name is not a valid route domain,
// or returns "".
func domainProblem(d string) string {
	if len(d) > MaxDomainLen {
		return fmt.Sprintf("longer than %d bytes", MaxDomainLen)
	}
	host, wild := strings.CutPrefix(d, "*.")
	labels := strings.Split(host, ".")
	if wild && len(labels) < 2 {
		return "a wildcard needs at least two labels after *."
	}
	for _, l := range labels {
		if l == "" {
			return "empty label"
		}
		if len(l) > MaxLabelLen {
			return fmt.Sprintf("label longer than %d bytes", MaxLabelLen)
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return "label starts or ends with -"
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return "only letters, digits, - and a leading *. are allowed"
			}
		}
	}
	return ""
}

// ValidatePath checks a route or health-check path: it starts with "/", is
// at most 1024 bytes of valid UTF-8, and holds no space, control character,
// '?' or '#' (a route matches a path prefix, never a query).
func ValidatePath(s string) error {
	switch {
	case s == "" || s[0] != '/':
		return errors.New("invalid path: must start with /")
	case len(s) > MaxPathLen:
		return fmt.Errorf("invalid path: longer than %d bytes", MaxPathLen)
	case !utf8.ValidString(s):
		return errors.New("invalid path: not valid utf-8")
	}
	for _, r := range s {
		switch {
		case r <= ' ' || r == 0x7f || r >= 0x80 && r < 0xa0 || r == '\u2028' || r == '\u2029':
			return fmt.Errorf("invalid path: %s contains a space or control character", show(s))
		case r == '?' || r == '#':
			return fmt.Errorf("invalid path: %s contains ? or #", show(s))
		}
	}
	return nil
}

// ValidateBackendURL checks a backend URL: http, https, ws or wss, a host
// with an optional port 1..65535, no user info, no fragment, at most 2048
// bytes, and no spaces or control characters.
func ValidateBackendURL(s string) error {
	if why := backendProblem(s); why != "" {
		if s == "" {
			return fmt.Errorf("invalid backend url: %s", why)
		}
		return fmt.Errorf("invalid backend url: %s (%s)", show(s), why)
	}
	return nil
}

func backendProblem(s string) string {
	if s == "" {
		return "empty"
	}
	if len(s) > MaxBackendURLLen {
		return fmt.Sprintf("longer than %d bytes", MaxBackendURLLen)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return "contains a space, control or non-ascii character"
		}
	}
	u, err := url.Parse(s)
	if err != nil {
		return "does not parse"
	}
	switch u.Scheme {
	case "http", "https", "ws", "wss":
	default:
		return "scheme must be http, https, ws or wss"
	}
	if u.Opaque != "" || u.Host == "" {
		return "missing host"
	}
	if u.User != nil {
		return "user info is not allowed"
	}
	if u.Fragment != "" || strings.Contains(s, "#") {
		return "fragment is not allowed"
	}
	host := u.Hostname()
	if host == "" {
		return "missing host"
	}
	if strings.HasPrefix(u.Host, "[") {
		if net.ParseIP(host) == nil || !strings.Contains(host, ":") {
			return "bad ipv6 address"
		}
	} else if !validBackendHost(host) {
		return "bad host name"
	}
	if strings.HasSuffix(u.Host, ":") {
		return "empty port"
	}
	if p := u.Port(); p != "" {
		// url.Parse has checked that the port is all digits.
		if _, ok := parseDecimal(p, 1, 65535); !ok {
			return "port must be 1..65535"
		}
	}
	return ""
}

// validBackendHost accepts IPv4 addresses and host names. Underscores are
// allowed because container service names often have them.
func validBackendHost(h string) bool {
	if len(h) > MaxDomainLen {
		return false
	}
	for _, l := range strings.Split(h, ".") {
		if l == "" || len(l) > MaxLabelLen {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// ParsePriority parses a route priority: empty means 0, otherwise an
// integer in [-1000000, 1000000].
func ParsePriority(s string) (int, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, nil
	}
	n, ok := parseDecimal(t, -MaxPriority, MaxPriority)
	if !ok {
		return 0, fmt.Errorf("invalid priority: %s (an integer from %d to %d)", show(s), -MaxPriority, MaxPriority)
	}
	return n, nil
}

// ParseDuration parses a duration in Go syntax ("500ms", "2m") or a bare
// non-negative integer meaning seconds. Negative values and values above
// one year are refused.
func ParseDuration(s string) (time.Duration, error) {
	d, why := parseDuration(s)
	if why != "" {
		return 0, fmt.Errorf("invalid duration: %s (%s)", show(s), why)
	}
	return d, nil
}

func parseDuration(s string) (time.Duration, string) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, "empty"
	}
	if t[0] == '-' {
		return 0, "negative"
	}
	allDigits := true
	for i := 0; i < len(t); i++ {
		if t[i] < '0' || t[i] > '9' {
			allDigits = false
			break
		}
	}
	if allDigits {
		n, err := strconv.ParseInt(t, 10, 64)
		if err != nil || n > int64(MaxDuration/time.Second) {
			return 0, "longer than " + MaxDuration.String()
		}
		return time.Duration(n) * time.Second, ""
	}
	d, err := time.ParseDuration(t)
	if err != nil {
		return 0, "want a duration like 500ms, 30s, 2m or a number of seconds"
	}
	if d < 0 {
		return 0, "negative"
	}
	if d > MaxDuration {
		return 0, "longer than " + MaxDuration.String()
	}
	return d, ""
}

// ParseBool parses true/false/1/0/on/off in any letter case.
func ParseBool(s string) (bool, error) {
	b, ok := parseBool(s)
	if !ok {
		return false, fmt.Errorf("invalid boolean: %s (want true, false, 1, 0, on or off)", show(s))
	}
	return b, nil
}

func parseBool(s string) (bool, bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "1", "on":
		return true, true
	case "false", "0", "off":
		return false, true
	}
	return false, false
}

// managedHeaders are hop-by-hop or framing headers the proxy owns; letting a
// client set them would corrupt the connection to the user or the backend.
var managedHeaders = map[string]bool{
	"connection": true, "content-length": true, "keep-alive": true, "proxy-connection": true,
	"te": true, "trailer": true, "transfer-encoding": true, "upgrade": true,
}

// ValidateHeaderName checks a HEADERS_SET name: an RFC 7230 token, optionally
// prefixed by "request:" to address the request sent to the backend.
// Hop-by-hop and framing headers (Connection, Content-Length, ...) are
// refused.
func ValidateHeaderName(name string) error {
	token := strings.TrimPrefix(name, RequestHeaderPrefix)
	if token == "" || len(token) > MaxHeaderNameLen {
		return fmt.Errorf("invalid header name: %s", show(name))
	}
	for i := 0; i < len(token); i++ {
		if !isTokenByte(token[i]) {
			return fmt.Errorf("invalid header name: %s", show(name))
		}
	}
	if managedHeaders[strings.ToLower(token)] {
		return fmt.Errorf("invalid header name: %s is managed by the proxy", show(token))
	}
	return nil
}

// isTokenByte reports whether c is an RFC 7230 tchar.
func isTokenByte(c byte) bool {
	if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// ValidateHeaderValue checks a header value: at most 4096 bytes and no
// control character other than tab. CR, LF and NUL would split or truncate
// the header; Go's HTTP client refuses the other control characters, so
// accepting them would break every request of the route.
func ValidateHeaderValue(v string) error {
	if len(v) > MaxHeaderValueLen {
		return fmt.Errorf("invalid header value: longer than %d bytes", MaxHeaderValueLen)
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return errors.New("invalid header value: contains a control character (cr, lf, nul)")
		}
	}
	return nil
}

// LBPolicies lists the load-balancing policies of the lb_policy option.
var LBPolicies = []string{"round_robin", "least_conn", "ip_hash", "random"}

// NormalizeOption checks an OPTIONS_SET key and value and returns the
// value's canonical form: "true"/"false" for booleans, time.Duration.String
// for durations, decimal for integers, the policy name for lb_policy.
func NormalizeOption(key, value string) (string, error) {
	if !KnownOption(key) {
		return "", fmt.Errorf("unknown option: %s", show(key))
	}
	v, why := normalizeOption(key, value)
	if why != "" {
		return "", fmt.Errorf("invalid value for %s: %s", key, why)
	}
	return v, nil
}

func normalizeOption(key, value string) (string, string) {
	switch key {
	case OptWebSocket, OptCompression, OptHTTP2, OptPreserveHost, OptStripPrefix, OptTLSSkipVerify, OptPassiveHealth:
		b, ok := parseBool(value)
		if !ok {
			return "", "want true, false, 1, 0, on or off"
		}
		return strconv.FormatBool(b), ""
	case OptTimeout:
		d, why := parseDuration(value)
		if why == "" && d <= 0 {
			why = "must be positive"
		}
		return d.String(), why
	case OptHealthCheckInterval:
		d, why := parseDuration(value)
		if why == "" && d < time.Second {
			why = "must be at least 1s"
		}
		return d.String(), why
	case OptRetries:
		n, ok := parseDecimal(strings.TrimSpace(value), 0, MaxRetries)
		if !ok {
			return "", fmt.Sprintf("want an integer from 0 to %d", MaxRetries)
		}
		return strconv.Itoa(n), ""
	case OptHealthUnhealthyThreshold, OptHealthHealthyThreshold:
		n, ok := parseDecimal(strings.TrimSpace(value), 1, MaxHealthThreshold)
		if !ok {
			return "", fmt.Sprintf("want an integer from 1 to %d", MaxHealthThreshold)
		}
		return strconv.Itoa(n), ""
	case OptMaxBodyBytes:
		n, ok := parseDecimal(strings.TrimSpace(value), 0, 1<<62)
		if !ok {
			return "", "want a non-negative integer (0: no limit)"
		}
		return strconv.Itoa(n), ""
	case OptLBPolicy:
		p := strings.ToLower(strings.TrimSpace(value))
		for _, ok := range LBPolicies {
			if p == ok {
				return p, ""
			}
		}
		return "", "want round_robin, least_conn, ip_hash or random"
	}
	return "", "unknown option"
}

// KnownOption reports whether key is an option of PROTOCOL.md.
func KnownOption(key string) bool {
	switch key {
	case OptTimeout, OptWebSocket, OptCompression, OptHTTP2, OptRetries, OptLBPolicy,
		OptPreserveHost, OptStripPrefix, OptMaxBodyBytes, OptTLSSkipVerify, OptHealthCheckInterval,
		OptHealthUnhealthyThreshold, OptHealthHealthyThreshold, OptPassiveHealth:
		return true
	}
	return false
}

// maxRouteDigits keeps a route number within uint64.
const maxRouteDigits = 19

// ValidateRouteID checks a route ID: "r" followed by a number ≥ 1 written
// without leading zeros, so each route has exactly one spelling.
func ValidateRouteID(s string) error {
	if !isRouteID(s) {
		return fmt.Errorf("invalid route id: %s", show(s))
	}
	return nil
}

func isRouteID(s string) bool {
	n, ok := strings.CutPrefix(s, "r")
	if !ok || n == "" || len(n) > maxRouteDigits || n[0] == '0' {
		return false
	}
	for i := 0; i < len(n); i++ {
		if n[i] < '0' || n[i] > '9' {
			return false
		}
	}
	return true
}

// ValidateTarget checks a settings target: "ALL" or a route ID.
func ValidateTarget(s string) error {
	if s != TargetAll && !isRouteID(s) {
		return fmt.Errorf("invalid target: %s (want ALL or a route id like r1)", show(s))
	}
	return nil
}

// ValidateRouteSpec checks a route that is already parsed: its domains are
// normalized (lower case, trimmed, unique, 1..32), and its path, backend
// and priority follow the ROUTE_ADD rules. The FSM calls it again on every
// entry, so nothing invalid that slipped past a proposer is applied.
func ValidateRouteSpec(r RouteSpec) error {
	norm, err := normalizeDomains(r.Domains)
	if err != nil {
		return err
	}
	if !slices.Equal(norm, r.Domains) {
		return errors.New("invalid domain: list not normalized (trimmed, lower case, no duplicates)")
	}
	if err := ValidatePath(r.Path); err != nil {
		return err
	}
	if err := ValidateBackendURL(r.Backend); err != nil {
		return err
	}
	if r.Priority < -MaxPriority || r.Priority > MaxPriority {
		return fmt.Errorf("invalid priority: %d (an integer from %d to %d)", r.Priority, -MaxPriority, MaxPriority)
	}
	return nil
}

// ParseBulkRoutes parses the ROUTE_ADD_BULK array: 1..1000 objects with
// "domains" (an array of names or a comma string), "path", "backend_url"
// ("backend", the ROUTE_LIST key, is accepted too) and an optional
// "priority" (a number or a numeric string). Unknown keys are ignored. An
// error names the offending route by its zero-based index in the array.
func ParseBulkRoutes(js string) ([]RouteSpec, error) {
	if len(js) > MaxBulkJSONBytes {
		return nil, fmt.Errorf("invalid json: larger than %d bytes", MaxBulkJSONBytes)
	}
	data := []byte(strings.TrimSpace(js))
	if !utf8.Valid(data) {
		return nil, errors.New("invalid json: not valid utf-8")
	}
	if !json.Valid(data) {
		return nil, errors.New("invalid json: " + syntaxProblem(data))
	}
	if data[0] != '[' {
		return nil, errors.New("invalid json: expected an array of routes")
	}
	var items []json.RawMessage
	if err := json.Unmarshal(data, &items); err != nil {
		return nil, errors.New("invalid json: expected an array of routes")
	}
	if len(items) == 0 {
		return nil, errors.New("invalid json: empty route list")
	}
	if len(items) > MaxBulkRoutes {
		return nil, fmt.Errorf("too many routes (max %d)", MaxBulkRoutes)
	}
	out := make([]RouteSpec, 0, len(items))
	for i, raw := range items {
		r, err := parseBulkRoute(raw)
		if err != nil {
			return nil, fmt.Errorf("route %d: %w", i, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// syntaxProblem describes why data is not JSON without Go type names.
func syntaxProblem(data []byte) string {
	if len(data) == 0 {
		return "empty"
	}
	var v any
	err := json.Unmarshal(data, &v)
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	}
	return "syntax error"
}

func parseBulkRoute(raw json.RawMessage) (RouteSpec, error) {
	var obj map[string]json.RawMessage
	if raw[0] != '{' || json.Unmarshal(raw, &obj) != nil {
		return RouteSpec{}, errors.New("expected an object")
	}
	var r RouteSpec
	var err error
	if r.Domains, err = bulkDomains(obj["domains"]); err != nil {
		return RouteSpec{}, err
	}
	var ok bool
	if r.Path, ok = jsonString(obj["path"]); !ok {
		return RouteSpec{}, errors.New("invalid path: want a string")
	}
	if err := ValidatePath(r.Path); err != nil {
		return RouteSpec{}, err
	}
	backend := obj["backend_url"]
	if isJSONNull(backend) {
		backend = obj["backend"]
	}
	if r.Backend, ok = jsonString(backend); !ok {
		return RouteSpec{}, errors.New("invalid backend url: want a string")
	}
	if err := ValidateBackendURL(r.Backend); err != nil {
		return RouteSpec{}, err
	}
	if p := obj["priority"]; !isJSONNull(p) {
		text, isStr := jsonString(p)
		if !isStr {
			text = string(p)
		}
		if r.Priority, err = ParsePriority(text); err != nil {
			return RouteSpec{}, err
		}
	}
	return r, nil
}

func bulkDomains(raw json.RawMessage) ([]string, error) {
	if isJSONNull(raw) {
		return nil, errors.New("invalid domain: missing domains")
	}
	if s, ok := jsonString(raw); ok {
		return ParseDomains(s)
	}
	var items []json.RawMessage
	if raw[0] != '[' || json.Unmarshal(raw, &items) != nil {
		return nil, errors.New("invalid domain: want an array of names or a comma list")
	}
	if len(items) > MaxDomains {
		return nil, fmt.Errorf("too many domains (max %d)", MaxDomains)
	}
	parts := make([]string, 0, len(items))
	for _, it := range items {
		s, ok := jsonString(it)
		if !ok {
			return nil, errors.New("invalid domain: want an array of names or a comma list")
		}
		parts = append(parts, s)
	}
	return normalizeDomains(parts)
}

func isJSONNull(raw json.RawMessage) bool {
	return len(raw) == 0 || string(raw) == "null"
}

// jsonString decodes raw when it is a JSON string.
func jsonString(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// ValidateHealth checks a HEALTH_SET: a valid path, an interval of at least
// one second and a timeout greater than zero and less than the interval.
func ValidateHealth(path string, interval, timeout time.Duration) error {
	if err := ValidatePath(path); err != nil {
		return err
	}
	switch {
	case interval < time.Second:
		return errors.New("invalid interval: must be at least 1s")
	case interval > MaxDuration:
		return fmt.Errorf("invalid interval: longer than %s", MaxDuration)
	case timeout <= 0:
		return errors.New("invalid timeout: must be positive")
	case timeout >= interval:
		return errors.New("invalid timeout: must be less than the interval")
	}
	return nil
}

// ValidateRateLimit checks a RATELIMIT_SET: 0..1000000 requests (0 removes
// the limit) and, when requests > 0, a positive window of at most a year.
func ValidateRateLimit(requests int, window time.Duration) error {
	switch {
	case requests < 0 || requests > MaxRateRequests:
		return fmt.Errorf("invalid requests: want an integer from 0 to %d", MaxRateRequests)
	case requests == 0:
		return nil
	case window <= 0:
		return errors.New("invalid window: must be positive")
	case window > MaxDuration:
		return fmt.Errorf("invalid window: longer than %s", MaxDuration)
	}
	return nil
}

// ValidateCircuitBreaker checks a CIRCUIT_BREAKER_SET: threshold 1..1000,
// a positive open timeout of at most a year, and 1..100 half-open requests.
func ValidateCircuitBreaker(threshold int, timeout time.Duration, halfOpen int) error {
	switch {
	case threshold < 1 || threshold > MaxBreakerFailures:
		return fmt.Errorf("invalid threshold: want an integer from 1 to %d", MaxBreakerFailures)
	case timeout <= 0:
		return errors.New("invalid timeout: must be positive")
	case timeout > MaxDuration:
		return fmt.Errorf("invalid timeout: longer than %s", MaxDuration)
	case halfOpen < 1 || halfOpen > MaxHalfOpen:
		return fmt.Errorf("invalid half_open_requests: want an integer from 1 to %d", MaxHalfOpen)
	}
	return nil
}

// Event types of SUBSCRIBE; EventAll subscribes to every type.
const (
	EventCertRenewed          = "cert_renewed"
	EventGlobalConfigChanged  = "global_config_changed"
	EventBackendHealthChanged = "backend_health_changed"
	EventConfigApplied        = "config_applied"
	EventSessionExpired       = "session_expired"
	EventLeaderChanged        = "leader_changed"
	EventNodeJoined           = "node_joined"
	EventNodeLeft             = "node_left"
	EventAll                  = "all"
)

// EventTypes lists every SUBSCRIBE type, "all" last.
var EventTypes = []string{
	EventCertRenewed, EventGlobalConfigChanged, EventBackendHealthChanged, EventConfigApplied,
	EventSessionExpired, EventLeaderChanged, EventNodeJoined, EventNodeLeft, EventAll,
}

// ValidateEventType checks a SUBSCRIBE or UNSUBSCRIBE type.
func ValidateEventType(s string) error {
	for _, t := range EventTypes {
		if s == t {
			return nil
		}
	}
	return fmt.Errorf("unknown event type: %s", show(s))
}

// ValidateScopes parses the comma list of CONFIG_APPLY_PARTIAL. Names are
// trimmed; the result holds each named scope once, in AllScopes order, so
// equal requests make equal log entries.
func ValidateScopes(s string) ([]string, error) {
	named := make(map[string]bool)
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		known := false
		for _, sc := range AllScopes {
			if p == sc {
				known = true
				break
			}
		}
		if !known {
			return nil, fmt.Errorf("unknown scope: %s", show(p))
		}
		named[p] = true
	}
	out := make([]string, 0, len(named))
	for _, sc := range AllScopes {
		if named[sc] {
			out = append(out, sc)
		}
	}
	return out, nil
}

// sessionIDEncoding spells 128 random bits as 26 lower-case base32 letters.
var sessionIDEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NewSessionID makes a session ID "<service>-<26 base32 letters>" from 128
// bits of crypto/rand, so IDs are unguessable and never repeat in practice.
func NewSessionID(service string) (string, error) {
	if err := ValidateServiceName(service); err != nil {
		return "", err
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("new session id: %w", err)
	}
	return service + "-" + sessionIDEncoding.EncodeToString(b[:]), nil
}

// ValidateSessionID checks the shape of a session ID: 1..128 characters of
// [A-Za-z0-9._-]. Whether the session exists is the caller's question.
func ValidateSessionID(s string) error {
	if !isName(s, MaxSessionIDLen) {
		return errors.New("invalid session id")
	}
	return nil
}

// ValidTxnID reports whether s is a transaction ID: "txn-" followed by
// 1..64 characters of [A-Za-z0-9._-].
func ValidTxnID(s string) bool {
	rest, ok := strings.CutPrefix(s, "txn-")
	return ok && isName(rest, MaxTxnIDLen)
}
