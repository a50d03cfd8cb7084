package cluster

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestSingleNodeBootstrapRestartKeepsState(t *testing.T) {
	cfg := testConfig(t, "n1", 1)
	n := startNode(t, cfg)
	waitForLeader(t, n)

	id := register(t, n, "api", "")
	// An attachment from this incarnation, which the next one must drop.
	attached := register(t, n, "web", n.Incarnation()+"-7")
	if s, _ := session(n, attached); s.Attachment.Node != "n1" {
		t.Fatalf("attachment = %+v, want node n1", s.Attachment)
	}
	if err := n.LinearizableRead(context.Background()); err != nil {
		t.Fatalf("read on single node: %v", err)
	}
	applied := n.fsm.AppliedIndex()
	stopNode(t, n)

	n2 := startNode(t, restartConfig(n))
	waitForLeader(t, n2)
	waitForApplied(t, applied, n2)
	if _, ok := session(n2, id); !ok {
		t.Fatalf("session %s lost across restart", id)
	}
	waitFor(t, 5*time.Second, "old incarnation's attachment dropped", func() bool {
		s, ok := session(n2, attached)
		return ok && !s.Attachment.Attached()
	})
	if n2.Incarnation() == n.Incarnation() {
		t.Fatal("incarnation did not change across restart")
	}
}

func TestStartRejectsCorruptDataDir(t *testing.T) {
	cfg := testConfig(t, "n1", 1)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg.DataDir, "raft.db"), []byte("this is not a bolt file, not at all....."), 0o600); err != nil {
		t.Fatal(err)
	}
	n, err := Start(context.Background(), cfg)
	if err == nil {
		stopNode(t, n)
		t.Fatal("Start succeeded on a corrupt raft.db")
	}
	t.Logf("corrupt data dir: %v", err)

	other := testConfig(t, "n2", 1)
	other.DataDir = cfg.DataDir
	if _, err := Start(context.Background(), other); err == nil {
		t.Fatal("Start accepted a data dir of another node")
	}
}

func TestThreeNodesForwardExactlyOnce(t *testing.T) {
	nodes := startCluster(t, 3)
	leader := waitForLeader(t, nodes...)
	f := followers(nodes, leader)[0]

	// Forwarded from a follower; retried with the same request ID.
	cmd := registerCmd(t, "svc", "s-once", "")
	ctx := context.Background()
	r1, err := f.Apply(ctx, cmd)
	if err != nil || r1.Value != "s-once" {
		t.Fatalf("forwarded register: %+v, %v", r1, err)
	}
	// Applied on the answering follower before Apply returned.
	if _, ok := session(f, "s-once"); !ok {
		t.Fatal("follower answered before applying its own write")
	}
	again := *cmd
	r2, err := nodes[2].Apply(ctx, &again)
	if err != nil || r2 != r1 {
		t.Fatalf("retry with same request ID: %+v, %v; want %+v", r2, err, r1)
	}
	// A different request ID for the same session ID is a new command.
	fresh := registerCmd(t, "svc", "s-once", "")
	if r3, err := leader.Apply(ctx, fresh); err != nil || r3.Err == "" {
		t.Fatalf("second register of the same session ID: %+v, %v; want a business error", r3, err)
	}
	for _, n := range nodes {
		if err := n.LinearizableRead(ctx); err != nil {
			t.Fatalf("read on %s: %v", n.NodeID(), err)
		}
		if c := countService(n, "svc"); c != 1 {
			t.Fatalf("%s has %d svc sessions, want 1", n.NodeID(), c)
		}
	}

	st := f.Status(ctx)
	if st.Leader != leader.NodeID() || st.Term == 0 || len(st.Nodes) != 3 {
		t.Fatalf("status = %+v", st)
	}
	for _, ns := range st.Nodes {
		if !ns.Alive || ns.AppliedIndex == 0 || ns.RaftState == "unknown" || ns.ControlAddr == "" {
			t.Fatalf("status node = %+v", ns)
		}
		if (ns.ID == leader.NodeID()) != (ns.RaftState == "leader") {
			t.Fatalf("status node %s raft_state %s", ns.ID, ns.RaftState)
		}
	}
	if got := f.LiveNodes(); got != 3 {
		t.Fatalf("LiveNodes = %d", got)
	}
	if ms := f.Members(); len(ms) != 3 || ms[0].RaftAddr == "" || ms[0].RPCAddr == "" {
		t.Fatalf("members = %+v", ms)
	}
}

