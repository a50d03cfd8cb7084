package localcluster

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// fakeEnv makes the test binary, re-executed by Node.Start, act as a
// stand-in for `raftgate serve` instead of running the tests: the process
// tests need a child that behaves predictably, not the real binary.
const fakeEnv = "LOCALCLUSTER_FAKE_NODE"

func TestMain(m *testing.M) {
	if mode := os.Getenv(fakeEnv); mode != "" {
		os.Exit(fakeNode(mode))
	}
	goleak.VerifyTestMain(m)
}

// fakeNode stands in for a node: in mode "graceful" it exits 0 on
// SIGTERM; in mode "stubborn" it ignores SIGTERM and SIGQUIT, so only
// SIGKILL ends it; in mode "fail" it exits 7 at once. It prints its
// command line (into the node's log) only once its signal handling is in
// place, so tests wait for that line before signalling.
func fakeNode(mode string) int {
	up := func() { fmt.Println("args:", strings.Join(os.Args[1:], " ")) }
	switch mode {
	case "graceful":
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGTERM)
		up()
		select {
		case <-ch:
			fmt.Println("got SIGTERM")
			return 0
		case <-time.After(time.Minute):
			return 3
		}
	case "stubborn":
		signal.Ignore(syscall.SIGTERM, syscall.SIGQUIT)
		up()
		time.Sleep(time.Minute)
		return 3
	default:
		up()
		return 7
	}
}
