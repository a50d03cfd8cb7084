package cluster

import (
	"strconv"
	"testing"
	"time"
)

// TestFollowerWritesLearnCommitFromNoop: with a commit timeout far longer
// than the hold timeout, raft alone would tell a follower about a commit
// only when the next entry arrives, and a write answered by the follower
// (which waits until it has applied the entry) would time out. The
// leader's no-op after each write carries the commit index instead.
func TestFollowerWritesLearnCommitFromNoop(t *testing.T) {
	nodes := startCluster(t, 3, func(c *Config) {
		c.Timing.CommitTimeout = time.Minute
		c.HoldTimeout = 2 * time.Second
	})
	leader := waitForLeader(t, nodes...)
	f := followers(nodes, leader)[0]
	for i := range 5 {
		register(t, f, "nudged"+strconv.Itoa(i), "")
	}
	// The other follower hears of every write from the same no-ops.
	other := followers(nodes, leader)[1]
	waitFor(t, 2*time.Second, "the other follower applying every write", func() bool {
		return countService(other, "nudged4") == 1
	})
}
