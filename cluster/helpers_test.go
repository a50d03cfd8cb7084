package cluster

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/raftgate/raftgate/fsm"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testHold = 2 * time.Second

func testLogger() *slog.Logger {
	if os.Getenv("RAFTGATE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testConfig is a node on loopback with fast timers and its own injector.
func testConfig(t testing.TB, id string, expect int, join ...string) Config {
	t.Helper()
	return Config{
		NodeID: id, DataDir: filepath.Join(t.TempDir(), id),
		RaftAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0", RPCAddr: "127.0.0.1:0",
		ControlAddr: "127.0.0.1:81" + id[len(id)-1:], ProxyAddr: "127.0.0.1:80" + id[len(id)-1:],
		Join: join, BootstrapExpect: expect, HoldTimeout: testHold,
		FSM: fsm.New(), Logger: testLogger().With("test", t.Name()), Timing: TestTiming(),
		Faults: NewFaultInjector(),
	}
}

// startNode starts cfg and shuts the node down when the test ends.
func startNode(t testing.TB, cfg Config) *Node {
	t.Helper()
	n, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("start %s: %v", cfg.NodeID, err)
	}
	t.Cleanup(func() { stopNode(t, n) })
	return n
}

func stopNode(t testing.TB, n *Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Errorf("shutdown %s: %v", n.NodeID(), err)
	}
}

// restartConfig is cfg again on the same data dir and addresses, with a
// fresh FSM, as after a process restart.
func restartConfig(n *Node) Config {
	cfg := n.cfg
	cfg.FSM = fsm.New()
	cfg.RaftAddr, cfg.GossipAddr, cfg.RPCAddr = n.RaftAddr(), n.GossipAddr(), n.RPCAddr()
	cfg.Faults = NewFaultInjector()
	return cfg
}

// startCluster starts n nodes that bootstrap together (BootstrapExpect n).
func startCluster(t testing.TB, n int, tweak ...func(*Config)) []*Node {
	t.Helper()
	var nodes []*Node
	var seed string
	for i := 1; i <= n; i++ {
		cfg := testConfig(t, fmt.Sprintf("n%d", i), n)
		if seed != "" {
			cfg.Join = []string{seed}
		}
		for _, f := range tweak {
			f(&cfg)
		}
		node := startNode(t, cfg)
		if seed == "" {
			seed = node.GossipAddr()
		}
		nodes = append(nodes, node)
	}
	waitForLeader(t, nodes...)
	return nodes
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitForLeader waits until every node names the same leader and that
// leader has extended the leases of its term; it returns the leader.
func waitForLeader(t testing.TB, nodes ...*Node) *Node {
	t.Helper()
	var leader *Node
	waitFor(t, 15*time.Second, "one agreed leader", func() bool {
		leader = nil
		id := nodes[0].LeaderID()
		if id == "" {
			return false
		}
		for _, n := range nodes {
			if n.LeaderID() != id {
				return false
			}
			if n.NodeID() == id {
				leader = n
			}
		}
		return leader != nil && leader.leaseTerm.Load() == leader.raft.CurrentTerm()
	})
	return leader
}

func waitForApplied(t testing.TB, index uint64, nodes ...*Node) {
	t.Helper()
	for _, n := range nodes {
		waitFor(t, 10*time.Second, fmt.Sprintf("%s to apply index %d", n.NodeID(), index), func() bool {
			return n.fsm.AppliedIndex() >= index
		})
	}
}

func followers(nodes []*Node, leader *Node) []*Node {
	var out []*Node
	for _, n := range nodes {
		if n != leader {
			out = append(out, n)
		}
	}
	return out
}

func without(nodes []*Node, drop *Node) []*Node { return followers(nodes, drop) }

// partition cuts isolated off from others on both ends.
func partition(isolated *Node, others ...*Node) {
	for _, o := range others {
		isolated.Faults().Partition(o.NodeID())
		o.Faults().Partition(isolated.NodeID())
	}
}

func heal(nodes ...*Node) {
	for _, n := range nodes {
		n.Faults().Heal()
	}
}

func registerCmd(t testing.TB, service, sessionID, conn string) *fsm.Command {
	t.Helper()
	cmd, err := fsm.NewCommand(fsm.CmdRegister, "", fsm.RegisterPayload{
		SessionID: sessionID, Service: service, Instance: "i1", Conn: conn,
	})
	if err != nil {
		t.Fatal(err)
	}
	return cmd
}

// register creates a session through n and returns its ID.
func register(t testing.TB, n *Node, service, conn string) string {
	t.Helper()
	id := "s-" + randomHex(6)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := n.Apply(ctx, registerCmd(t, service, id, conn))
	if err != nil {
		t.Fatalf("register %s on %s: %v", service, n.NodeID(), err)
	}
	if res.Err != "" || res.Value != id {
		t.Fatalf("register %s: result %+v, want session %s", service, res, id)
	}
	return id
}

func session(n *Node, id string) (fsm.Session, bool) {
	var s fsm.Session
	var ok bool
	n.fsm.View(func(st *fsm.State) {
		if p := st.Sessions[id]; p != nil {
			s, ok = *p, true
		}
	})
	return s, ok
}

func countService(n *Node, service string) int {
	c := 0
	n.fsm.View(func(st *fsm.State) {
		for _, s := range st.Sessions {
			if s.Service == service {
				c++
			}
		}
	})
	return c
}

func noop(t testing.TB, n *Node) uint64 {
	t.Helper()
	cmd, _ := fsm.NewCommand(fsm.CmdNoop, "", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := n.Apply(ctx, cmd); err != nil {
		t.Fatalf("noop on %s: %v", n.NodeID(), err)
	}
	return n.fsm.AppliedIndex()
}

// assertConverged waits until all nodes applied the same index and then
// compares their FSM snapshots byte for byte.
func assertConverged(t testing.TB, nodes ...*Node) {
	t.Helper()
	leader := waitForLeader(t, nodes...)
	idx := noop(t, leader)
	waitForApplied(t, idx, nodes...)
	for _, n := range nodes {
		waitFor(t, 5*time.Second, n.NodeID()+" snapshot equal to leader's", func() bool {
			want, err1 := leader.fsm.SnapshotBytes()
			got, err2 := n.fsm.SnapshotBytes()
			return err1 == nil && err2 == nil && string(got) == string(want)
		})
	}
}
