// Package chaos is the harness behind `raftgate chaos`: it runs a local
// cluster of separate `raftgate serve` processes, drives a recorded workload
// through the control protocol and HTTP probes through every proxy, injects
// process- and network-level faults (SIGKILL, SIGSTOP, SIGTERM, partitions
// through the test-only admin endpoint, membership changes, full restarts),
// and checks the history afterwards: linearizability with porcupine, every
// acknowledged write present exactly once, byte-identical FSM snapshots on
// every node, no live session expired and no failed probe on a healthy node.
//
// The package owns the harness only; it talks to the nodes exactly as any
// client or operator would (control port, proxy port, admin address), so
// what it proves is a property of the shipped binary.
package chaos
