package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/raftgate/raftgate/cmd/raftgate/localcluster"
)

// procNode is a `raftgate serve` child process on loopback.
type procNode struct {
	t                                               *testing.T
	id, dataDir                                     string
	control, http, raft, gossip, rpc, admin, logOut string
	cmd                                             *exec.Cmd
	done                                            chan struct{}
}

// freePort returns a free loopback port below the ephemeral range, so a
// node restarted on it cannot find it taken by an outgoing connection.
func freePort(t *testing.T) string {
	t.Helper()
	ports, err := localcluster.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
}

func newProcNode(t *testing.T, id string) *procNode {
	return &procNode{
		t: t, id: id, dataDir: filepath.Join(t.TempDir(), id),
		control: freePort(t), http: freePort(t), raft: freePort(t), gossip: freePort(t),
		rpc: freePort(t), admin: freePort(t), logOut: filepath.Join(t.TempDir(), id+".log"),
	}
}

// start runs the node with the given extra flags.
func (n *procNode) start(extra ...string) {
	n.t.Helper()
	args := append([]string{"serve", "--node-id", n.id, "--data-dir", n.dataDir,
		"--control-addr", n.control, "--http-addr", n.http, "--raft-addr", n.raft,
		"--gossip-addr", n.gossip, "--rpc-addr", n.rpc, "--admin-addr", n.admin,
		"--log-level", "debug"}, extra...)
	logf, err := os.OpenFile(n.logOut, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		n.t.Fatal(err)
	}
	n.cmd = exec.Command(raftgateBin, args...)
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	if err := n.cmd.Start(); err != nil {
		n.t.Fatalf("start %s: %v", n.id, err)
	}
	n.done = make(chan struct{})
	go func() {
		_ = n.cmd.Wait()
		logf.Close()
		close(n.done)
	}()
	n.t.Cleanup(func() { n.kill() })
}

// kill sends SIGKILL and waits for the process to be gone.
func (n *procNode) kill() {
	if n.cmd == nil || n.cmd.Process == nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.done
}

// stop sends SIGTERM and waits up to 30 s.
func (n *procNode) stop() {
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(30 * time.Second):
		n.t.Errorf("%s did not stop within 30s of SIGTERM", n.id)
		n.kill()
	}
}

// log returns the node's output, for failure messages.
func (n *procNode) log() string {
	b, _ := os.ReadFile(n.logOut)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// send opens a fresh control connection, sends one line and returns the
// answer, or "" when the node does not answer.
func (n *procNode) send(line string) string {
	c, err := net.DialTimeout("tcp", n.control, time.Second)
	if err != nil {
		return ""
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return ""
	}
	s, _ := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(s)
}

func poll(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func proxiedStatus(addr, host, path string) int {
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	req.Host = host
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	c.CloseIdleConnections()
	return resp.StatusCode
}

// TestSIGKILLAndRestartKeepsRoutesAndSessions kills a single node with
// SIGKILL and starts it again on the same data directory: it serves the
// same routes, and RECONNECT of the session within its grace answers OK.
func TestSIGKILLAndRestartKeepsRoutesAndSessions(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "backend")
	}))
	defer backend.Close()
	n := newProcNode(t, "solo")
	n.start("--bootstrap-expect", "1", "--session-grace", "2m")
	poll(t, 20*time.Second, "node to answer", func() bool { return n.send("PING") == "PONG" })

	reg := n.send("REGISTER|web|i1|0")
	s, ok := strings.CutPrefix(reg, "ACK|")
	if !ok {
		t.Fatalf("REGISTER: %q\n%s", reg, n.log())
	}
	if r := n.send(fmt.Sprintf("ROUTE_ADD|%s|example.com|/|%s|0", s, backend.URL)); !strings.HasPrefix(r, "ROUTE_OK|") {
		t.Fatalf("ROUTE_ADD: %q", r)
	}
	if r := n.send("CONFIG_APPLY|" + s); r != "OK" {
		t.Fatalf("CONFIG_APPLY: %q", r)
	}
	if got := proxiedStatus(n.http, "example.com", "/"); got != 200 {
		t.Fatalf("before the kill the route answers %d", got)
	}

	n.kill()
	if got := proxiedStatus(n.http, "example.com", "/"); got != 0 {
		t.Fatalf("killed node still answers (%d)", got)
	}
	n.start("--bootstrap-expect", "1", "--session-grace", "2m")
	poll(t, 30*time.Second, "restarted node to serve the route", func() bool {
		return proxiedStatus(n.http, "example.com", "/") == 200
	})
	if r := n.send("RECONNECT|" + s); r != "OK" {
		t.Fatalf("RECONNECT after restart: %q\n%s", r, n.log())
	}
	if r := n.send("ROUTE_LIST|" + s); !strings.Contains(r, `"status":"active"`) {
		t.Fatalf("ROUTE_LIST after restart: %q", r)
	}
	n.stop()
}

