package main

import (
	"fmt"
	"io"
)

// runBench is replaced by the benchmark harness (issue 5).
func runBench(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "raftgate bench: not built yet")
	return 2
}
