package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// node is one `raftgate serve` child process and its addresses.
type node struct {
	id                                      string
	http, control, raft, gossip, rpc, admin string
	dataDir, logPath                        string
	p                                       *proc
}

// localCluster is a cluster of raftgate processes on loopback.
type localCluster struct {
	bin   string
	nodes []*node
	extra []string
}

// startCluster starts n nodes that join each other with --bootstrap-expect
// n, and waits until they have a leader and all are alive.
func startCluster(ctx context.Context, bin, dir string, n int, extra ...string) (*localCluster, error) {
	ports, err := freePorts(6 * n)
	if err != nil {
		return nil, err
	}
	c := &localCluster{bin: bin, extra: extra}
	for i := 0; i < n; i++ {
		a := func(k int) string { return fmt.Sprintf("127.0.0.1:%d", ports[6*i+k]) }
		nd := &node{id: fmt.Sprintf("bench%d", i+1), http: a(0), control: a(1), raft: a(2), gossip: a(3), rpc: a(4), admin: a(5)}
		nd.dataDir = filepath.Join(dir, nd.id)
		nd.logPath = filepath.Join(dir, nd.id+".log")
		c.nodes = append(c.nodes, nd)
	}
	for i := range c.nodes {
		if err := c.start(i); err != nil {
			c.stop()
			return nil, err
		}
	}
	if _, err := c.waitReady(ctx, n, 60*time.Second); err != nil {
		c.stop()
		return nil, fmt.Errorf("cluster of %d did not come up: %w (logs in %s)", n, err, dir)
	}
	return c, nil
}

// start starts (or restarts, on the same data directory) node i.
func (c *localCluster) start(i int) error {
	nd := c.nodes[i]
	var join []string
	for _, o := range c.nodes {
		if o != nd {
			join = append(join, o.gossip)
		}
	}
	args := []string{"serve", "--node-id", nd.id, "--data-dir", nd.dataDir,
		"--http-addr", nd.http, "--control-addr", nd.control, "--raft-addr", nd.raft,
		"--gossip-addr", nd.gossip, "--rpc-addr", nd.rpc, "--admin-addr", nd.admin,
		"--bootstrap-expect", fmt.Sprint(len(c.nodes)), "--log-level", "warn"}
	if len(join) > 0 {
		args = append(args, "--join", strings.Join(join, ","))
	}
	args = append(args, c.extra...)
	p, err := startProc(nd.id, nd.logPath, nil, c.bin, args...)
	if err != nil {
		return err
	}
	nd.p = p
	return nil
}

// kill sends SIGKILL to node i.
func (c *localCluster) kill(i int) { c.nodes[i].p.kill() }

func (c *localCluster) stop() {
	for _, nd := range c.nodes {
		if nd.p != nil {
			nd.p.stop(10 * time.Second)
		}
	}
}

// clusterStatus is the part of CLUSTER_STATUS the benchmarks read.
type clusterStatus struct {
	Leader string `json:"leader"`
	Term   uint64 `json:"term"`
	Nodes  []struct {
		ID           string `json:"id"`
		RaftState    string `json:"raft_state"`
		AppliedIndex uint64 `json:"applied_index"`
		Alive        bool   `json:"alive"`
	} `json:"nodes"`
}

func statusOf(ctx context.Context, addr string) (*clusterStatus, error) {
	lc, err := dialLine(ctx, addr)
	if err != nil {
		return nil, err
	}
	defer lc.close()
	resp, err := lc.do("CLUSTER_STATUS", 5*time.Second)
	if err != nil {
		return nil, err
	}
	payload, ok := strings.CutPrefix(resp, "CLUSTER_OK|")
	if !ok {
		return nil, fmt.Errorf("CLUSTER_STATUS: unexpected answer %q", resp)
	}
	var st clusterStatus
	if err := json.Unmarshal([]byte(payload), &st); err != nil {
		return nil, fmt.Errorf("decode CLUSTER_STATUS: %w", err)
	}
	return &st, nil
}

// waitReady polls the live nodes until one reports a leader with want
// alive members and every live node agrees on that leader; it returns the
// leader's index in c.nodes.
func (c *localCluster) waitReady(ctx context.Context, want int, limit time.Duration) (int, error) {
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		leader, err := c.leaderOnce(ctx, want)
		if err == nil {
			return leader, nil
		}
		last = err
		select {
		case <-ctx.Done():
			return -1, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return -1, fmt.Errorf("no stable leader after %s: %v", limit, last)
}

func (c *localCluster) leaderOnce(ctx context.Context, want int) (int, error) {
	leader := ""
	for _, nd := range c.nodes {
		if nd.p == nil || !nd.p.alive() {
			continue
		}
		st, err := statusOf(ctx, nd.control)
		if err != nil {
			return -1, fmt.Errorf("%s: %w", nd.id, err)
		}
		alive := 0
		for _, m := range st.Nodes {
			if m.Alive {
				alive++
			}
		}
		if st.Leader == "" || alive < want {
			return -1, fmt.Errorf("%s sees leader %q and %d alive", nd.id, st.Leader, alive)
		}
		if leader != "" && st.Leader != leader {
			return -1, fmt.Errorf("nodes disagree on the leader (%s, %s)", leader, st.Leader)
		}
		leader = st.Leader
	}
	for i, nd := range c.nodes {
		if nd.id == leader {
			return i, nil
		}
	}
	return -1, fmt.Errorf("leader %q is not a node of this cluster", leader)
}
