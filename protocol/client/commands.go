package client

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Ping sends PING (with the session, which counts as activity, or bare on
// a Dial client) and waits for PONG.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.expectOpt(ctx, c.register, "PONG", "PING")
	return err
}

// SessionInfo returns the session's SESSION_INFO.
func (c *Client) SessionInfo(ctx context.Context) (*SessionInfo, error) {
	payload, err := c.expect(ctx, "SESSION_OK", "SESSION_INFO")
	if err != nil {
		return nil, err
	}
	var info SessionInfo
	if err := decodeJSON("SESSION_INFO", payload, &info); err != nil {
		return nil, err
	}
	return &info, nil
}

// Shutdown sends CLIENT_SHUTDOWN, which removes the session's routes from
// the active table at once and ends the session, then closes the client.
// The client is closed whatever the outcome.
func (c *Client) Shutdown(ctx context.Context) error {
	c.mu.Lock()
	// The server closes the connection after SHUTDOWN_OK; that must not
	// look like a lost connection worth failing over for.
	c.noFailover = true
	hasSession := c.session != ""
	c.mu.Unlock()
	var err error
	if hasSession {
		_, err = c.expect(ctx, "SHUTDOWN_OK", "CLIENT_SHUTDOWN")
	} else {
		err = fmt.Errorf("CLIENT_SHUTDOWN: %w", ErrNoSession)
	}
	c.Close()
	return err
}

// joinDomains checks and comma-joins a domain list.
func joinDomains(domains []string) (string, error) {
	for _, d := range domains {
		if err := checkField("domains", d); err != nil {
			return "", err
		}
		if d == "" || strings.Contains(d, ",") {
			return "", &FieldError{Field: "domains", Value: d, Reason: "each domain must be non-empty and hold no ','"}
		}
	}
	return strings.Join(domains, ","), nil
}

// RouteAdd stages a route and returns its ID ("r7").
func (c *Client) RouteAdd(ctx context.Context, r RouteSpec) (string, error) {
	domains, err := joinDomains(r.Domains)
	if err != nil {
		return "", err
	}
	if err := checkFields("path", r.Path, "backend_url", r.BackendURL); err != nil {
		return "", err
	}
	return c.expect(ctx, "ROUTE_OK", "ROUTE_ADD", domains, r.Path, r.BackendURL, strconv.Itoa(r.Priority))
}

// RouteAddBulk stages several routes, all or none, and returns one result
// per route in order.
func (c *Client) RouteAddBulk(ctx context.Context, routes []RouteSpec) ([]BulkResult, error) {
	for _, r := range routes {
		if _, err := joinDomains(r.Domains); err != nil {
			return nil, err
		}
	}
	raw, err := json.Marshal(routes)
	if err != nil {
		return nil, fmt.Errorf("ROUTE_ADD_BULK: encode: %w", err)
	}
	field, err := encodeJSONField("routes", raw)
	if err != nil {
		return nil, err
	}
	payload, err := c.expect(ctx, "ROUTE_BULK_OK", "ROUTE_ADD_BULK", field)
	if err != nil {
		return nil, err
	}
	var res []BulkResult
	if err := decodeJSON("ROUTE_ADD_BULK", payload, &res); err != nil {
		return nil, err
	}
	return res, nil
}

// RouteUpdate stages a change of one field of a route: RouteFieldBackendURL,
// RouteFieldPriority, RouteFieldDomains (comma list) or RouteFieldPath.
func (c *Client) RouteUpdate(ctx context.Context, routeID, field, value string) error {
	if err := checkFields("route_id", routeID, "field", field, "value", value); err != nil {
		return err
	}
	return c.expectEmpty(ctx, "ROUTE_OK", "ROUTE_UPDATE", routeID, field, value)
}

// RouteRemove stages the removal of a route (a staged-only route is
// dropped at once).
func (c *Client) RouteRemove(ctx context.Context, routeID string) error {
	if err := checkField("route_id", routeID); err != nil {
		return err
	}
	return c.expectEmpty(ctx, "ROUTE_OK", "ROUTE_REMOVE", routeID)
}

// RouteList lists the session's routes, active, staged and pending removal.
func (c *Client) RouteList(ctx context.Context) ([]Route, error) {
	js, err := c.compressible(ctx, "ROUTE_LIST_OK", "ROUTE_LIST", nil)
	if err != nil {
		return nil, err
	}
	var routes []Route
	if err := decodeJSON("ROUTE_LIST", string(js), &routes); err != nil {
		return nil, err
	}
	return routes, nil
}

