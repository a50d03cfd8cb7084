package chaos

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/raftgate/raftgate/cmd/raftgate/localcluster"
)

// newCluster lays out the configured nodes from base. Every node runs with
// --fault-injection (partitions go through its admin address) and dies
// with the harness, so a crashed or timed-out run leaves no orphans. No
// short --session-grace on purpose: sessions must survive every fault on
// their own merits, with the default grace.
func newCluster(cfg Config, dir string, base int) *localcluster.Cluster {
	c := localcluster.New(dir, base, cfg.Nodes, cfg.Binary)
	c.Extra = append([]string{"--fault-injection"}, cfg.ServeArgs...)
	for _, n := range c.Nodes {
		n.KillWithParent = true
	}
	return c
}

// newSlot makes node slot i (ports from the harness's base) that is not
// part of the initial cluster; whoever starts it sets Join and Expect.
func (h *harness) newSlot(i int) *localcluster.Node {
	n := localcluster.NewNode(h.dir, fmt.Sprintf("node%d", i+1), localcluster.LayoutPorts(h.base, i))
	n.KillWithParent = true
	return n
}

// startNode starts (or restarts in place) n with the cluster's flags.
func (h *harness) startNode(n *localcluster.Node) error {
	return n.Start(h.cluster.Binary, h.cluster.Extra)
}

// errStopped is returned by waits cut short by the run's context.
var errStopped = errors.New("chaos run stopped")

// poll calls fn every interval until it returns true, ctx ends or limit
// passes.
func poll(ctx context.Context, limit, interval time.Duration, fn func() bool) bool {
	deadline := time.Now().Add(limit)
	for {
		if fn() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(interval):
		}
	}
}
