package localcluster

import (
	"errors"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testBinary is the running test executable, which acts as a fake node
// when fakeEnv is set (see TestMain).
func testBinary(t *testing.T) string {
	t.Helper()
	bin, err := os.Executable()
	if err != nil {
		t.Fatalf("own executable: %v", err)
	}
	return bin
}

// fakeNodeSlot makes a node slot whose process will be the fake node in
// the given mode.
func fakeNodeSlot(t *testing.T, mode string) *Node {
	t.Helper()
	t.Setenv(fakeEnv, mode)
	n := NewNode(t.TempDir(), "node1", LayoutPorts(17000, 0))
	n.KillWithParent = true
	return n
}

// waitLog polls n's log until it contains want.
func waitLog(t *testing.T, n *Node, want string) string {
	t.Helper()
	return waitLogCount(t, n, want, 1)
}

// waitLogCount polls n's log until it contains want count times. The fake
// node prints its command line once its signal handling is in place, so
// waiting for "args:" is waiting until it is up.
func waitLogCount(t *testing.T, n *Node, want string, count int) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(n.LogPath)
		if strings.Count(string(b), want) >= count {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("log of %s never showed %q %d times; it has:\n%s", n.ID, want, count, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestNodeArgs(t *testing.T) {
	n := NewNode("/data", "node2", LayoutPorts(17000, 1))
	n.Join = []string{"127.0.0.1:17003", "127.0.0.1:17023"}
	n.Expect = 3
	got := strings.Join(n.Args([]string{"--log-level", "warn"}), " ")
	want := "serve --node-id node2 --data-dir /data/node2" +
		" --http-addr 127.0.0.1:17010 --control-addr 127.0.0.1:17011 --raft-addr 127.0.0.1:17012" +
		" --gossip-addr 127.0.0.1:17013 --rpc-addr 127.0.0.1:17014 --admin-addr 127.0.0.1:17015" +
		" --bootstrap-expect 3 --join 127.0.0.1:17003,127.0.0.1:17023 --log-level warn"
	if got != want {
		t.Errorf("args\n got %s\nwant %s", got, want)
	}
	if n.LogPath != "/data/node2.log" {
		t.Errorf("log path %s", n.LogPath)
	}

	// A node that only joins still says so explicitly: serve would
	// otherwise default to bootstrapping alone.
	lone := NewNode("/data", "node4", LayoutPorts(17000, 3))
	got = strings.Join(lone.Args(nil), " ")
	if !strings.HasSuffix(got, "--bootstrap-expect 0") || strings.Contains(got, "--join") {
		t.Errorf("join-less node args: %s", got)
	}
}

func TestNodeStartStopGraceful(t *testing.T) {
	n := fakeNodeSlot(t, "graceful")
	if n.Running() || n.Done() != nil || n.Pid() != 0 {
		t.Fatal("a new slot looks started")
	}
	if err := n.Start(testBinary(t), []string{"--extra"}); err != nil {
		t.Fatalf("start: %v", err)
	}
	if !n.Running() || n.Pid() == 0 {
		t.Fatal("started node is not running")
	}
	if err := n.Start(testBinary(t), nil); err == nil {
		t.Error("second start of a running node succeeded")
	}
	log := waitLog(t, n, "args:")
	if !strings.Contains(log, "serve --node-id node1") || !strings.Contains(log, "--extra") {
		t.Errorf("child saw the wrong command line:\n%s", log)
	}
	if err := n.Stop(10 * time.Second); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if n.Running() {
		t.Error("stopped node still running")
	}
	waitLog(t, n, "got SIGTERM")
	if err := n.ExitErr(); err != nil {
		t.Errorf("graceful exit reported %v", err)
	}
	if err := n.Stop(time.Second); err != nil {
		t.Errorf("stop of a stopped node: %v", err)
	}
	if err := n.Signal(syscall.SIGTERM); !errors.Is(err, ErrNotRunning) {
		t.Errorf("signal to a stopped node: %v, want ErrNotRunning", err)
	}

	// Restart in place: same slot, the log keeps growing.
	if err := n.Start(testBinary(t), nil); err != nil {
		t.Fatalf("restart: %v", err)
	}
	waitLogCount(t, n, "args:", 2)
	if err := n.Kill(); err != nil {
		t.Fatalf("kill: %v", err)
	}
	if n.Running() || n.ExitErr() == nil {
		t.Errorf("killed node: running %v, exit error %v", n.Running(), n.ExitErr())
	}
	if log := waitLog(t, n, "got SIGTERM"); strings.Count(log, "got SIGTERM") != 1 {
		t.Errorf("SIGKILL was handled like SIGTERM:\n%s", log)
	}
}

func TestNodeStopHangingDumpsThenKills(t *testing.T) {
	n := fakeNodeSlot(t, "stubborn")
	if err := n.Start(testBinary(t), nil); err != nil {
		t.Fatalf("start: %v", err)
	}
	// The fake must have installed its signal dispositions before the
	// SIGTERM, or the default action ends it and the test proves nothing.
	waitLog(t, n, "args:")
	t0 := time.Now()
	err := n.Stop(200 * time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "goroutine dump in "+n.LogPath) {
		t.Fatalf("stop of a hanging node: %v", err)
	}
	if n.Running() {
		t.Fatal("hanging node survived Stop")
	}
	// SIGTERM limit + SIGQUIT wait, then the kill: well under the kill wait.
	if took := time.Since(t0); took < quitWait || took > quitWait+killWait {
		t.Errorf("stop took %s; want the SIGQUIT wait (%s) before the kill", took, quitWait)
	}
	var ee interface{ Sys() any }
	if errors.As(n.ExitErr(), &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signal() != syscall.SIGKILL {
			t.Errorf("hanging node ended by %v, want SIGKILL", ws.Signal())
		}
	} else {
		t.Errorf("exit error %v is not a process exit", n.ExitErr())
	}
}

func TestNodeSignalStopContinue(t *testing.T) {
	n := fakeNodeSlot(t, "graceful")
	if err := n.Start(testBinary(t), nil); err != nil {
		t.Fatalf("start: %v", err)
	}
	waitLog(t, n, "args:")
	if err := n.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP: %v", err)
	}
	if !n.Running() {
		t.Error("a stopped (SIGSTOP) process counts as running")
	}
	// Stop must resume it first: a stopped process cannot act on SIGTERM.
	if err := n.Stop(10 * time.Second); err != nil {
		t.Fatalf("stop of a paused node: %v", err)
	}
	waitLog(t, n, "got SIGTERM")
}

func TestNodeWaitTimesOut(t *testing.T) {
	n := fakeNodeSlot(t, "graceful")
	if err := n.Wait(time.Millisecond); err != nil {
		t.Errorf("wait on a never-started node: %v", err)
	}
	if err := n.Start(testBinary(t), nil); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { _ = n.Kill() })
	waitLog(t, n, "args:")
	if err := n.Wait(50 * time.Millisecond); err == nil {
		t.Error("wait on a running node returned")
	}
}

func TestNodeExitIsNoticed(t *testing.T) {
	n := fakeNodeSlot(t, "fail")
	if err := n.Start(testBinary(t), nil); err != nil {
		t.Fatalf("start: %v", err)
	}
	select {
	case <-n.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("exit not noticed")
	}
	if n.Running() {
		t.Error("exited node still running")
	}
	var ee interface{ ExitCode() int }
	if !errors.As(n.ExitErr(), &ee) || ee.ExitCode() != 7 {
		t.Errorf("exit error %v, want exit status 7", n.ExitErr())
	}
}

func TestNodeStartFailures(t *testing.T) {
	n := NewNode(t.TempDir(), "node1", LayoutPorts(17000, 0))
	if err := n.Start("/nonexistent/raftgate", nil); err == nil || n.Running() {
		t.Errorf("start of a missing binary: %v, running %v", err, n.Running())
	}
	bad := NewNode("/nonexistent/dir", "node1", LayoutPorts(17000, 0))
	if err := bad.Start(testBinary(t), nil); err == nil || !strings.Contains(err.Error(), "open log of node1") {
		t.Errorf("start without a log directory: %v", err)
	}
}

func TestClusterLayoutAndLifecycle(t *testing.T) {
	t.Setenv(fakeEnv, "graceful")
	dir := t.TempDir()
	c := New(dir, 17000, 3, testBinary(t))
	if len(c.Nodes) != 3 {
		t.Fatalf("%d nodes", len(c.Nodes))
	}
	for i, n := range c.Nodes {
		if n.ID != []string{"node1", "node2", "node3"}[i] || n.Ports != LayoutPorts(17000, i) || n.Expect != 3 {
			t.Errorf("node %d: %s %+v expect %d", i, n.ID, n.Ports, n.Expect)
		}
		if len(n.Join) != 2 || slices.Contains(n.Join, n.Gossip) {
			t.Errorf("%s joins %v; want the two other gossip addresses", n.ID, n.Join)
		}
	}
	if c.Index("node2") != 1 || c.Index("node9") != -1 {
		t.Error("Index")
	}
	c.Extra = []string{"--session-grace", "1m"}
	t.Cleanup(func() { _ = c.StopAll(10 * time.Second) })
	if err := c.StartAll(); err != nil {
		t.Fatalf("start all: %v", err)
	}
	for _, n := range c.Nodes {
		if log := waitLog(t, n, "args:"); !strings.Contains(log, "--session-grace 1m") {
			t.Errorf("%s started without the cluster's extra flags:\n%s", n.ID, log)
		}
	}
	if err := c.Nodes[1].Kill(); err != nil {
		t.Fatalf("kill: %v", err)
	}
	// StartAll starts only what is not running: the killed one.
	if err := c.StartAll(); err != nil {
		t.Fatalf("start all again: %v", err)
	}
	waitLogCount(t, c.Nodes[1], "args:", 2)
	if strings.Count(waitLog(t, c.Nodes[0], "args:"), "args:") != 1 {
		t.Error("StartAll restarted a running node")
	}
	if err := c.StopAll(10 * time.Second); err != nil {
		t.Fatalf("stop all: %v", err)
	}
	for _, n := range c.Nodes {
		if n.Running() {
			t.Errorf("%s still running", n.ID)
		}
		waitLog(t, n, "got SIGTERM")
	}
}
