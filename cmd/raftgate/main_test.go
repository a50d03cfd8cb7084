package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

// raftgateBin is the raftgate binary built once for the process-level tests
// (SIGKILL, restarts, many connections), which need real separate processes.
var raftgateBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "raftgate-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "temp dir:", err)
		os.Exit(1)
	}
	raftgateBin = filepath.Join(dir, "raftgate")
	// Built without -race: the processes under test are the product, and
	// the race detector's 5-10x slowdown would distort failover timing.
	out, err := exec.Command("go", "build", "-o", raftgateBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build raftgate: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			code = 1
		}
	}
	os.RemoveAll(dir)
	os.Exit(code)
}
