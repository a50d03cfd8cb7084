package localcluster

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/raftgate/raftgate/protocol/client"
)

// Status is the answer to CLUSTER_STATUS as the node that was asked sees
// the cluster. It is the client package's type: that package owns the
// wire form, and this one reads it without the client's failover.
type Status = client.ClusterStatus

// Member is one node as listed by CLUSTER_STATUS.
type Member = client.NodeStatus

// AliveCount counts the members st lists as alive.
func AliveCount(st *Status) int {
	n := 0
	for _, m := range st.Nodes {
		if m.Alive {
			n++
		}
	}
	return n
}

// ParseStatus decodes a CLUSTER_STATUS answer line (`CLUSTER_OK|{json}`).
func ParseStatus(line string) (*Status, error) {
	line = strings.TrimRight(line, "\r\n")
	payload, ok := strings.CutPrefix(line, "CLUSTER_OK|")
	if !ok {
		return nil, fmt.Errorf("CLUSTER_STATUS: unexpected answer %q", line)
	}
	var st Status
	if err := json.Unmarshal([]byte(payload), &st); err != nil {
		return nil, fmt.Errorf("decode CLUSTER_STATUS: %w", err)
	}
	return &st, nil
}

// Timeouts of one CLUSTER_STATUS call: a node that does not accept within
// dialTimeout is as good as down, and one that accepts but cannot answer
// within statusTimeout is stuck (no leader to read from, for instance).
const (
	dialTimeout   = 2 * time.Second
	statusTimeout = 5 * time.Second
)

// QueryStatus asks the node at control for CLUSTER_STATUS on a fresh
// connection.
func QueryStatus(ctx context.Context, control string) (*Status, error) {
	d := net.Dialer{Timeout: dialTimeout}
	c, err := d.DialContext(ctx, "tcp", control)
	if err != nil {
		return nil, fmt.Errorf("CLUSTER_STATUS: %w", err)
	}
	defer c.Close()
	deadline := time.Now().Add(statusTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = c.SetDeadline(deadline)
	if _, err := c.Write([]byte("CLUSTER_STATUS\n")); err != nil {
		return nil, fmt.Errorf("send CLUSTER_STATUS: %w", err)
	}
	r := bufio.NewReaderSize(c, 64<<10)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, fmt.Errorf("read CLUSTER_STATUS answer: %w", err)
		}
		line = strings.TrimRight(line, "\r\n")
		// Lines the server may push on its own are not the answer.
		if line == "SHUTDOWN" || strings.HasPrefix(line, "EVENT|") || strings.HasPrefix(line, "MAINT_OK|") {
			continue
		}
		return ParseStatus(line)
	}
}

// AgreedLeader asks each control address once and returns the leader they
// all report; it fails unless every one sees a leader, the same one, and at
// least want alive members.
func AgreedLeader(ctx context.Context, controls []string, want int) (string, error) {
	leader := ""
	for _, addr := range controls {
		st, err := QueryStatus(ctx, addr)
		if err != nil {
			return "", err
		}
		if st.Leader == "" || AliveCount(st) < want {
			return "", fmt.Errorf("%s sees leader %q and %d of %d alive", addr, st.Leader, AliveCount(st), want)
		}
		if leader != "" && st.Leader != leader {
			return "", fmt.Errorf("nodes disagree on the leader (%s, %s)", leader, st.Leader)
		}
		leader = st.Leader
	}
	if leader == "" {
		return "", errors.New("no node to ask for the leader")
	}
	return leader, nil
}

// WaitAgreedLeader polls AgreedLeader until it succeeds, ctx ends or
// limit passes.
func WaitAgreedLeader(ctx context.Context, controls []string, want int, limit time.Duration) (string, error) {
	var leader string
	err := retry(ctx, limit, func() error {
		var err error
		leader, err = AgreedLeader(ctx, controls, want)
		return err
	})
	return leader, err
}

// pollInterval is how often the waits retry: short, because callers time
// how fast a cluster recovers.
const pollInterval = 50 * time.Millisecond

// retry calls fn every pollInterval until it returns nil, ctx ends or
// limit passes; the error then carries fn's last error.
func retry(ctx context.Context, limit time.Duration, fn func() error) error {
	deadline := time.Now().Add(limit)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("not ready after %s: %w", limit, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(pollInterval):
		}
	}
}
