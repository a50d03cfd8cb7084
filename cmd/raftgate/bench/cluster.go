package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/raftgate/raftgate/cmd/raftgate/localcluster"
)

// clusterStopLimit is how long a bench node gets to stop gracefully.
const clusterStopLimit = 10 * time.Second

// startCluster starts n nodes named bench1..benchN on free loopback ports
// (so benchmarks can run next to a dev cluster or a chaos run), joining
// each other with --bootstrap-expect n, and waits until they agree on a
// leader and all are alive.
func startCluster(ctx context.Context, bin, dir string, n int, extra ...string) (*localcluster.Cluster, error) {
	free, err := freePorts(6 * n)
	if err != nil {
		return nil, err
	}
	ports := make([]localcluster.Ports, n)
	for i := range ports {
		a := func(k int) string { return fmt.Sprintf("127.0.0.1:%d", free[6*i+k]) }
		ports[i] = localcluster.Ports{Proxy: a(0), Control: a(1), Raft: a(2), Gossip: a(3), RPC: a(4), Admin: a(5)}
	}
	c := localcluster.NewWithPorts(dir, "bench", ports, bin)
	// Warnings only: info logs of busy nodes would cost the CPU the
	// benchmark measures.
	c.Extra = append([]string{"--log-level", "warn"}, extra...)
	if err := c.StartAll(); err != nil {
		_ = c.StopAll(clusterStopLimit)
		return nil, err
	}
	if _, err := c.WaitLeader(ctx, n, 60*time.Second); err != nil {
		_ = c.StopAll(clusterStopLimit)
		return nil, fmt.Errorf("cluster of %d did not come up: %w (logs in %s)", n, err, dir)
	}
	return c, nil
}

// clusterWithBackend sets up what the failover and propagation benchmarks
// share: a work directory, an in-process backend and a 3-node cluster.
// The returned func tears all three down.
func clusterWithBackend(ctx context.Context, o Options, name string) (*localcluster.Cluster, string, func(), error) {
	dir, cleanup, err := workDir(o.Dir, name)
	if err != nil {
		return nil, "", nil, err
	}
	backend, stopBackend, err := inprocBackend(ctx)
	if err != nil {
		cleanup()
		return nil, "", nil, err
	}
	c, err := startCluster(ctx, o.Binary, dir, 3)
	if err != nil {
		stopBackend()
		cleanup()
		return nil, "", nil, err
	}
	return c, backend, func() {
		_ = c.StopAll(clusterStopLimit)
		stopBackend()
		cleanup()
	}, nil
}
