package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/raftgate/raftgate/cmd/raftgate/localcluster"
)

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

	cluster := localcluster.New(*dataDir, *base, *nodes, self)
	cluster.Extra = []string{"--session-grace", grace.String(), "--log-level", *logLevel}
	if *faults {
		cluster.Extra = append(cluster.Extra, "--fault-injection")
	}
	defer func() { _ = cluster.StopAll(devStopLimit) }()
	if err := cluster.StartAll(); err != nil {
		fmt.Fprintln(stderr, "raftgate dev:", err)
		return 1
	}

	fmt.Fprintf(stdout, "raftgate dev: starting %d nodes, data and logs in %s\n", *nodes, *dataDir)
	leader, err := cluster.WaitLeader(ctx, *nodes, 60*time.Second)
	if err != nil {
		fmt.Fprintf(stderr, "raftgate dev: cluster did not come up: %v (see the logs in %s)\n", err, *dataDir)
		return 1
	}
	printDevBanner(stdout, cluster.Nodes, cluster.Nodes[leader].ID)

	// reported marks nodes whose exit was already told, so each is told once.
	reported := make([]bool, len(cluster.Nodes))
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(stdout, "\nraftgate dev: stopping")
			return 0
		case <-time.After(time.Second):
		}
		for i, n := range cluster.Nodes {
			if reported[i] {
				continue
			}
			select {
			case <-n.Done():
				fmt.Fprintf(stderr, "raftgate dev: %s exited (%v); see %s\n", n.ID, n.ExitErr(), n.LogPath)
				reported[i] = true
			default:
			}
		}
	}
}

// devStopLimit is how long dev gives each node to stop gracefully
// before it asks for a goroutine dump and kills it.
const devStopLimit = 15 * time.Second

func printDevBanner(w io.Writer, nodes []*localcluster.Node, leader string) {
	fmt.Fprintf(w, "\nraftgate dev cluster is up (leader: %s)\n\n", leader)
	fmt.Fprintf(w, "  %-6s  %-17s  %-17s  %-17s  %s\n", "node", "control", "proxy", "admin", "log")
	for _, n := range nodes {
		fmt.Fprintf(w, "  %-6s  %-17s  %-17s  %-17s  %s\n", n.ID, n.Control, n.Proxy, n.Admin, n.LogPath)
	}
	last := nodes[len(nodes)-1]
	cport := strings.TrimPrefix(nodes[0].Control, "127.0.0.1:")
	lport := strings.TrimPrefix(last.Control, "127.0.0.1:")
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
`, cport, lport, nodes[0].Proxy, last.Proxy)
}
