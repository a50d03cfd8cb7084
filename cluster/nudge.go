package cluster

import (
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/raftgate/raftgate/fsm"
)

// A follower learns that an entry committed only from the next
// AppendEntries the leader sends it. Raft sends one when new entries
// arrive, or after CommitTimeout (randomized up to twice that) when none
// do. A write answered by a follower waits until the follower has applied
// it, and every follower's proxy serves a change only once it learns of
// the commit, so on a quiet log both would wait for the timer. A short
// CommitTimeout would make every idle cluster send hundreds of empty RPCs
// a second.
//
// Instead the leader appends a no-op entry after a write when nothing else
// follows it: the no-op's AppendEntries carries the new commit index to
// every follower. A write a follower forwarded asks at once (the follower
// is waiting). A write made on the leader asks after nudgeDelay, and the
// no-op is skipped if another entry was appended since the request: raft
// sends that entry with the commit index of its time, which already
// covers the write. So a client writing back to back never pays for a
// no-op's fsync before its next write. At most one no-op is in flight;
// under load the no-ops add at most one small entry per commit round.
// Followers hear that the last no-op itself committed only after
// CommitTimeout; linearizable reads do not wait for that (readIndex).

// nudgeDelay is how long a write made on the leader waits for a following
// entry before a no-op carries its commit to the followers.
const nudgeDelay = 2 * time.Millisecond

// commitNotice is the pending request for a no-op.
type commitNotice struct {
	mu   sync.Mutex
	at   time.Time // when the no-op is due; zero: none is asked for
	last uint64    // the log's last index at the latest request
	wake chan struct{}
}

// nudgeFollowers asks for a no-op that tells the followers about every
// entry committed so far, after delay unless another entry is appended
// first. Call it once the write is applied here. It never blocks.
func (n *Node) nudgeFollowers(delay time.Duration) {
	c := &n.notice
	last := n.raft.LastIndex()
	at := time.Now().Add(delay)
	c.mu.Lock()
	c.last = max(c.last, last)
	if c.at.IsZero() || at.Before(c.at) {
		c.at = at
	}
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
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
	c := &n.notice
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-c.wake:
		case <-timer.C:
		}
		c.mu.Lock()
		if c.at.IsZero() {
			c.mu.Unlock()
			continue
		}
		if wait := time.Until(c.at); wait > 0 {
			c.mu.Unlock()
			timer.Reset(wait)
			continue
		}
		last := c.last
		c.at, c.last = time.Time{}, 0
		c.mu.Unlock()
		if n.raft.State() != raft.Leader || n.ml.NumMembers() < 2 || n.raft.LastIndex() > last {
			continue // no followers, or a later entry carries the commit
		}
		if err := n.raft.Apply(data, n.cfg.HoldTimeout).Error(); err != nil && n.ctx.Err() == nil {
			n.log.Debug("commit-notice no-op failed", "err", err)
		}
	}
}
