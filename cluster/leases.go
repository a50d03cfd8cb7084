package cluster

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"

	"github.com/raftgate/raftgate/fsm"
)

// RecordActivity notes that sessionID was active on this node. Renewals
// are batched: every TouchInterval (at most a quarter of the grace) one
// CmdTouch names every session seen since the last one.
func (n *Node) RecordActivity(sessionID string) {
	if sessionID == "" {
		return
	}
	n.touchMu.Lock()
	n.touches[sessionID] = struct{}{}
	n.touchMu.Unlock()
}

// FlushActivity proposes the pending renewals now (the touch loop's work,
// callable synchronously by tests). Sessions of a failed proposal stay
// pending for the next round.
func (n *Node) FlushActivity(ctx context.Context) error {
	n.touchMu.Lock()
	if len(n.touches) == 0 {
		n.touchMu.Unlock()
		return nil
	}
	ids := make([]string, 0, len(n.touches))
	for id := range n.touches {
		ids = append(ids, id)
	}
	n.touches = map[string]struct{}{}
	n.touchMu.Unlock()
	sort.Strings(ids)
	cmd, err := fsm.NewCommand(fsm.CmdTouch, "", fsm.SessionsPayload{Sessions: ids})
	if err != nil {
		return fmt.Errorf("renew leases: %w", err)
	}
	if _, err := n.Apply(ctx, cmd); err != nil {
		n.touchMu.Lock()
		for _, id := range ids {
			n.touches[id] = struct{}{}
		}
		n.touchMu.Unlock()
		return fmt.Errorf("renew %d leases: %w", len(ids), err)
	}
	return nil
}

func (n *Node) touchLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.Timing.TouchInterval)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
			if err := n.FlushActivity(n.ctx); err != nil && n.ctx.Err() == nil {
				n.log.Warn("lease renewal failed; will retry", "err", err)
			}
		}
	}
}

// detachSelf clears the attachments of this node's earlier life once
// there is a leader: sessions attached through connections of another
// incarnation can no longer be attached here.
func (n *Node) detachSelf() {
	defer n.wg.Done()
	for {
		cmd, err := fsm.NewCommand(fsm.CmdDetachNode, "", fsm.DetachNodePayload{Node: n.cfg.NodeID, KeepIncarnation: n.inc})
		if err != nil {
			n.log.Error("detach earlier incarnation", "err", err)
			return
		}
		_, err = n.Apply(n.ctx, cmd)
		if err == nil {
			n.log.Debug("detached sessions of earlier incarnations")
			return
		}
		if n.ctx.Err() != nil {
			return
		}
		n.log.Debug("detach earlier incarnation: will retry", "err", err)
		select {
		case <-n.stop:
			return
		case <-time.After(jitter(n.cfg.Timing.LeaderInterval)):
		}
	}
}

// errLeasesNotReady: this leader has not yet extended every lease in its
// term, so it must not expire anything.
var errLeasesNotReady = errors.New("leases not yet extended in this term")

// SweepOnce runs one round of the leader's lease work: expire detached
// sessions idle longer than SessionGrace, discard staged changes idle
// longer than StagedIdle, and detach sessions attached on nodes gossip
// reports dead or gone. It fails on a follower and on a new leader that
// has not extended the leases yet.
func (n *Node) SweepOnce(ctx context.Context) error {
	if n.raft.State() != raft.Leader {
		return fmt.Errorf("lease sweep: %w", errNotLeader)
	}
	if n.leaseTerm.Load() != n.raft.CurrentTerm() {
		return fmt.Errorf("lease sweep: %w", errLeasesNotReady)
	}
	now := time.Now().UnixNano()
	var errs []error
	if ids := n.fsm.ExpiredSessions(now, n.cfg.SessionGrace); len(ids) > 0 {
		if err := n.proposeSessions(ctx, fsm.CmdExpire, ids, n.cfg.SessionGrace, now); err != nil {
			errs = append(errs, err)
		} else {
			n.log.Info("expired sessions", "count", len(ids))
		}
	}
	if ids := n.fsm.StaleStaged(now, n.cfg.StagedIdle); len(ids) > 0 {
		if err := n.proposeSessions(ctx, fsm.CmdDiscardStaged, ids, n.cfg.StagedIdle, now); err != nil {
			errs = append(errs, err)
		} else {
			n.log.Info("discarded stale staged changes", "count", len(ids))
		}
	}
	for _, node := range n.deadAttachmentNodes() {
		cmd, err := fsm.NewCommand(fsm.CmdDetachNode, "", fsm.DetachNodePayload{Node: node})
		if err == nil {
			_, err = n.Apply(ctx, cmd)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("detach sessions of dead node %s: %w", node, err))
			continue
		}
		n.log.Info("detached sessions of dead node", "dead_node", node)
	}
	return errors.Join(errs...)
}