// compressible runs ROUTE_LIST or STATS_GET and returns the JSON payload.
// It asks for a compressed payload when Config.Compressed is set, and also
// when the node refused a plain answer as larger than 64 KiB; a read is
// safe to send twice.
func (c *Client) compressible(ctx context.Context, want, word string, fields []string) ([]byte, error) {
	compressed := c.cfg.Compressed
	for {
		f := fields
		if compressed {
			if word == "STATS_GET" && len(f) == 0 {
				// "compressed" alone would read as a target.
				f = []string{TargetAll}
			}
			f = append(f[:len(f):len(f)], "compressed")
		}
		payload, err := c.expect(ctx, want, word, f...)
		if err != nil {
			if !compressed && isTooLarge(err) {
				compressed = true
				continue
			}
			return nil, err
		}
		js, err := decodePayload(payload)
		if err != nil {
			return nil, fmt.Errorf("%s: %w: %w", word, ErrProtocol, err)
		}
		return js, nil
	}
}

// HeadersSet stages a response header for target (TargetAll or a route
// ID); a name written "request:X-Name" sets a header on the request to the
// backend instead.
func (c *Client) HeadersSet(ctx context.Context, target, name, value string) error {
	if err := checkFields("target", target, "name", name, "value", value); err != nil {
		return err
	}
	return c.expectEmpty(ctx, "HEADERS_OK", "HEADERS_SET", target, name, value)
}

// HeadersRemove stages the removal of a header set with HeadersSet.
func (c *Client) HeadersRemove(ctx context.Context, target, name string) error {
	if err := checkFields("target", target, "name", name); err != nil {
		return err
	}
	return c.expectEmpty(ctx, "HEADERS_OK", "HEADERS_REMOVE", target, name)
}

// OptionsSet stages an option (timeout, websocket, compression, http2,
// retries, lb_policy, preserve_host, strip_prefix, max_body_bytes,
// tls_skip_verify, health_check_interval) for target.
func (c *Client) OptionsSet(ctx context.Context, target, key, value string) error {
	if err := checkFields("target", target, "key", key, "value", value); err != nil {
		return err
	}
	return c.expectEmpty(ctx, "OPTIONS_OK", "OPTIONS_SET", target, key, value)
}

// OptionsRemove stages an option's return to its default.
func (c *Client) OptionsRemove(ctx context.Context, target, key string) error {
	if err := checkFields("target", target, "key", key); err != nil {
		return err
	}
	return c.expectEmpty(ctx, "OPTIONS_OK", "OPTIONS_REMOVE", target, key)
}

// HealthSet stages an active health check: GET path every interval, each
// probe bounded by timeout (interval >= 1s, timeout < interval).
func (c *Client) HealthSet(ctx context.Context, target, path string, interval, timeout time.Duration) error {
	if err := checkFields("target", target, "path", path); err != nil {
		return err
	}
	return c.expectEmpty(ctx, "HEALTH_OK", "HEALTH_SET", target, path, interval.String(), timeout.String())
}

// RateLimitSet stages a limit of requests per window per client IP;
// requests 0 removes the limit.
func (c *Client) RateLimitSet(ctx context.Context, target string, requests int, window time.Duration) error {
	if err := checkField("target", target); err != nil {
		return err
	}
	return c.expectEmpty(ctx, "RATELIMIT_OK", "RATELIMIT_SET", target, strconv.Itoa(requests), window.String())
}

// CircuitBreakerSet stages a circuit breaker: threshold consecutive
// failures open it; after timeout, halfOpenRequests trial requests decide.
func (c *Client) CircuitBreakerSet(ctx context.Context, target string, threshold int, timeout time.Duration, halfOpenRequests int) error {
	if err := checkField("target", target); err != nil {
		return err
	}
	return c.expectEmpty(ctx, "CIRCUIT_OK", "CIRCUIT_BREAKER_SET", target,
		strconv.Itoa(threshold), timeout.String(), strconv.Itoa(halfOpenRequests))
}

// CircuitBreakerStatus returns a route's breaker state over the cluster.
func (c *Client) CircuitBreakerStatus(ctx context.Context, routeID string) (*CircuitStatus, error) {
	if err := checkField("route_id", routeID); err != nil {
		return nil, err
	}
	payload, err := c.expect(ctx, "CIRCUIT_STATUS_OK", "CIRCUIT_BREAKER_STATUS", routeID)
	if err != nil {
		return nil, err
	}
	var st CircuitStatus
	if err := decodeJSON("CIRCUIT_BREAKER_STATUS", payload, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// CircuitBreakerReset closes a route's breaker on every node.
func (c *Client) CircuitBreakerReset(ctx context.Context, routeID string) error {
	if err := checkField("route_id", routeID); err != nil {
		return err
	}
	return c.expectEmpty(ctx, "CIRCUIT_OK", "CIRCUIT_BREAKER_RESET", routeID)
}

// expectEmpty runs a session command whose success is exactly want.
func (c *Client) expectEmpty(ctx context.Context, want, word string, fields ...string) error {
	_, err := c.expect(ctx, want, word, fields...)
	return err
}
