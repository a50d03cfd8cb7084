package localcluster

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeControl is a control-protocol listener that answers CLUSTER_STATUS
// with whatever answer returns for the k-th request (k from 0).
type fakeControl struct {
	ln     net.Listener
	asked  atomic.Int64
	answer func(k int) []string
	wg     sync.WaitGroup
}

func startFakeControl(t *testing.T, answer func(k int) []string) *fakeControl {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	f := &fakeControl{ln: ln, answer: answer}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil || line != "CLUSTER_STATUS\n" {
					return
				}
				k := int(f.asked.Add(1) - 1)
				for _, l := range f.answer(k) {
					if _, err := c.Write([]byte(l + "\n")); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		f.wg.Wait()
	})
	return f
}

func (f *fakeControl) addr() string { return f.ln.Addr().String() }

// statusLine encodes a CLUSTER_STATUS answer with the given leader and
// alive flags for members n1, n2, ...
func statusLine(t *testing.T, leader string, alive ...bool) string {
	t.Helper()
	st := Status{Leader: leader, Term: 4}
	for i, a := range alive {
		st.Nodes = append(st.Nodes, Member{ID: "n" + string(rune('1'+i)), RaftState: "Follower", AppliedIndex: 9, Alive: a})
	}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	return "CLUSTER_OK|" + string(b)
}

func TestParseStatus(t *testing.T) {
	// The exact wire form of docs/PROTOCOL.md, every field.
	line := `CLUSTER_OK|{"leader":"node2","term":7,"nodes":[` +
		`{"id":"node1","control_addr":"127.0.0.1:17001","proxy_addr":"127.0.0.1:17000","raft_state":"Follower","applied_index":41,"alive":true},` +
		`{"id":"node2","control_addr":"127.0.0.1:17011","proxy_addr":"127.0.0.1:17010","raft_state":"Leader","applied_index":42,"alive":true},` +
		`{"id":"node3","control_addr":"127.0.0.1:17021","proxy_addr":"127.0.0.1:17020","raft_state":"Candidate","applied_index":40,"alive":false}]}` + "\r\n"
	st, err := ParseStatus(line)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if st.Leader != "node2" || st.Term != 7 || len(st.Nodes) != 3 || AliveCount(st) != 2 {
		t.Fatalf("parsed %+v", st)
	}
	want := Member{ID: "node2", ControlAddr: "127.0.0.1:17011", ProxyAddr: "127.0.0.1:17010", RaftState: "Leader", AppliedIndex: 42, Alive: true}
	if st.Nodes[1] != want {
		t.Errorf("member %+v, want %+v", st.Nodes[1], want)
	}
	for _, bad := range []string{"ERROR|no leader", "CLUSTER_OK|{", "", "CLUSTER_OK"} {
		if _, err := ParseStatus(bad); err == nil {
			t.Errorf("ParseStatus(%q) succeeded", bad)
		}
	}
}

func TestQueryStatusSkipsPushedLines(t *testing.T) {
	f := startFakeControl(t, func(int) []string {
		return []string{"EVENT|backend_health_changed|{}", "MAINT_OK|x", "SHUTDOWN", statusLine(t, "n1", true, true)}
	})
	st, err := QueryStatus(context.Background(), f.addr())
	if err != nil {
		t.Fatalf("query: %v", err)
	}
	if st.Leader != "n1" || AliveCount(st) != 2 {
		t.Errorf("status %+v", st)
	}
}

func TestQueryStatusErrors(t *testing.T) {
	f := startFakeControl(t, func(int) []string { return []string{"ERROR|unknown command"} })
	if _, err := QueryStatus(context.Background(), f.addr()); err == nil || !strings.Contains(err.Error(), "ERROR|unknown command") {
		t.Errorf("error answer: %v", err)
	}
	// A listener that never answers: the context's deadline bounds the read.
	hang, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hang.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	if _, err := QueryStatus(ctx, hang.Addr().String()); err == nil {
		t.Error("query of a mute node succeeded")
	}
	if took := time.Since(t0); took > 3*time.Second {
		t.Errorf("mute node held the query for %s", took)
	}
	// Nothing listens on a closed listener's port.
	addr := hang.Addr().String()
	hang.Close()
	if _, err := QueryStatus(context.Background(), addr); err == nil {
		t.Error("query of a closed port succeeded")
	}
}

