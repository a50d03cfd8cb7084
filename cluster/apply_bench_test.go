package cluster

import (
	"context"
	"fmt"
	"testing"

	"github.com/raftgate/raftgate/fsm"
)

// BenchmarkApplyOnLeader prices one write on the leader of an in-process
// cluster (real raft over loopback TCP, real bolt files, the default LAN
// timing): raft's floor under the control plane, without the protocol.
// hashicorp/raft fsyncs the leader's log before it replicates, so with 3
// nodes a write costs at least two fsyncs one after the other.
func BenchmarkApplyOnLeader(b *testing.B) {
	for _, size := range []int{1, 3} {
		b.Run(fmt.Sprintf("nodes=%d", size), func(b *testing.B) {
			nodes := startCluster(b, size, func(c *Config) { c.Timing = DefaultTiming() })
			leader := waitForLeader(b, nodes...)
			noop, err := fsm.NewCommand(fsm.CmdNoop, "", nil)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			for b.Loop() {
				cmd := *noop
				if _, err := leader.Apply(ctx, &cmd); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
