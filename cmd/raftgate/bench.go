package main

import (
	"io"
	"os"

	"github.com/raftgate/raftgate/cmd/raftgate/bench"
)

// runBench is `raftgate bench`; the harness lives in package bench, and
// child processes (nodes, the HTTP backend) re-execute this binary.
func runBench(args []string, stdout, stderr io.Writer) int {
	self, err := os.Executable()
	if err != nil {
		self = os.Args[0]
	}
	return bench.Main(args, self, stdout, stderr)
}
