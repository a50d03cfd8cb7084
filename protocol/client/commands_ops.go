package client

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// ConfigValidate checks everything staged without applying it. A problem
// comes back as a *ServerError listing every issue, "; " separated.
func (c *Client) ConfigValidate(ctx context.Context) error {
	return c.expectEmpty(ctx, "OK", "CONFIG_VALIDATE")
}

// ConfigApply validates and activates everything staged in one atomic,
// replicated step. On success the change is committed and the answering
// node already serves it.
func (c *Client) ConfigApply(ctx context.Context) error {
	return c.expectEmpty(ctx, "OK", "CONFIG_APPLY")
}

// ConfigRollback discards everything staged.
func (c *Client) ConfigRollback(ctx context.Context) error {
	return c.expectEmpty(ctx, "OK", "CONFIG_ROLLBACK")
}

// ConfigApplyPartial applies only the staged changes of the given scopes
// (ScopeRoutes, ScopeHeaders, ...); the rest stays staged.
func (c *Client) ConfigApplyPartial(ctx context.Context, scopes ...string) error {
	for _, s := range scopes {
		if err := checkField("scope", s); err != nil {
			return err
		}
		if s == "" || strings.Contains(s, ",") {
			return &FieldError{Field: "scope", Value: s, Reason: "each scope must be non-empty and hold no ','"}
		}
	}
	return c.expectEmpty(ctx, "OK", "CONFIG_APPLY_PARTIAL", strings.Join(scopes, ","))
}

