package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// devNode is one child process of raftgate dev.
type devNode struct {
	id                                               string
	http, control, raft, gossip, rpc, admin, dataDir string
	logPath                                          string
	cmd                                              *exec.Cmd
	exited                                           chan error
}

// devPorts lays out node i's ports from base: proxy base+10i, control +1,
// raft +2, gossip +3, rpc +4, admin +5.
func devPorts(base, i int) (http, control, raft, gossip, rpc, admin string) {
	p := func(off int) string { return fmt.Sprintf("127.0.0.1:%d", base+10*i+off) }
	return p(0), p(1), p(2), p(3), p(4), p(5)
}

func runDev(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("dev", `Starts a local raftgate cluster: --nodes separate 'raftgate serve' processes on
loopback, with data in a temporary directory, and prints each node's control and
proxy address and a copy-paste example. Ctrl-C stops every node and deletes the
data (unless --keep-data).`, stderr)
	nodes := fs.Int("nodes", 3, "number of nodes (1-9)")
	base := fs.Int("base-port", 17000, "first port; node i uses base+10i (proxy), +1 control, +2 raft, +3 gossip, +4 rpc, +5 admin")
	dataDir := fs.String("data-dir", "", "where node data and logs go (default: a new temporary directory)")
	keep := fs.Bool("keep-data", false, "keep the data directory on exit")
	grace := fs.Duration("session-grace", 5*time.Minute, "session grace period of every node")
	logLevel := fs.String("log-level", "info", "log level of the nodes (their logs go to <data-dir>/<node>.log)")
	faults := fs.Bool("fault-injection", false, "TEST ONLY: start nodes with --fault-injection")
	if code, stop := parseFlags(fs, args); stop {
		return code
	}
	if *nodes < 1 || *nodes > 9 {
		fmt.Fprintln(stderr, "raftgate dev: --nodes must be 1 to 9")
		return 2
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "raftgate dev: cannot find own executable:", err)
		return 1
	}
	if *dataDir == "" {
		if *dataDir, err = os.MkdirTemp("", "raftgate-dev-"); err != nil {
			fmt.Fprintln(stderr, "raftgate dev:", err)
			return 1
		}
	} else if err := os.MkdirAll(*dataDir, 0o755); err != nil {
		fmt.Fprintln(stderr, "raftgate dev:", err)
		return 1
	}
	if !*keep {
		defer os.RemoveAll(*dataDir)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	var cluster []*devNode
	for i := 0; i < *nodes; i++ {
		n := &devNode{id: fmt.Sprintf("node%d", i+1)}
		n.http, n.control, n.raft, n.gossip, n.rpc, n.admin = devPorts(*base, i)
		n.dataDir = filepath.Join(*dataDir, n.id)
		n.logPath = filepath.Join(*dataDir, n.id+".log")
		cluster = append(cluster, n)
	}
	for _, n := range cluster {
		var join []string
		for _, o := range cluster {
			if o != n {
				join = append(join, o.gossip)
			}
		}
		if err := n.start(self, join, *nodes, *grace, *logLevel, *faults); err != nil {
			fmt.Fprintln(stderr, "raftgate dev:", err)
			stopDev(cluster)
			return 1
		}
	}
	defer stopDev(cluster)

	fmt.Fprintf(stdout, "raftgate dev: starting %d nodes, data and logs in %s\n", *nodes, *dataDir)
	st, err := waitForCluster(ctx, cluster[0].control, *nodes, 60*time.Second)
	if err != nil {
		fmt.Fprintf(stderr, "raftgate dev: cluster did not come up: %v (see the logs in %s)\n", err, *dataDir)
		return 1
	}
	printDevBanner(stdout, cluster, st.Leader)

	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(stdout, "\nraftgate dev: stopping")
			return 0
		case <-time.After(time.Second):
		}
		for _, n := range cluster {
			select {
			case err := <-n.exited:
				fmt.Fprintf(stderr, "raftgate dev: %s exited (%v); see %s\n", n.id, err, n.logPath)
				n.exited = nil
			default:
			}
		}
	}
}

func (n *devNode) start(self string, join []string, expect int, grace time.Duration, level string, faults bool) error {
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log of %s: %w", n.id, err)
	}
	args := []string{"serve",
		"--node-id", n.id, "--data-dir", n.dataDir,
		"--http-addr", n.http, "--control-addr", n.control, "--raft-addr", n.raft,
		"--gossip-addr", n.gossip, "--rpc-addr", n.rpc, "--admin-addr", n.admin,
		"--bootstrap-expect", fmt.Sprint(expect), "--session-grace", grace.String(),
		"--log-level", level,
	}
	if len(join) > 0 {
		args = append(args, "--join", strings.Join(join, ","))
	}
	if faults {
		args = append(args, "--fault-injection")
	}
	n.cmd = exec.Command(self, args...)
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := n.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", n.id, err)
	}
	n.exited = make(chan error, 1)
	go func() {
		n.exited <- n.cmd.Wait()
		logf.Close()
	}()
	return nil
}

