// Package bench owns `raftgate bench`: the measurements that hold raftgate
// to the targets of docs/BENCHMARKS.md, run on the user's own machine.
//
// Each sub-benchmark (proxy, control, failover, propagation, scale) starts
// what it measures as real processes or real in-process parts, measures a
// physical or peer baseline in the same run, and returns a Report: a table
// printed as text, and optionally written as JSON and as a hand-drawn SVG
// bar chart. Reports also say which targets of issue 5 were met.
//
// Process-level benchmarks re-execute the raftgate binary: `raftgate serve`
// for nodes and the hidden `raftgate bench backend` for the HTTP backend, so
// the harness, the backend and the proxy under test are separate processes
// and the kernel, not the Go scheduler of one process, shares the CPUs.
package bench