func TestAgreedLeader(t *testing.T) {
	ctx := context.Background()
	a := startFakeControl(t, func(int) []string { return []string{statusLine(t, "n1", true, true, true)} })
	b := startFakeControl(t, func(int) []string { return []string{statusLine(t, "n1", true, true, false)} })
	other := startFakeControl(t, func(int) []string { return []string{statusLine(t, "n2", true, true, true)} })
	none := startFakeControl(t, func(int) []string { return []string{statusLine(t, "", true, true, true)} })

	if l, err := AgreedLeader(ctx, []string{a.addr(), b.addr()}, 2); err != nil || l != "n1" {
		t.Errorf("agreeing nodes: %q %v", l, err)
	}
	if _, err := AgreedLeader(ctx, []string{a.addr(), b.addr()}, 3); err == nil {
		t.Error("b sees 2 alive, want 3: accepted")
	}
	if _, err := AgreedLeader(ctx, []string{a.addr(), other.addr()}, 1); err == nil || !strings.Contains(err.Error(), "disagree") {
		t.Errorf("disagreeing nodes: %v", err)
	}
	if _, err := AgreedLeader(ctx, []string{none.addr()}, 1); err == nil {
		t.Error("no leader: accepted")
	}
	if _, err := AgreedLeader(ctx, nil, 1); err == nil {
		t.Error("nobody asked: accepted")
	}
}

func TestWaitAgreedLeaderPolls(t *testing.T) {
	// No leader for the first three answers, then one: the wait must
	// keep asking and return it.
	f := startFakeControl(t, func(k int) []string {
		if k < 3 {
			return []string{statusLine(t, "", true)}
		}
		return []string{statusLine(t, "n1", true)}
	})
	l, err := WaitAgreedLeader(context.Background(), []string{f.addr()}, 1, 10*time.Second)
	if err != nil || l != "n1" {
		t.Fatalf("wait: %q %v", l, err)
	}
	if got := f.asked.Load(); got != 4 {
		t.Errorf("asked %d times, want 4", got)
	}

	never := startFakeControl(t, func(int) []string { return []string{statusLine(t, "", true)} })
	if _, err := WaitAgreedLeader(context.Background(), []string{never.addr()}, 1, 200*time.Millisecond); err == nil || !strings.Contains(err.Error(), "not ready after") {
		t.Errorf("leaderless cluster: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := WaitAgreedLeader(ctx, []string{never.addr()}, 1, 10*time.Second); err == nil {
		t.Error("cancelled wait succeeded")
	}
}

func TestClusterLeaderAmongRunning(t *testing.T) {
	t.Setenv(fakeEnv, "graceful")
	// Two running nodes whose control ports are fakes that name node2 the
	// leader, and a third never started (down) whose port answers
	// nothing: Leader asks only the running ones.
	f1 := startFakeControl(t, func(int) []string { return []string{statusLine(t, "bench2", true, true, false)} })
	f2 := startFakeControl(t, func(int) []string { return []string{statusLine(t, "bench2", true, true, false)} })
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	c := NewWithPorts(t.TempDir(), "bench", []Ports{{Control: f1.addr()}, {Control: f2.addr()}, {Control: deadAddr}}, testBinary(t))
	t.Cleanup(func() { _ = c.StopAll(10 * time.Second) })
	for i := 0; i < 2; i++ {
		if err := c.StartNode(i); err != nil {
			t.Fatalf("start: %v", err)
		}
		waitLog(t, c.Nodes[i], "args:")
	}
	i, err := c.Leader(context.Background(), 2)
	if err != nil || i != 1 {
		t.Fatalf("leader: %d %v", i, err)
	}
	if i, err := c.WaitLeader(context.Background(), 2, 5*time.Second); err != nil || i != 1 {
		t.Errorf("wait leader: %d %v", i, err)
	}
	if _, err := c.WaitLeader(context.Background(), 3, 150*time.Millisecond); err == nil {
		t.Error("want 3 alive with 2: accepted")
	}

	// A leader that is no node of this cluster is an error, not index -1.
	stranger := startFakeControl(t, func(int) []string { return []string{statusLine(t, "node7", true)} })
	c2 := NewWithPorts(t.TempDir(), "bench", []Ports{{Control: stranger.addr()}}, testBinary(t))
	t.Cleanup(func() { _ = c2.StopAll(10 * time.Second) })
	if err := c2.StartAll(); err != nil {
		t.Fatal(err)
	}
	waitLog(t, c2.Nodes[0], "args:")
	if _, err := c2.Leader(context.Background(), 1); err == nil || !strings.Contains(err.Error(), "not a node of this cluster") {
		t.Errorf("stranger leader: %v", err)
	}
}
