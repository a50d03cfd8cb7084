package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// node is one `raftgate serve` process slot: fixed ports and data
// directory, restarted in place.
type node struct {
	id                                      string
	idx                                     int
	http, control, raft, gossip, rpc, admin string
	dataDir, logPath                        string
	join                                    []string
	expect                                  int

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	running bool
}

// ports lays out node i's ports from base exactly as `raftgate dev` does.
func ports(base, i int) (http, control, raft, gossip, rpc, admin string) {
	p := func(off int) string { return fmt.Sprintf("127.0.0.1:%d", base+10*i+off) }
	return p(0), p(1), p(2), p(3), p(4), p(5)
}

func newNode(dir string, base, i int) *node {
	n := &node{id: fmt.Sprintf("node%d", i+1), idx: i}
	n.http, n.control, n.raft, n.gossip, n.rpc, n.admin = ports(base, i)
	n.dataDir = filepath.Join(dir, n.id)
	n.logPath = filepath.Join(dir, n.id+".log")
	return n
}

// start launches the process; the node must not be running.
func (n *node) start(binary string, extra []string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.running {
		return fmt.Errorf("start %s: already running", n.id)
	}
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log of %s: %w", n.id, err)
	}
	// No short --session-grace on purpose: sessions must survive every
	// fault on their own merits, with the default grace.
	args := []string{"serve",
		"--node-id", n.id, "--data-dir", n.dataDir,
		"--http-addr", n.http, "--control-addr", n.control, "--raft-addr", n.raft,
		"--gossip-addr", n.gossip, "--rpc-addr", n.rpc, "--admin-addr", n.admin,
		"--bootstrap-expect", fmt.Sprint(n.expect), "--fault-injection",
	}
	if len(n.join) > 0 {
		args = append(args, "--join", strings.Join(n.join, ","))
	}
	args = append(args, extra...)
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", n.id, err)
	}
	exited := make(chan struct{})
	n.cmd, n.exited, n.running = cmd, exited, true
	go func() {
		_ = cmd.Wait()
		logf.Close()
		n.mu.Lock()
		if n.cmd == cmd {
			n.running = false
		}
		n.mu.Unlock()
		close(exited)
	}()
	return nil
}

// isRunning reports whether the process is alive (possibly stopped).
func (n *node) isRunning() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.running
}

// signal sends sig to the process if it runs.
func (n *node) signal(sig syscall.Signal) error {
	n.mu.Lock()
	cmd, running := n.cmd, n.running
	n.mu.Unlock()
	if !running {
		return fmt.Errorf("signal %s: %s is not running", sig, n.id)
	}
	if err := cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %s to %s: %w", sig, n.id, err)
	}
	return nil
}

// wait blocks until the process exits or limit passes.
func (n *node) wait(limit time.Duration) error {
	n.mu.Lock()
	ch := n.exited
	n.mu.Unlock()
	if ch == nil {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-time.After(limit):
		return fmt.Errorf("%s did not exit within %s", n.id, limit)
	}
}

// kill sends SIGKILL and waits for the process to go.
func (n *node) kill() error {
	if err := n.signal(syscall.SIGKILL); err != nil {
		return err
	}
	return n.wait(10 * time.Second)
}

// stop sends SIGTERM (a graceful stop) and waits; after limit it kills.
func (n *node) stop(limit time.Duration) error {
	if !n.isRunning() {
		return nil
	}
	// A stopped process cannot handle SIGTERM.
	_ = n.signal(syscall.SIGCONT)
	if err := n.signal(syscall.SIGTERM); err != nil {
		return err
	}
	if err := n.wait(limit); err != nil {
		// Ask the Go runtime for a goroutine dump into the node's log
		// before the kill: a stop that hangs is a bug worth a trace.
		_ = n.signal(syscall.SIGQUIT)
		if n.wait(3*time.Second) != nil {
			_ = n.kill()
		}
		return fmt.Errorf("graceful stop: %w (goroutine dump in %s)", err, n.logPath)
	}
	return nil
}

// adminClient talks to the nodes' admin addresses.
var adminClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func adminDo(ctx context.Context, method, url string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode %s body: %w", url, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, url, err)
	}
	resp, err := adminClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, strings.TrimSpace(string(data)))
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decode %s: %w", url, err)
		}
	}
	return nil
}

// fsmDigest is the answer of GET /v1/fsm.
type fsmDigest struct {
	Node         string `json:"node"`
	AppliedIndex uint64 `json:"applied_index"`
	SHA256       string `json:"sha256"`
	Sessions     int    `json:"sessions"`
	Routes       int    `json:"routes"`
}

func (n *node) digest(ctx context.Context) (fsmDigest, error) {
	var d fsmDigest
	err := adminDo(ctx, http.MethodGet, "http://"+n.admin+"/v1/fsm", nil, &d)
	return d, err
}

// partition cuts this node's traffic to and from peers (added to any
// existing cut); nil heals every cut.
func (n *node) partition(ctx context.Context, peers []string) error {
	if peers == nil {
		peers = []string{}
	}
	return adminDo(ctx, http.MethodPost, "http://"+n.admin+"/v1/faults", map[string][]string{"partition": peers}, nil)
}

// leaveNode asks n to leave the cluster (POST /v1/leave), which may take
// as long as a leadership transfer and a configuration change.
func leaveNode(ctx context.Context, n *node) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+n.admin+"/v1/leave", nil)
	if err != nil {
		return fmt.Errorf("leave %s: %w", n.id, err)
	}
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		return fmt.Errorf("leave %s: %w", n.id, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("leave %s: %s: %s", n.id, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

func (n *node) ready(ctx context.Context) bool {
	return adminDo(ctx, http.MethodGet, "http://"+n.admin+"/readyz", nil, nil) == nil
}

// clusterStatus is the part of CLUSTER_STATUS the harness reads.
type clusterStatus struct {
	Leader string `json:"leader"`
	Term   uint64 `json:"term"`
	Nodes  []struct {
		ID           string `json:"id"`
		RaftState    string `json:"raft_state"`
		AppliedIndex uint64 `json:"applied_index"`
		Alive        bool   `json:"alive"`
	} `json:"nodes"`
}

func (n *node) status(ctx context.Context) (*clusterStatus, error) {
	c, err := dialLine(ctx, n.control, 2*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.close()
	line, err := c.do("CLUSTER_STATUS", 5*time.Second)
	if err != nil {
		return nil, err
	}
	payload, ok := strings.CutPrefix(line, "CLUSTER_OK|")
	if !ok {
		return nil, fmt.Errorf("CLUSTER_STATUS on %s: %s", n.id, line)
	}
	var st clusterStatus
	if err := json.Unmarshal([]byte(payload), &st); err != nil {
		return nil, fmt.Errorf("decode CLUSTER_STATUS of %s: %w", n.id, err)
	}
	return &st, nil
}

// isLeader reports whether the node says it is the leader.
func (n *node) isLeader(ctx context.Context) bool {
	st, err := n.status(ctx)
	if err != nil {
		return false
	}
	return st.Leader == n.id
}

// portsFree reports whether every port of nodes 0..count-1 from base can
// be bound now (TCP, and UDP for gossip).
func portsFree(base, count int) bool {
	for i := 0; i < count; i++ {
		a, b, c, d, e, f := ports(base, i)
		for _, addr := range []string{a, b, c, d, e, f} {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return false
			}
			ln.Close()
		}
		pc, err := net.ListenPacket("udp", d)
		if err != nil {
			return false
		}
		pc.Close()
	}
	return true
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
