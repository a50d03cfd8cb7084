// Command raftgate runs a node of the raftgate service registry and
// reverse proxy, a local development cluster, and operator tools.
package main

import (
	"fmt"
	"io"
	"os"
)

const usage = `raftgate: a highly available service registry and reverse proxy.

Usage:
  raftgate <command> [flags]

Commands:
  serve        run one node (control protocol, reverse proxy, raft, gossip)
  dev          run a local cluster of nodes on loopback with temporary data
  status       print the cluster's members, leader, term and applied indexes
  leave        make a running node leave the cluster gracefully
  force-leave  remove a failed node from the voter set now (not after --dead-node-reap)
  chaos        run a local cluster under faults and check the history (linearizability, no loss)
  bench        measure the proxy, the control plane, failover, propagation and scale
  version      print the version

Run 'raftgate <command> --help' for the flags of a command.
`

// version is the release string; set at build time with -ldflags.
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return runServe(rest, stdout, stderr)
	case "dev":
		return runDev(rest, stdout, stderr)
	case "status":
		return runStatus(rest, stdout, stderr)
	case "leave":
		return runLeave(rest, stdout, stderr)
	case "force-leave":
		return runForceLeave(rest, stdout, stderr)
	case "chaos":
		return runChaos(rest, stdout, stderr)
	case "bench":
		return runBench(rest, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "raftgate", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "raftgate: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
}