// stopDev sends SIGTERM to every node and waits for them, killing any that
// take longer than 15 s.
func stopDev(nodes []*devNode) {
	for _, n := range nodes {
		if n.cmd != nil && n.cmd.Process != nil {
			_ = n.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	deadline := time.After(15 * time.Second)
	for _, n := range nodes {
		if n.exited == nil {
			continue
		}
		select {
		case <-n.exited:
		case <-deadline:
			_ = n.cmd.Process.Kill()
			<-n.exited
		}
		n.exited = nil
	}
}

// devStatus is the part of CLUSTER_STATUS dev needs.
type devStatus struct {
	Leader string `json:"leader"`
	Term   uint64 `json:"term"`
	Nodes  []struct {
		ID           string `json:"id"`
		ControlAddr  string `json:"control_addr"`
		ProxyAddr    string `json:"proxy_addr"`
		RaftState    string `json:"raft_state"`
		AppliedIndex uint64 `json:"applied_index"`
		Alive        bool   `json:"alive"`
	} `json:"nodes"`
}

// clusterStatus asks a node for CLUSTER_STATUS over the control protocol.
func clusterStatus(ctx context.Context, addr string) (*devStatus, error) {
	d := net.Dialer{Timeout: 2 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "CLUSTER_STATUS\n"); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return nil, err
	}
	payload, ok := strings.CutPrefix(strings.TrimSpace(line), "CLUSTER_OK|")
	if !ok {
		return nil, fmt.Errorf("unexpected answer: %s", strings.TrimSpace(line))
	}
	var st devStatus
	if err := json.Unmarshal([]byte(payload), &st); err != nil {
		return nil, fmt.Errorf("decode CLUSTER_STATUS: %w", err)
	}
	return &st, nil
}

// waitForCluster polls until the cluster has a leader and want live nodes.
func waitForCluster(ctx context.Context, addr string, want int, limit time.Duration) (*devStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var last error
	for {
		st, err := clusterStatus(ctx, addr)
		if err == nil {
			alive := 0
			for _, n := range st.Nodes {
				if n.Alive {
					alive++
				}
			}
			if st.Leader != "" && alive >= want {
				return st, nil
			}
			err = fmt.Errorf("leader %q, %d of %d nodes alive", st.Leader, alive, want)
		}
		last = err
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func printDevBanner(w io.Writer, nodes []*devNode, leader string) {
	fmt.Fprintf(w, "\nraftgate dev cluster is up (leader: %s)\n\n", leader)
	fmt.Fprintf(w, "  %-6s  %-17s  %-17s  %-17s  %s\n", "node", "control", "proxy", "admin", "log")
	for _, n := range nodes {
		fmt.Fprintf(w, "  %-6s  %-17s  %-17s  %-17s  %s\n", n.id, n.control, n.http, n.admin, n.logPath)
	}
	last := nodes[len(nodes)-1]
	cport := strings.TrimPrefix(nodes[0].control, "127.0.0.1:")
	lport := strings.TrimPrefix(last.control, "127.0.0.1:")
	fmt.Fprintf(w, `
Try it in bash (any node takes any command; a session works from every node):

  rg() { exec 3<>/dev/tcp/127.0.0.1/$1; printf '%%s\n' "$2" >&3; IFS= read -r l <&3; exec 3<&-; echo "$l"; }
  python3 -m http.server 9000 --bind 127.0.0.1 >/dev/null 2>&1 &     # a backend
  S=$(rg %[1]s 'REGISTER|web|dev|0' | cut -d'|' -f2)
  rg %[2]s "ROUTE_ADD|$S|example.com|/|http://127.0.0.1:9000|0"
  rg %[1]s "CONFIG_APPLY|$S"
  curl -H 'Host: example.com' http://%[3]s/     # the node that answered OK serves it already
  curl -H 'Host: example.com' http://%[4]s/     # every other node within milliseconds
  rg %[2]s CLUSTER_STATUS

The session outlives its connection for the grace period (--session-grace).
Ctrl-C stops the cluster.
`, cport, lport, nodes[0].http, last.http)
}
