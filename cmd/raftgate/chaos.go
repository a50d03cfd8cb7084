package main

import (
	"fmt"
	"io"
)

// runChaos is replaced by the chaos harness (issue 5).
func runChaos(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "raftgate chaos: not built yet")
	return 2
}