// TestCorruptDataDirStopsWithClearMessage starts a node on a data directory
// whose bolt file is garbage: it must exit non-zero and say why.
func TestCorruptDataDirStopsWithClearMessage(t *testing.T) {
	n := newProcNode(t, "broken")
	n.start("--bootstrap-expect", "1")
	poll(t, 20*time.Second, "node to answer", func() bool { return n.send("PING") == "PONG" })
	n.kill()
	var corrupted int
	_ = filepath.Walk(n.dataDir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() && strings.HasSuffix(p, ".db") {
			corrupted++
			return os.WriteFile(p, []byte(strings.Repeat("not a bolt file ", 512)), 0o600)
		}
		return nil
	})
	if corrupted == 0 {
		t.Fatalf("no .db file found under %s", n.dataDir)
	}
	n.start("--bootstrap-expect", "1")
	select {
	case <-n.done:
	case <-time.After(20 * time.Second):
		t.Fatal("node with a corrupt data dir kept running")
	}
	if code := n.cmd.ProcessState.ExitCode(); code == 0 {
		t.Fatal("node with a corrupt data dir exited 0")
	}
	if out := n.log(); !strings.Contains(out, n.dataDir) {
		t.Fatalf("exit message does not name the data dir:\n%s", out)
	}
}

// TestRestartWithoutQuorumServesLastTable kills a whole 3-node cluster and
// starts only one node: with no quorum it cannot learn what is committed,
// yet its proxy serves the routes it served before (ARCHITECTURE invariant 5).
func TestRestartWithoutQuorumServesLastTable(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "backend")
	}))
	defer backend.Close()
	nodes := []*procNode{newProcNode(t, "n1"), newProcNode(t, "n2"), newProcNode(t, "n3")}
	flags := func(self *procNode) []string {
		var join []string
		for _, o := range nodes {
			if o != self {
				join = append(join, o.gossip)
			}
		}
		return []string{"--bootstrap-expect", "3", "--join", strings.Join(join, ",")}
	}
	for _, n := range nodes {
		n.start(flags(n)...)
	}
	poll(t, 30*time.Second, "cluster to accept a session", func() bool {
		return strings.HasPrefix(nodes[0].send("REGISTER|web|i1|0"), "ACK|")
	})
	s := strings.TrimPrefix(nodes[1].send("REGISTER|web|i2|0"), "ACK|")
	if r := nodes[1].send(fmt.Sprintf("ROUTE_ADD|%s|example.com|/|%s|0", s, backend.URL)); !strings.HasPrefix(r, "ROUTE_OK|") {
		t.Fatalf("ROUTE_ADD: %q", r)
	}
	if r := nodes[1].send("CONFIG_APPLY|" + s); r != "OK" {
		t.Fatalf("CONFIG_APPLY: %q", r)
	}
	poll(t, 10*time.Second, "node 1 to serve the route", func() bool {
		return proxiedStatus(nodes[0].http, "example.com", "/") == 200
	})
	for _, n := range nodes {
		n.kill()
	}
	nodes[0].start(flags(nodes[0])...)
	poll(t, 30*time.Second, "the lone restarted node to serve its last table", func() bool {
		return proxiedStatus(nodes[0].http, "example.com", "/") == 200
	})
	// And it really has no quorum: writes fail with a clear error.
	if r := nodes[0].send("ROUTE_ADD|" + s + "|b.com|/|" + backend.URL + "|0"); !strings.HasPrefix(r, "ERROR|no leader") {
		t.Fatalf("write without quorum answered %q", r)
	}
}

