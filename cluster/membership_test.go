package cluster

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

func voters(t *testing.T, n *Node) []string {
	t.Helper()
	v, err := n.Voters()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func waitVoters(t *testing.T, n *Node, want ...string) {
	t.Helper()
	slices.Sort(want)
	waitFor(t, 10*time.Second, fmt.Sprintf("voters %v", want), func() bool {
		v, err := n.Voters()
		return err == nil && slices.Equal(v, want)
	})
}

func TestFourthNodeJoinsThenLeaves(t *testing.T) {
	nodes := startCluster(t, 3)
	register(t, nodes[0], "existing", "")

	// The 4th node expects 3 like the others: it must see the existing
	// cluster and join it instead of bootstrapping a second one.
	n4 := startNode(t, testConfig(t, "n4", 3, nodes[2].GossipAddr()))
	leader := waitForLeader(t, nodes...)
	waitVoters(t, leader, "n1", "n2", "n3", "n4")
	all := append(slices.Clone(nodes), n4)
	assertConverged(t, all...)
	if countService(n4, "existing") != 1 {
		t.Fatal("new node misses the existing state")
	}
	register(t, n4, "via-n4", "")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n4.Leave(ctx); err != nil {
		t.Fatalf("leave: %v", err)
	}
	waitVoters(t, leader, "n1", "n2", "n3")
	waitFor(t, 5*time.Second, "n4 seen as left", func() bool {
		for _, m := range leader.Members() {
			if m.ID == "n4" {
				return m.State == "left"
			}
		}
		return false
	})
	// The leader must not re-add a node that left.
	idx := noop(t, leader)
	waitForApplied(t, idx, nodes...)
	if v := voters(t, leader); len(v) != 3 {
		t.Fatalf("voters after leave = %v", v)
	}
}

func TestLeaderLeavesGracefully(t *testing.T) {
	nodes := startCluster(t, 3)
	old := waitForLeader(t, nodes...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := old.Leave(ctx); err != nil {
		t.Fatalf("leader leave: %v", err)
	}
	rest := without(nodes, old)
	leader := waitForLeader(t, rest...)
	var want []string
	for _, n := range rest {
		want = append(want, n.NodeID())
	}
	waitVoters(t, leader, want...)
	register(t, rest[0], "after-leave", "")
}

func TestEmptyDataDirRejoinsWithoutFork(t *testing.T) {
	nodes := startCluster(t, 3)
	leader := waitForLeader(t, nodes...)
	register(t, leader, "before", "")
	victim := followers(nodes, leader)[0]
	oldRaft := victim.RaftAddr()
	stopNode(t, victim)

	// Same node ID, empty data dir, new ports.
	cfg := testConfig(t, victim.NodeID(), 3, nodes[0].GossipAddr(), leader.GossipAddr())
	cfg.DataDir = filepath.Join(t.TempDir(), "fresh")
	fresh := startNode(t, cfg)
	if fresh.RaftAddr() == oldRaft {
		t.Fatal("test wants a new raft address")
	}
	all := append(without(nodes, victim), fresh)
	leader = waitForLeader(t, all...)
	waitFor(t, 10*time.Second, "fresh node's new raft address in the configuration", func() bool {
		f := leader.raft.GetConfiguration()
		if f.Error() != nil {
			return false
		}
		for _, s := range f.Configuration().Servers {
			if string(s.ID) == fresh.NodeID() {
				return string(s.Address) == fresh.RaftAddr() && s.Suffrage == raft.Voter
			}
		}
		return false
	})
	register(t, fresh, "after", "")
	assertConverged(t, all...)
	if countService(fresh, "before") != 1 {
		t.Fatal("fresh node did not catch up")
	}
	// Exactly one cluster: everyone names the same leader and voter set.
	want := voters(t, leader)
	for _, n := range all {
		if n.LeaderID() != leader.NodeID() || !slices.Equal(voters(t, n), want) {
			t.Fatalf("%s: leader %s voters %v; leader %s voters %v", n.NodeID(), n.LeaderID(), voters(t, n), leader.NodeID(), want)
		}
	}
}

func TestFollowerCatchesUpBySnapshotInstall(t *testing.T) {
	nodes := startCluster(t, 3, func(c *Config) {
		c.Timing.SnapshotThreshold = 16
		c.Timing.TrailingLogs = 4
		c.Timing.SnapshotInterval = 50 * time.Millisecond
	})
	leader := waitForLeader(t, nodes...)
	victim := followers(nodes, leader)[0]
	stopNode(t, victim)
	// The victim's log may hold entries it stored but had not yet applied,
	// so its applied index understates what it has. Every entry it stored
	// came from the leader before the stop, so the leader's last index now
	// bounds the victim's log from above.
	behind := leader.raft.LastIndex()

	for i := 0; i < 60; i++ {
		register(t, leader, "bulk"+strconv.Itoa(i), "")
	}
	last := leader.fsm.AppliedIndex()
	waitFor(t, 10*time.Second, "leader snapshot past the stopped follower", func() bool {
		idx, _ := strconv.ParseUint(leader.raft.Stats()["last_snapshot_index"], 10, 64)
		first, err := leader.store.FirstIndex()
		return err == nil && idx > behind && first > behind+1
	})

	back := startNode(t, restartConfig(victim))
	all := append(without(nodes, victim), back)
	waitForApplied(t, last, back)
	idx, _ := strconv.ParseUint(back.raft.Stats()["last_snapshot_index"], 10, 64)
	if idx <= behind {
		t.Fatalf("restarted follower's last snapshot index %d <= %d: it did not install a snapshot", idx, behind)
	}
	assertConverged(t, all...)
	if countService(back, "bulk59") != 1 {
		t.Fatal("restarted follower misses writes")
	}
}

func TestLeasesRenewExpireExtendAndDetach(t *testing.T) {
	const grace = 1500 * time.Millisecond
	nodes := startCluster(t, 3, func(c *Config) { c.SessionGrace = grace })
	leader := waitForLeader(t, nodes...)
	fs := followers(nodes, leader)

	kept := register(t, fs[0], "kept", "")
	idle := register(t, fs[0], "idle", "")
	attached := register(t, fs[1], "attached", fs[1].Incarnation()+"-1")
	if s, _ := session(fs[1], attached); s.Attachment.Node != fs[1].NodeID() {
		t.Fatalf("attachment = %+v", s.Attachment)
	}

	// kept is active through fs[0] (batched touches); idle is not. The
	// leader's own loop sweeps; nothing here calls SweepOnce.
	deadline := time.Now().Add(8 * time.Second)
	for {
		fs[0].RecordActivity(kept)
		if _, ok := session(leader, idle); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("idle detached session did not expire")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if s, ok := session(leader, kept); !ok {
		t.Fatal("session kept alive by RecordActivity expired")
	} else if time.Since(time.Unix(0, s.CreatedAt)) < grace {
		t.Fatal("test did not run past the grace period")
	}

	// A dead node's attachments are detached by the leader.
	victim := fs[1]
	stopNode(t, victim)
	waitFor(t, 10*time.Second, "attachment of the dead node dropped", func() bool {
		s, ok := session(leader, attached)
		return ok && !s.Attachment.Attached()
	})

	// A new leader extends every lease before it sweeps: kill the leader
	// right after the last renewal and the sessions survive the election.
	if err := fs[0].FlushActivity(context.Background()); err != nil {
		t.Fatal(err)
	}
	before, _ := session(fs[0], kept)
	stopNode(t, leader)
	// Two of three voters are gone; bring the old leader back so fs[0]
	// and it form a quorum again.
	back := startNode(t, restartConfig(leader))
	newLeader := waitForLeader(t, fs[0], back)
	after, ok := session(newLeader, kept)
	if !ok || after.LastActivity <= before.LastActivity {
		t.Fatalf("lease not extended by the new leader: before %d after %d (found %v)", before.LastActivity, after.LastActivity, ok)
	}
	if err := newLeader.SweepOnce(context.Background()); err != nil {
		t.Fatalf("sweep on new leader: %v", err)
	}
	if err := fs[0].SweepOnce(context.Background()); err == nil && !fs[0].IsLeader() {
		t.Fatal("SweepOnce succeeded on a follower")
	}
}

func TestForceRemoveDeadNode(t *testing.T) {
	nodes := startCluster(t, 3)
	leader := waitForLeader(t, nodes...)
	fs := followers(nodes, leader)
	victim, asker := fs[0], fs[1]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	if err := asker.ForceRemove(ctx, victim.NodeID()); !errors.Is(err, ErrNodeAlive) {
		t.Fatalf("force-remove of a live node: %v, want ErrNodeAlive", err)
	}
	if err := asker.ForceRemove(ctx, asker.NodeID()); err == nil {
		t.Fatal("force-remove of the asking node itself succeeded")
	}
	if err := asker.ForceRemove(ctx, "no-such-node"); !errors.Is(err, ErrNotServer) {
		t.Fatalf("force-remove of an unknown node: %v, want ErrNotServer", err)
	}
	if v := voters(t, leader); len(v) != 3 {
		t.Fatalf("refused removals changed the voters: %v", v)
	}

	stopNode(t, victim)
	rest := without(nodes, victim)
	waitFor(t, 10*time.Second, "gossip to see the stopped node gone", func() bool {
		m, ok := asker.member(victim.NodeID())
		return ok && m.state != memberlist.StateAlive
	})
	// Asked on a follower: it goes to the leader.
	if err := asker.ForceRemove(ctx, victim.NodeID()); err != nil {
		t.Fatalf("force-remove of a stopped node: %v", err)
	}
	var want []string
	for _, n := range rest {
		want = append(want, n.NodeID())
	}
	waitVoters(t, leader, want...)
	// The leader does not add it back while it stays down.
	idx := noop(t, leader)
	waitForApplied(t, idx, rest...)
	if v := voters(t, leader); len(v) != 2 {
		t.Fatalf("voters after force-remove = %v", v)
	}
	register(t, asker, "after-force-remove", "")
}
