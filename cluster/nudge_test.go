package cluster

import (
	"context"
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
		c.HoldTimeout = 5 * time.Second
	})
	leader := waitForLeader(t, nodes...)
	f := followers(nodes, leader)[0]
	for i := range 5 {
		register(t, f, "nudged"+strconv.Itoa(i), "")
	}
	// The other follower hears of every write from the same no-ops.
	other := followers(nodes, leader)[1]
	waitFor(t, 5*time.Second, "the other follower applying every write", func() bool {
		return countService(other, "nudged4") == 1
	})
}

// TestLeaderWritesReachFollowersWithoutCommitTimeout: with a commit timeout
// far longer than the hold timeout, a write made on the leader still
// reaches the followers' state soon (the delayed no-op carries its
// commit), and a linearizable read on a follower right after it does not
// wait to hear that the no-op itself committed.
func TestLeaderWritesReachFollowersWithoutCommitTimeout(t *testing.T) {
	nodes := startCluster(t, 3, func(c *Config) {
		c.Timing.CommitTimeout = time.Minute
		c.HoldTimeout = 5 * time.Second
	})
	leader := waitForLeader(t, nodes...)
	fs := followers(nodes, leader)
	for i := range 3 {
		register(t, leader, "on-leader"+strconv.Itoa(i), "")
		written := leader.fsm.AppliedIndex()
		waitFor(t, 5*time.Second, "followers applying a leader's write", func() bool {
			return countService(fs[0], "on-leader"+strconv.Itoa(i)) == 1 && countService(fs[1], "on-leader"+strconv.Itoa(i)) == 1
		})
		// The no-op that carried the commit has committed on the leader;
		// the followers will not hear of that for a minute.
		waitFor(t, 5*time.Second, "the leader applying its no-op", func() bool {
			return leader.fsm.AppliedIndex() > written
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := fs[0].LinearizableRead(ctx); err != nil {
		t.Fatalf("linearizable read on a follower after the leader's no-op: %v", err)
	}
}