func TestRPCHandlersCallAndFanOut(t *testing.T) {
	nodes := startCluster(t, 3)
	for _, n := range nodes {
		n.RegisterHandler("echo", func(ctx context.Context, req []byte) ([]byte, error) {
			if string(req) == "fail" {
				return nil, errors.New("asked to fail")
			}
			return append([]byte(n.NodeID()+":"), req...), nil
		})
	}
	waitFor(t, 5*time.Second, "full membership", func() bool { return nodes[0].LiveNodes() == 3 })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	b, err := nodes[0].Call(ctx, "n2", "echo", []byte("hi"))
	if err != nil || string(b) != "n2:hi" {
		t.Fatalf("call = %q, %v", b, err)
	}
	if _, err := nodes[0].Call(ctx, "n3", "echo", []byte("fail")); err == nil {
		t.Fatal("remote error not returned")
	} else {
		var re *RemoteError
		if !errors.As(err, &re) || re.Msg != "asked to fail" {
			t.Fatalf("remote error = %v", err)
		}
	}
	if _, err := nodes[0].Call(ctx, "n2", "nope", nil); err == nil {
		t.Fatal("unknown handler answered")
	}
	res, err := nodes[1].FanOut(ctx, "echo", []byte("x"))
	if err != nil || len(res) != 3 || string(res["n3"]) != "n3:x" {
		t.Fatalf("fan-out = %v, %v", res, err)
	}

	// A partitioned node is reported missing, the rest still answer.
	nodes[1].Faults().Partition("n3")
	res, err = nodes[1].FanOut(ctx, "echo", []byte("y"))
	var fe *FanOutError
	if !errors.As(err, &fe) || fe.Asked != 3 || len(res) != 2 || fe.Failed["n3"] == nil {
		t.Fatalf("partial fan-out = %v, %v", res, err)
	}
	nodes[1].Faults().Heal()
}

func TestLeaderStopNewLeaderNoQuorum(t *testing.T) {
	nodes := startCluster(t, 3)
	var events []ClusterEvent
	evCh := make(chan ClusterEvent, 64)
	old := waitForLeader(t, nodes...)
	rest := without(nodes, old)
	rest[0].OnEvent(func(e ClusterEvent) {
		select {
		case evCh <- e:
		default:
		}
	})
	register(t, rest[0], "before", "")

	stopNode(t, old)
	leader := waitForLeader(t, rest...)
	if leader == old {
		t.Fatal("stopped node still leader")
	}
	register(t, rest[1], "after", "")
	for _, n := range rest {
		if err := n.LinearizableRead(context.Background()); err != nil {
			t.Fatal(err)
		}
		if countService(n, "before") != 1 || countService(n, "after") != 1 {
			t.Fatalf("%s lost a write across the leader change", n.NodeID())
		}
	}
	waitFor(t, 5*time.Second, "leader_changed event", func() bool {
		for {
			select {
			case e := <-evCh:
				events = append(events, e)
				if e.Type == EventLeaderChanged && e.Leader == leader.NodeID() {
					return true
				}
			default:
				return false
			}
		}
	})

	// Only one node left: no quorum, writes and reads fail within the hold.
	survivor := followers(rest, leader)[0]
	stopNode(t, leader)
	start := time.Now()
	_, err := survivor.Apply(context.Background(), registerCmd(t, "lost", "s-lost", ""))
	took := time.Since(start)
	if !errors.Is(err, ErrNoLeader) {
		t.Fatalf("no-quorum write: err = %v, want ErrNoLeader", err)
	}
	if took > testHold+time.Second {
		t.Fatalf("no-quorum write took %s, hold is %s", took, testHold)
	}
	if err := survivor.LinearizableRead(context.Background()); !errors.Is(err, ErrNoLeader) {
		t.Fatalf("no-quorum read: %v", err)
	}
	t.Logf("no-quorum write failed after %s: %v", took, err)
}

func TestPartitionedLeaderMinority(t *testing.T) {
	nodes := startCluster(t, 3)
	old := waitForLeader(t, nodes...)
	rest := without(nodes, old)
	register(t, old, "early", "")

	partition(old, rest...)
	// The isolated leader must not serve reads nor acknowledge writes.
	readErr := make(chan error, 1)
	go func() { readErr <- old.LinearizableRead(context.Background()) }()
	start := time.Now()
	_, werr := old.Apply(context.Background(), registerCmd(t, "minority", "s-minority", ""))
	if werr == nil {
		t.Fatal("isolated leader acknowledged a write")
	}
	if !errors.Is(werr, ErrNoLeader) || time.Since(start) > testHold+time.Second {
		t.Fatalf("isolated write: %v after %s", werr, time.Since(start))
	}
	select {
	case err := <-readErr:
		if err == nil {
			t.Fatal("isolated leader served a linearizable read")
		}
	case <-time.After(testHold + 2*time.Second):
		t.Fatal("isolated read did not fail within the hold timeout")
	}

	// The majority elects a new leader and goes on.
	waitForLeader(t, rest...)
	register(t, rest[0], "majority", "")

	heal(nodes...)
	assertConverged(t, nodes...)
	for _, n := range nodes {
		if countService(n, "minority") != 0 {
			t.Fatalf("%s applied the write the isolated leader did not acknowledge", n.NodeID())
		}
		if countService(n, "majority") != 1 || countService(n, "early") != 1 {
			t.Fatalf("%s misses acknowledged writes", n.NodeID())
		}
	}
}