// TestForceLeaveRestoresQuorum: a dead node still counts in the quorum
// until it is reaped. With four voters and one of them dead, losing a
// second node stops writes (2 of 4); after 'raftgate force-leave' of the
// dead one the same loss leaves 2 of 3, and writes go on.
func TestForceLeaveRestoresQuorum(t *testing.T) {
	nodes := []*procNode{newProcNode(t, "n1"), newProcNode(t, "n2"), newProcNode(t, "n3"), newProcNode(t, "n4")}
	flags := func(self *procNode, expect int) []string {
		var join []string
		for _, o := range nodes[:3] {
			if o != self {
				join = append(join, o.gossip)
			}
		}
		return []string{"--bootstrap-expect", strconv.Itoa(expect), "--join", strings.Join(join, ",")}
	}
	for _, n := range nodes[:3] {
		n.start(flags(n, 3)...)
	}
	poll(t, 30*time.Second, "cluster to accept a session", func() bool {
		return strings.HasPrefix(nodes[0].send("REGISTER|web|i1|0"), "ACK|")
	})
	nodes[3].start(flags(nodes[3], 0)...) // joins only
	poll(t, 30*time.Second, "the fourth node to take writes", func() bool {
		return strings.HasPrefix(nodes[3].send("REGISTER|web|i4|0"), "ACK|")
	})

	forceLeave := func(id string) (int, string) {
		var out, errOut strings.Builder
		code := run([]string{"force-leave", "--admin-addr", nodes[0].admin, id}, &out, &errOut)
		return code, out.String() + errOut.String()
	}
	if code, out := forceLeave("n2"); code == 0 || !strings.Contains(out, "alive") {
		t.Fatalf("force-leave of a live node: exit %d, %q", code, out)
	}
	if code, out := forceLeave("no-such-node"); code == 0 || !strings.Contains(out, "not a server") {
		t.Fatalf("force-leave of an unknown node: exit %d, %q", code, out)
	}
	if code, out := forceLeave("n3\x1b[2J"); code == 0 || !strings.Contains(out, "400 Bad Request") {
		t.Fatalf("force-leave of a node ID with control characters: exit %d, %q", code, out)
	}

	// n3 dies and stays dead; then n2 goes too: 2 of 4 voters is no
	// quorum, and a write says so.
	nodes[2].kill()
	nodes[1].kill()
	if r := nodes[0].send("REGISTER|web|i5|0"); !strings.HasPrefix(r, "ERROR|no leader") {
		t.Fatalf("write with 2 of 4 voters up answered %q", r)
	}
	nodes[1].start(flags(nodes[1], 3)...)
	poll(t, 30*time.Second, "writes with n2 back (3 of 4)", func() bool {
		return strings.HasPrefix(nodes[0].send("REGISTER|web|i6|0"), "ACK|")
	})

	// Gossip needs a moment to call n3 failed; until then it is refused
	// as alive, which the command says.
	poll(t, 30*time.Second, "force-leave of the killed node", func() bool {
		code, _ := forceLeave("n3")
		return code == 0
	})
	nodes[1].kill()
	poll(t, 30*time.Second, "a write with 2 of 3 voters up after force-leave", func() bool {
		return strings.HasPrefix(nodes[0].send("REGISTER|web|i7|0"), "ACK|")
	})
}
