// Package localcluster owns running a cluster of `raftgate serve` child
// processes on loopback: the port layout (node i: proxy base+10i, control
// +1, raft +2, gossip +3, rpc +4, admin +5), each node's data directory and
// log file, the serve command line (--join and --bootstrap-expect from the
// cluster), the process lifecycle (start, signal, kill, graceful stop with a
// goroutine dump when a stop hangs), and the few calls a harness makes to a
// node the way an operator would: CLUSTER_STATUS on the control port and
// /v1/fsm, /v1/faults, /v1/leave and /readyz on the admin address.
//
// It is shared by `raftgate dev`, the chaos harness and the benchmarks, so
// that all three start nodes the same way. It knows nothing about what they
// do with the cluster afterwards.
package localcluster
