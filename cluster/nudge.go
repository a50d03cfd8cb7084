package cluster

import (
	"fmt"

	"github.com/hashicorp/raft"

	"github.com/raftgate/raftgate/fsm"
)

// A follower learns that an entry committed only from the next
// AppendEntries the leader sends it. Raft sends one when new entries
// arrive, or after CommitTimeout (randomized up to twice that) when none
// do, so a write answered by a follower, which waits until the follower
// has applied it, would wait 5-10 ms for nothing whenever the log is
// quiet. Lowering CommitTimeout instead would make every idle cluster
// send hundreds of empty RPCs a second.
//
// So after the leader applies a write that a follower forwarded it
// appends a no-op entry: its AppendEntries carries the new commit index to
// every follower at once. Writes made on the leader do not ask for one:
// the no-op's fsync would delay the leader's next write, and the only
// thing waiting on followers then is their proxies, which CommitTimeout
// bounds well within the propagation target. At most one no-op is in flight; requests that arrive meanwhile are
// covered by one more, so under load (when entries flow anyway) the no-ops
// add at most one small entry per commit round.

// nudgeFollowers asks for a no-op entry that tells followers the current
// commit index. It never blocks.
func (n *Node) nudgeFollowers() {
	select {
	case n.nudgeCh <- struct{}{}:
	default:
	}
}

// nudgeLoop appends the no-op entries nudgeFollowers asks for, while this
// node leads a cluster of more than one voter.
func (n *Node) nudgeLoop() {
	defer n.wg.Done()
	noop, err := fsm.NewCommand(fsm.CmdNoop, "", nil)
	if err != nil {
		panic(fmt.Sprintf("cluster: encode no-op: %v", err))
	}
	noop.Node = n.cfg.NodeID
	data, err := noop.Encode()
	if err != nil {
		panic(fmt.Sprintf("cluster: encode no-op: %v", err))
	}
	for {
		select {
		case <-n.stop:
			return
		case <-n.nudgeCh:
		}
		if n.raft.State() != raft.Leader || n.ml.NumMembers() < 2 {
			continue
		}
		if err := n.raft.Apply(data, n.cfg.HoldTimeout).Error(); err != nil && n.ctx.Err() == nil {
			n.log.Debug("commit-index no-op failed", "err", err)
		}
	}
}
