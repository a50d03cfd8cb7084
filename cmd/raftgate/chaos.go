package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/raftgate/raftgate/cmd/raftgate/chaos"
)

func runChaos(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("chaos", `Starts a local cluster of separate 'raftgate serve' processes (with
--fault-injection, a test-only flag), drives a recorded workload through the
control protocol (each client its own session, on random nodes: routes,
applies, removals, reads, reconnects) and probes every proxy against a loopback
backend, while it injects faults: SIGKILL and restart, SIGSTOP of the leader,
partitions, rolling restarts, a node joining and leaving, a full restart.
Then it checks the history: linearizability (porcupine; an HTML visualization
is written to the data directory on failure), every acknowledged write present
exactly once, identical FSM snapshots on every node, no live session expired,
no failed probe on a healthy node. Exits 1 on any violation.

Scenarios: leader-kill, follower-kill, pause, partition-leader,
partition-halves, rolling-restart, membership, full-restart, or all
(a comma list; repeats allowed).`, stderr)
	nodes := fs.Int("nodes", 3, "cluster size: 3 or 5")
	scenarios := fs.String("scenario", "all", "comma list of scenarios, or all")
	duration := fs.Duration("duration", 30*time.Second, "workload time of one round; its faults are spread over it")
	rounds := fs.Int("rounds", 1, "repeat the schedule with fresh sessions and seeds seed, seed+1, ...; each round is checked on its own")
	seed := fs.Int64("seed", 1, "seed of the workload and the fault choices")
	clients := fs.Int("clients", 8, "workload sessions, each driven by two connections")
	idle := fs.Int("idle-sessions", 0, "extra sessions held attached on long-lived connections that RECONNECT elsewhere when their node dies")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	binary := fs.String("binary", "", "raftgate binary for the nodes (default: this executable)")
	dataDir := fs.String("data-dir", "", "node data, logs and visualizations (default: a new temporary directory)")
	keep := fs.Bool("keep-data", false, "keep the data directory after a passing run (a failing run always keeps it)")
	base := fs.Int("base-port", 0, "first port, laid out as in 'raftgate dev' (node i: base+10i ... +5); 0 picks a free range")
	restartDelay := fs.Duration("restart-delay", time.Second, "how long a killed node stays down")
	var serveArgs listFlag
	fs.Var(&serveArgs, "serve-flag", "extra flag for every node's 'raftgate serve' (repeatable), e.g. --serve-flag=--stale-reads to see the checker catch stale reads")
	verbose := fs.Bool("v", false, "log progress to stderr")
	if code, stop := parseFlags(fs, args); stop {
		return code
	}
	sc, err := chaos.ParseScenarios(*scenarios)
	if err != nil {
		fmt.Fprintln(stderr, "raftgate chaos:", err)
		return 2
	}
	if *nodes != 3 && *nodes != 5 {
		fmt.Fprintln(stderr, "raftgate chaos: --nodes must be 3 or 5")
		return 2
	}
	if *binary == "" {
		if *binary, err = os.Executable(); err != nil {
			fmt.Fprintln(stderr, "raftgate chaos: cannot find own executable:", err)
			return 1
		}
	}
	log := slog.New(slog.DiscardHandler)
	if *verbose {
		log = slog.New(slog.NewTextHandler(stderr, nil))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := chaos.Run(ctx, chaos.Config{
		Binary: *binary, Nodes: *nodes, Scenarios: sc, Duration: *duration, Rounds: *rounds,
		Seed: *seed, Clients: *clients, IdleSessions: *idle, DataDir: *dataDir, KeepData: *keep,
		BasePort: *base, RestartDelay: *restartDelay, ServeArgs: serveArgs, Logger: log,
	})
	if rep != nil {
		if *asJSON {
			_ = rep.WriteJSON(stdout)
		} else {
			rep.WriteText(stdout)
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "raftgate chaos:", err)
		return 1
	}
	if !rep.OK() {
		return 1
	}
	return 0
}