func (n *Node) proposeSessions(ctx context.Context, t fsm.CommandType, ids []string, grace time.Duration, now int64) error {
	cmd, err := fsm.NewCommand(t, "", fsm.SessionsPayload{Sessions: ids, Grace: int64(grace)})
	if err != nil {
		return fmt.Errorf("%s: %w", t, err)
	}
	cmd.At = now
	if _, err := n.Apply(ctx, cmd); err != nil {
		return fmt.Errorf("%s of %d sessions: %w", t, len(ids), err)
	}
	return nil
}

// deadAttachmentNodes lists nodes that hold attachments but that gossip
// reports dead or left. Nodes gossip never reported are left alone: right
// after a restart this leader may simply not have heard of them yet.
func (n *Node) deadAttachmentNodes() []string {
	holders := map[string]bool{}
	n.fsm.View(func(s *fsm.State) {
		for _, sess := range s.Sessions {
			if sess.Attachment.Attached() {
				holders[sess.Attachment.Node] = true
			}
		}
	})
	var out []string
	for node := range holders {
		if node == n.cfg.NodeID {
			continue
		}
		m, ok := n.member(node)
		if ok && (m.state == memberlist.StateDead || m.state == memberlist.StateLeft) {
			out = append(out, node)
		}
	}
	sort.Strings(out)
	return out
}

// runLoop starts the leader loop whenever this node becomes leader and
// stops it when leadership goes.
func (n *Node) runLoop() {
	defer n.wg.Done()
	type term struct {
		cancel context.CancelFunc
		done   chan struct{}
	}
	var cur *term
	stopLeader := func() {
		if cur != nil {
			cur.cancel()
			<-cur.done
			cur = nil
		}
	}
	defer stopLeader()
	t := time.NewTicker(n.cfg.Timing.LeaderInterval)
	defer t.Stop()
	for {
		leader := n.IsLeader()
		if cur != nil && (!leader || !chanOpen(cur.done)) {
			stopLeader()
		}
		if leader && cur == nil {
			ctx, cancel := context.WithCancel(n.ctx)
			cur = &term{cancel: cancel, done: make(chan struct{})}
			go func(done chan struct{}) {
				defer close(done)
				n.leaderLoop(ctx)
			}(cur.done)
		}
		select {
		case <-n.stop:
			return
		case <-n.raft.LeaderCh():
		case <-t.C:
		}
	}
}

func chanOpen(c chan struct{}) bool {
	select {
	case <-c:
		return false
	default:
		return true
	}
}

// leaderLoop is the leader's work for one term: a barrier so the FSM holds
// every committed entry, then CmdExtendLeases before any expiry (a session
// must not expire because the old leader died), then reconciliation and
// lease sweeps until leadership ends.
func (n *Node) leaderLoop(ctx context.Context) {
	term := n.raft.CurrentTerm()
	n.log.Info("leading", "term", term)
	for {
		err := n.raft.Barrier(n.cfg.HoldTimeout).Error()
		if err == nil {
			break
		}
		if ctx.Err() != nil || n.raft.State() != raft.Leader || n.raft.CurrentTerm() != term {
			return
		}
		n.log.Warn("leader barrier failed; retrying", "err", err)
	}
	n.readyTerm.Store(term)
	for {
		cmd, err := fsm.NewCommand(fsm.CmdExtendLeases, "", nil)
		if err == nil {
			_, err = n.Apply(ctx, cmd)
		}
		if err == nil {
			break
		}
		if ctx.Err() != nil || n.raft.CurrentTerm() != term {
			return
		}
		n.log.Warn("extend leases failed; retrying", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(jitter(50 * time.Millisecond)):
		}
	}
	n.leaseTerm.Store(term)
	n.log.Info("leases extended", "term", term)

	t := time.NewTicker(n.cfg.Timing.LeaderInterval)
	defer t.Stop()
	for {
		if n.raft.State() != raft.Leader || n.raft.CurrentTerm() != term {
			return
		}
		n.leaderMu.Lock()
		n.reconcile()
		n.leaderMu.Unlock()
		if err := n.SweepOnce(ctx); err != nil && ctx.Err() == nil {
			n.log.Warn("lease sweep failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.memberCh:
		}
	}
}