// ConfigDiff reports what ConfigApply would change.
func (c *Client) ConfigDiff(ctx context.Context) (*ConfigDiff, error) {
	payload, err := c.expect(ctx, "DIFF_OK", "CONFIG_DIFF")
	if err != nil {
		return nil, err
	}
	var d ConfigDiff
	if err := decodeJSON("CONFIG_DIFF", payload, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// DrainStart starts moving the session's share of new requests linearly to
// zero over d, and returns the time the drain ends.
func (c *Client) DrainStart(ctx context.Context, d time.Duration) (time.Time, error) {
	payload, err := c.expect(ctx, "DRAIN_OK", "DRAIN_START", d.String())
	if err != nil {
		return time.Time{}, err
	}
	end, err := time.Parse(time.RFC3339Nano, payload)
	if err != nil {
		return time.Time{}, fmt.Errorf("DRAIN_START: %w: end time %q: %w", ErrProtocol, payload, err)
	}
	return end, nil
}

// DrainStatus reports the drain in progress; without one the error
// satisfies IsNoDrain.
func (c *Client) DrainStatus(ctx context.Context) (*DrainStatus, error) {
	payload, err := c.expect(ctx, "DRAIN_STATUS_OK", "DRAIN_STATUS")
	if err != nil {
		return nil, err
	}
	var st DrainStatus
	if err := decodeJSON("DRAIN_STATUS", payload, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// DrainCancel restores full traffic.
func (c *Client) DrainCancel(ctx context.Context) error {
	return c.expectEmpty(ctx, "DRAIN_OK", "DRAIN_CANCEL")
}

// MaintEnter puts target (TargetAll, a comma list of route IDs, a path or a
// domain) into maintenance, served from backendURL or, when it is empty,
// from a built-in maintenance page. It returns once the node confirms with
// MAINT_OK that the maintenance backend answers, with an error matching
// ErrMaintenanceTimeout if the node gave up waiting (after 60 s), or when
// ctx ends. CommandTimeout bounds only the wait for the ACK. If neither line
// arrives within two minutes (it was lost with a broken connection), the
// error matches both ErrMaintenanceTimeout and ErrConnectionLost: the
// outcome is unknown.
func (c *Client) MaintEnter(ctx context.Context, target, backendURL string) error {
	if err := checkFields("target", target, "backend_url", backendURL); err != nil {
		return err
	}
	return c.maintCall(ctx, "MAINT_ENTER", target, backendURL)
}

// MaintExit returns target to normal serving. It returns once the node
// confirms with MAINT_OK that the route's backend answers, with an error
// matching ErrMaintenanceTimeout if it did not answer in time (or if no
// answer arrived at all, as for MaintEnter), or when ctx ends.
func (c *Client) MaintExit(ctx context.Context, target string) error {
	if err := checkField("target", target); err != nil {
		return err
	}
	return c.maintCall(ctx, "MAINT_EXIT", target)
}

// maintCall sends a maintenance command and waits for its completion line.
// The wait is registered by a hook that runs on the reader goroutine the
// moment the ACK is read, so a MAINT_OK right behind the ACK is never
// missed; the wait is tied to the client, not the connection, because
// MAINT_OK follows the session to whatever node it is attached to.
func (c *Client) maintCall(ctx context.Context, word string, fields ...string) error {
	mw := newMaintWait(fields[0])
	code, rest, _, err := c.call(ctx, word, true, func(session, line string) {
		if line == "ACK" {
			c.addMaint(mw, session)
		}
	}, fields...)
	if err != nil {
		mw.abandoned.Store(true)
		return err
	}
	if code != "ACK" {
		return unexpected(word, code, rest)
	}
	// The node ends every wait within its own 60 s timeout, but the line
	// is lost if no connection of the session is attached when it is sent.
	// Without this bound a caller with a context that never ends would
	// wait forever for it.
	limit := time.NewTimer(c.maintLimit)
	defer limit.Stop()
	select {
	case err := <-mw.ch:
		if err != nil {
			return fmt.Errorf("%s %s: %w", word, fields[0], err)
		}
		return nil
	case <-ctx.Done():
		mw.abandoned.Store(true)
		return fmt.Errorf("%s %s: waiting for MAINT_OK: %w", word, fields[0], ctx.Err())
	case <-limit.C:
		mw.abandoned.Store(true)
		return fmt.Errorf("%s %s: %w: neither MAINT_OK nor the timeout line came within %v: %w",
			word, fields[0], ErrMaintenanceTimeout, c.maintLimit, ErrConnectionLost)
	}
}

// MaintStatus reports which routes are in maintenance.
func (c *Client) MaintStatus(ctx context.Context) (*MaintStatus, error) {
	payload, err := c.expect(ctx, "MAINT_STATUS_OK", "MAINT_STATUS")
	if err != nil {
		return nil, err
	}
	var st MaintStatus
	if err := decodeJSON("MAINT_STATUS", payload, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// StatsGet returns statistics summed over the live nodes: for one route ID
// a single entry, for TargetAll or "" every route of the session.
func (c *Client) StatsGet(ctx context.Context, target string) ([]RouteStats, error) {
	if err := checkField("target", target); err != nil {
		return nil, err
	}
	var fields []string
	if target != "" {
		fields = append(fields, target)
	}
	js, err := c.compressible(ctx, "STATS_OK", "STATS_GET", fields)
	if err != nil {
		return nil, err
	}
	if len(js) > 0 && js[0] == '{' {
		var one RouteStats
		if err := decodeJSON("STATS_GET", string(js), &one); err != nil {
			return nil, err
		}
		return []RouteStats{one}, nil
	}
	var all []RouteStats
	if err := decodeJSON("STATS_GET", string(js), &all); err != nil {
		return nil, err
	}
	return all, nil
}

// BackendTest asks the answering node to GET backendURL (5 s limit). An
// unreachable backend is not an error: the result has OK false and Error
// set.
func (c *Client) BackendTest(ctx context.Context, backendURL string) (*BackendTestResult, error) {
	if err := checkField("backend_url", backendURL); err != nil {
		return nil, err
	}
	code, rest, _, err := c.call(ctx, "BACKEND_TEST", true, nil, backendURL)
	if err != nil {
		return nil, err
	}
	if code != "BACKEND_OK" && code != "BACKEND_FAIL" {
		return nil, unexpected("BACKEND_TEST", code, rest)
	}
	var res BackendTestResult
	if err := decodeJSON("BACKEND_TEST", rest, &res); err != nil {
		return nil, err
	}
	res.OK = code == "BACKEND_OK"
	return &res, nil
}

// Subscribe subscribes the session to an event type (EventAll for all).
// Subscriptions belong to the session and survive failover by RECONNECT;
// after a re-registration they must be made again (see OnReregister).
func (c *Client) Subscribe(ctx context.Context, eventType string) error {
	if err := checkField("type", eventType); err != nil {
		return err
	}
	return c.expectEmpty(ctx, "SUBSCRIBE_OK", "SUBSCRIBE", eventType)
}

// Unsubscribe removes a subscription; EventAll removes every one.
func (c *Client) Unsubscribe(ctx context.Context, eventType string) error {
	if err := checkField("type", eventType); err != nil {
		return err
	}
	return c.expectEmpty(ctx, "UNSUBSCRIBE_OK", "UNSUBSCRIBE", eventType)
}

// ClusterStatus returns the leader, term and members of the cluster, and
// remembers the members' control addresses for failover.
func (c *Client) ClusterStatus(ctx context.Context) (*ClusterStatus, error) {
	code, rest, cn, err := c.call(ctx, "CLUSTER_STATUS", c.register, nil)
	if err != nil {
		return nil, err
	}
	if code != "CLUSTER_OK" {
		return nil, unexpected("CLUSTER_STATUS", code, rest)
	}
	var st ClusterStatus
	if err := json.Unmarshal([]byte(rest), &st); err != nil {
		return nil, fmt.Errorf("CLUSTER_STATUS: %w: decode response: %w", ErrProtocol, err)
	}
	c.learnAddrs(&st, cn.addr)
	return &st, nil
}
