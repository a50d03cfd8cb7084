package localcluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// adminTimeout bounds the quick admin calls; Leave is bounded by its
// context only, since it may wait for a leadership transfer.
const adminTimeout = 5 * time.Second

// Keep-alives are off: nodes are killed and restarted on the same address
// all the time, and a pooled connection to a dead process only turns into
// a confusing error on the next call.
var (
	adminClient = &http.Client{Timeout: adminTimeout, Transport: &http.Transport{DisableKeepAlives: true}}
	leaveClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
)

// adminDo sends one request to the admin address, requires 200 OK and
// decodes the JSON answer into out (unless nil).
func adminDo(ctx context.Context, client *http.Client, method, url string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode %s body: %w", url, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, url, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, strings.TrimSpace(string(data)))
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decode %s: %w", url, err)
		}
	}
	return nil
}

// Digest is the answer of GET /v1/fsm: what a node has applied and a hash
// of its state machine, equal on nodes that applied the same log.
type Digest struct {
	Node         string `json:"node"`
	AppliedIndex uint64 `json:"applied_index"`
	SHA256       string `json:"sha256"`
	Sessions     int    `json:"sessions"`
	Routes       int    `json:"routes"`
}

// Digest asks the node for its state machine digest (GET /v1/fsm).
func (n *Node) Digest(ctx context.Context) (Digest, error) {
	var d Digest
	err := adminDo(ctx, adminClient, http.MethodGet, "http://"+n.Admin+"/v1/fsm", nil, &d)
	return d, err
}

// Partition cuts the node's traffic to and from the peers with these node
// IDs, added to any cut already in place; nil heals every cut. It needs a
// node started with --fault-injection (POST /v1/faults).
func (n *Node) Partition(ctx context.Context, peers []string) error {
	if peers == nil {
		// The endpoint reads an empty list as "heal"; null is not a list.
		peers = []string{}
	}
	return adminDo(ctx, adminClient, http.MethodPost, "http://"+n.Admin+"/v1/faults", map[string][]string{"partition": peers}, nil)
}

// Leave asks the node to leave the cluster gracefully (POST /v1/leave);
// it can take as long as a leadership transfer and a configuration change,
// so only ctx bounds it.
func (n *Node) Leave(ctx context.Context) error {
	if err := adminDo(ctx, leaveClient, http.MethodPost, "http://"+n.Admin+"/v1/leave", nil, nil); err != nil {
		return fmt.Errorf("leave %s: %w", n.ID, err)
	}
	return nil
}

// Ready reports whether the node answers GET /readyz with 200 OK.
func (n *Node) Ready(ctx context.Context) bool {
	return adminDo(ctx, adminClient, http.MethodGet, "http://"+n.Admin+"/readyz", nil, nil) == nil
}

// Status asks the node for CLUSTER_STATUS on its control port.
func (n *Node) Status(ctx context.Context) (*Status, error) {
	st, err := QueryStatus(ctx, n.Control)
	if err != nil {
		return nil, fmt.Errorf("status of %s: %w", n.ID, err)
	}
	return st, nil
}

// IsLeader reports whether the node says it is the leader.
func (n *Node) IsLeader(ctx context.Context) bool {
	st, err := n.Status(ctx)
	return err == nil && st.Leader == n.ID
}
