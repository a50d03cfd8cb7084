package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/raftgate/raftgate/cluster"
	"github.com/raftgate/raftgate/cmd/raftgate/app"
)

// listFlag is a flag that takes a comma-separated list and may repeat.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, part := range strings.Split(v, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*l = append(*l, part)
		}
	}
	return nil
}

// newFlagSet returns a flag set whose --help starts with a summary.
func newFlagSet(name, summary string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: raftgate %s [flags]\n\n%s\n\nFlags:\n", name, summary)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args, which take no arguments besides flags; it
// returns an exit code when the caller should stop (0 after --help, 2 on a
// bad flag or an argument).
func parseFlags(fs *flag.FlagSet, args []string) (int, bool) {
	_, code, stop := parseFlagsAndArgs(fs, args, 0)
	return code, stop
}

// parseFlagsAndArgs is parseFlags for commands that take exactly want
// arguments, before, between or after the flags, and returns them.
func parseFlagsAndArgs(fs *flag.FlagSet, args []string, want int) ([]string, int, bool) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, 0, true
			}
			return nil, 2, true
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) != want {
		if want == 0 {
			fmt.Fprintf(fs.Output(), "unexpected arguments: %s\n", strings.Join(pos, " "))
		} else {
			fmt.Fprintf(fs.Output(), "want %d argument(s), got %d %q; see --help\n", want, len(pos), pos)
		}
		return nil, 2, true
	}
	return pos, 0, false
}

func newLogger(level string, w io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("invalid --log-level %q: use debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

func runServe(args []string, stdout, stderr io.Writer) int {
	host, _ := os.Hostname()
	fs := newFlagSet("serve", `Runs one raftgate node: the control protocol (PROTOCOL.md), the reverse proxy
serving the replicated routing table, raft and gossip. Start the first node of a
new cluster with --bootstrap-expect N on N nodes that --join each other; a
single node needs --bootstrap-expect 1 (the default).`, stderr)
	var join listFlag
	var trusted listFlag
	nodeID := fs.String("node-id", host, "unique, stable ID of this node")
	dataDir := fs.String("data-dir", "", "directory for raft log, stable store and snapshots (default ./raftgate-data/<node-id>)")
	controlAddr := fs.String("control-addr", ":81", "address of the control protocol listener")
	httpAddr := fs.String("http-addr", ":80", "address of the reverse proxy")
	raftAddr := fs.String("raft-addr", ":8300", "address for raft traffic between nodes")
	gossipAddr := fs.String("gossip-addr", ":8301", "address for memberlist gossip (TCP and UDP)")
	rpcAddr := fs.String("rpc-addr", ":8302", "address for the internal RPC (write forwarding, fan-out reads)")
	adminAddr := fs.String("admin-addr", "127.0.0.1:8500", "address for /metrics, /healthz, /readyz and operator endpoints; empty disables")
	advertise := fs.String("advertise-host", "", "host or IP other nodes use to reach this one (default: derived from the bind addresses)")
	fs.Var(&join, "join", "gossip address of a known node; repeat or comma-separate for several")
	bootstrapExpect := fs.Int("bootstrap-expect", 1, "servers that must see each other before a new cluster bootstraps (0: only join); with --join and no --bootstrap-expect the node only joins, so a lone new node never forks a cluster of its own")
	grace := fs.Duration("session-grace", 5*time.Minute, "how long a detached, idle session lives before it expires")
	reap := fs.Duration("dead-node-reap", 72*time.Hour, "remove nodes dead for longer than this from the raft configuration")
	hold := fs.Duration("hold-timeout", 5*time.Second, "how long a write waits for a leader before it fails with 'no leader'")
	stale := fs.Bool("stale-reads", false, "serve reads from local state without asking the leader (faster, may be stale)")
	leaveOnTerm := fs.Bool("leave-on-terminate", false, "leave the cluster (shrink the voter set) on SIGTERM/SIGINT")
	fs.Var(&trusted, "trusted-proxies", "CIDRs whose X-Forwarded-For is believed for client IPs (comma-separated)")
	rlScope := fs.String("ratelimit-scope", "node", "rate limits per 'node', or per 'cluster' (each node takes its share of the live nodes)")
	pprofOn := fs.Bool("pprof", false, "serve Go profiles under /debug/pprof/ on the admin address (keep the admin address private)")
	faults := fs.Bool("fault-injection", false, "TEST ONLY: accept partition requests on the admin address (raftgate chaos)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if code, stop := parseFlags(fs, args); stop {
		return code
	}
	explicit := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })
	if len(join) > 0 && !explicit["bootstrap-expect"] {
		*bootstrapExpect = 0
	}
	log, err := newLogger(*logLevel, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "raftgate serve:", err)
		return 2
	}
	if *rlScope != "node" && *rlScope != "cluster" {
		fmt.Fprintf(stderr, "raftgate serve: invalid --ratelimit-scope %q: use node or cluster\n", *rlScope)
		return 2
	}
	var prefixes []netip.Prefix
	for _, t := range trusted {
		p, err := netip.ParsePrefix(t)
		if err != nil {
			fmt.Fprintf(stderr, "raftgate serve: invalid --trusted-proxies entry %q: %v\n", t, err)
			return 2
		}
		prefixes = append(prefixes, p)
	}
	if *dataDir == "" {
		*dataDir = filepath.Join("raftgate-data", *nodeID)
	}
	cfg := app.Config{
		NodeID: *nodeID, DataDir: *dataDir,
		ControlAddr: *controlAddr, HTTPAddr: *httpAddr, RaftAddr: *raftAddr, GossipAddr: *gossipAddr,
		RPCAddr: *rpcAddr, AdminAddr: *adminAddr, AdvertiseHost: *advertise,
		Join: join, BootstrapExpect: *bootstrapExpect,
		SessionGrace: *grace, DeadNodeReap: *reap, HoldTimeout: *hold,
		StaleReads: *stale, LeaveOnTerminate: *leaveOnTerm,
		TrustedProxies: prefixes, RateLimitScope: *rlScope, FaultInjection: *faults, Pprof: *pprofOn,
		Timing: cluster.DefaultTiming(), Logger: log,
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	node, err := app.Start(ctx, cfg)
	if err != nil {
		log.Error("node failed to start", "node", *nodeID, "err", err)
		fmt.Fprintln(stderr, "raftgate serve:", err)
		return 1
	}
	fmt.Fprintf(stdout, "raftgate node %s: control %s, proxy %s, admin %s\n", *nodeID, node.ControlAddr(), node.HTTPAddr(), node.AdminAddr())
	<-ctx.Done()
	stop()
	log.Info("stopping", "node", *nodeID)
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := node.Shutdown(sctx); err != nil {
		log.Error("unclean shutdown", "node", *nodeID, "err", err)
		return 1
	}
	return 0
}
