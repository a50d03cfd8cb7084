package cluster

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/hashicorp/raft"

	"github.com/raftgate/raftgate/fsm"
)

// applyReply is the leader's answer to a forwarded write.
type applyReply struct {
	Index  uint64     `json:"i"`
	Result fsm.Result `json:"r"`
}

// errNoLeaderYet: no leader is known right now; retry later.
var errNoLeaderYet = errors.New("no leader elected")

// Apply commits cmd to the log and returns its result once this node has
// applied it, so this node's proxy already serves the change.
//
// It stamps Node, At and a random RequestID when they are empty. A
// follower forwards the write to the leader. Attempts are retried with
// jitter while there is no leader, on dial errors and when leadership is
// lost mid-write: the request ID makes the FSM apply a retried write once.
// After HoldTimeout without success it returns an error wrapping
// ErrNoLeader.
func (n *Node) Apply(ctx context.Context, cmd *fsm.Command) (fsm.Result, error) {
	if cmd.Node == "" {
		cmd.Node = n.cfg.NodeID
	}
	if cmd.At == 0 {
		cmd.At = time.Now().UnixNano()
	}
	if cmd.RequestID == "" {
		cmd.RequestID = randomHex(12)
	}
	data, err := cmd.Encode()
	if err != nil {
		return fsm.Result{}, fmt.Errorf("apply: %w", err)
	}
	var reply applyReply
	err = n.retry(ctx, "write", func(ctx context.Context) error {
		var err error
		reply, err = n.applyOnce(ctx, data)
		return err
	})
	if err != nil {
		return fsm.Result{}, err
	}
	// The entry is committed; wait until this node applied it too. A
	// follower that cannot catch up within the hold timeout says so rather
	// than hang.
	wctx, cancel := context.WithTimeout(ctx, n.cfg.HoldTimeout)
	defer cancel()
	if err := n.fsm.WaitApplied(wctx, reply.Index); err != nil {
		return reply.Result, fmt.Errorf("write committed at index %d but not yet applied on node %s: %w", reply.Index, n.cfg.NodeID, err)
	}
	return reply.Result, nil
}

// applyOnce makes one attempt: raft.Apply on the leader, a forward elsewhere.
func (n *Node) applyOnce(ctx context.Context, data []byte) (applyReply, error) {
	if n.raft.State() == raft.Leader {
		return n.applyLocal(ctx, data, nudgeDelay)
	}
	leader := n.LeaderID()
	if leader == "" || leader == n.cfg.NodeID {
		return applyReply{}, errNoLeaderYet
	}
	addr := n.rpcAddrOf(leader)
	if addr == "" {
		return applyReply{}, fmt.Errorf("leader %s: %w (its RPC address is not known yet)", leader, errNoLeaderYet)
	}
	n.forwarded.Add(1)
	body, err := n.pool.call(ctx, addr, rpcApply, data)
	if err != nil {
		return applyReply{}, fmt.Errorf("forward to leader %s: %w", leader, err)
	}
	var r applyReply
	if err := json.Unmarshal(body, &r); err != nil {
		return applyReply{}, fmt.Errorf("forward to leader %s: decode reply: %w", leader, err)
	}
	return r, nil
}

// applyLocal applies data on this node as leader. Once it is applied,
// followers are told of the commit after nudge (nudge.go).
func (n *Node) applyLocal(ctx context.Context, data []byte, nudge time.Duration) (applyReply, error) {
	timeout := n.cfg.HoldTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	if timeout <= 0 {
		return applyReply{}, context.DeadlineExceeded
	}
	f := n.raft.Apply(data, timeout)
	if err := f.Error(); err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrEnqueueTimeout),
			errors.Is(err, raft.ErrLeadershipTransferInProgress):
			// Nothing was appended: any retry is safe.
			return applyReply{}, fmt.Errorf("raft apply: %w: %w", errNotLeader, err)
		case errors.Is(err, raft.ErrRaftShutdown):
			return applyReply{}, fmt.Errorf("raft apply: %w", ErrShutdown)
		default:
			// ErrLeadershipLost and the rest: the entry may still commit
			// under the next leader. Never report it as failed.
			return applyReply{}, fmt.Errorf("raft apply: %w: %w", errUnknownOutcome, err)
		}
	}
	res, _ := f.Response().(fsm.Result)
	n.nudgeFollowers(nudge)
	return applyReply{Index: f.Index(), Result: res}, nil
}

// retry runs op until it succeeds, the node shuts down, ctx ends or the
// hold timeout passes, sleeping a jittered, growing pause between tries.
func (n *Node) retry(ctx context.Context, what string, op func(context.Context) error) error {
	hctx, cancel := context.WithTimeout(ctx, n.cfg.HoldTimeout)
	defer cancel()
	stop := context.AfterFunc(n.ctx, cancel)
	defer stop()
	wait := 10 * time.Millisecond
	var last error
	for {
		err := op(hctx)
		if err == nil {
			return nil
		}
		last = err
		if errors.Is(err, ErrShutdown) || n.ctx.Err() != nil {
			return fmt.Errorf("%s: %w", what, ErrShutdown)
		}
		select {
		case <-hctx.Done():
		case <-time.After(jitter(wait)):
			wait = min(wait*2, 200*time.Millisecond)
			continue
		}
		if n.ctx.Err() != nil {
			return fmt.Errorf("%s: %w", what, ErrShutdown)
		}
		if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("%s: %w (last error: %v)", what, ctx.Err(), last)
		}
		note := ""
		if errors.Is(last, errUnknownOutcome) {
			note = "; the write may still be applied"
		}
		return fmt.Errorf("%w: %s not done within %s hold timeout (last error: %v)%s", ErrNoLeader, what, n.cfg.HoldTimeout, last, note)
	}
}

// jitter returns a duration in [d/2, d].
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// LinearizableRead returns once this node has applied every write that
// was acknowledged before the call: the leader confirms its leadership and
// names its commit index, and this node waits until it applied that far.
// With StaleReads it returns at once.
func (n *Node) LinearizableRead(ctx context.Context) error {
	if n.cfg.StaleReads {
		return nil
	}
	var index uint64
	err := n.retry(ctx, "linearizable read", func(ctx context.Context) error {
		var err error
		index, err = n.readIndexOnce(ctx)
		return err
	})
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, n.cfg.HoldTimeout)
	defer cancel()
	if err := n.fsm.WaitApplied(wctx, index); err != nil {
		return fmt.Errorf("%w: linearizable read: node %s did not reach commit index %d: %w", ErrNoLeader, n.cfg.NodeID, index, err)
	}
	return nil
}

func (n *Node) readIndexOnce(ctx context.Context) (uint64, error) {
	if n.raft.State() == raft.Leader {
		return n.leaderReadIndex(ctx)
	}
	leader := n.LeaderID()
	if leader == "" || leader == n.cfg.NodeID {
		return 0, errNoLeaderYet
	}
	addr := n.rpcAddrOf(leader)
	if addr == "" {
		return 0, fmt.Errorf("leader %s: %w (its RPC address is not known yet)", leader, errNoLeaderYet)
	}
	body, err := n.pool.call(ctx, addr, rpcReadIndex, nil)
	if err != nil {
		return 0, fmt.Errorf("read index from leader %s: %w", leader, err)
	}
	if len(body) != 8 {
		return 0, fmt.Errorf("read index from leader %s: reply of %d bytes", leader, len(body))
	}
	return binary.BigEndian.Uint64(body), nil
}

// leaderReadIndex confirms leadership with a quorum and returns the read
// index (readIndex). A new leader first waits for its barrier, because
// until an entry of its own term commits its commit index may lag the
// previous leader's.
func (n *Node) leaderReadIndex(ctx context.Context) (uint64, error) {
	term := n.raft.CurrentTerm()
	for n.readyTerm.Load() != term {
		if n.raft.State() != raft.Leader || n.raft.CurrentTerm() != term {
			return 0, errNotLeader
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("leader not ready for reads: %w", ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
	if err := n.raft.VerifyLeader().Error(); err != nil {
		return 0, fmt.Errorf("verify leadership: %w: %w", errNotLeader, err)
	}
	if n.raft.CurrentTerm() != term {
		return 0, errNotLeader
	}
	return n.readIndex(n.raft.CommitIndex()), nil
}

// readIndex is the index a reader must have applied to see every state
// change committed up to commit: the last committed entry that is not a
// no-op (nudge.go) or a raft-internal entry. Followers hear that the
// trailing no-ops committed only after CommitTimeout, and need not wait
// for it, since those entries change nothing.
func (n *Node) readIndex(commit uint64) uint64 {
	applied, lastChange := n.fsm.Applied()
	if applied >= commit {
		return min(lastChange, commit)
	}
	// Committed entries this FSM has not applied yet: look at them.
	for i := commit; i > applied; i-- {
		var l raft.Log
		if err := n.logs.GetLog(i, &l); err != nil || l.Type == raft.LogCommand && !fsm.IsNoop(l.Data) {
			return i
		}
	}
	return lastChange
}

// nodeInfo is one node's answer to the info RPC.
type nodeInfo struct {
	ID           string `json:"id"`
	RaftState    string `json:"raft_state"`
	AppliedIndex uint64 `json:"applied_index"`
	Term         uint64 `json:"term"`
	Leader       string `json:"leader"`
	HasState     bool   `json:"has_state"`
}

func (n *Node) localInfo() nodeInfo {
	return nodeInfo{
		ID: n.cfg.NodeID, RaftState: raftStateName(n.raft.State()), AppliedIndex: n.fsm.AppliedIndex(),
		Term: n.raft.CurrentTerm(), Leader: n.LeaderID(), HasState: n.hasState(),
	}
}

func (n *Node) remoteInfo(ctx context.Context, id string) (nodeInfo, error) {
	b, err := n.Call(ctx, id, rpcInfo, nil)
	if err != nil {
		return nodeInfo{}, err
	}
	var info nodeInfo
	if err := json.Unmarshal(b, &info); err != nil {
		return nodeInfo{}, fmt.Errorf("info from %s: %w", id, err)
	}
	return info, nil
}

func raftStateName(s raft.RaftState) string {
	switch s {
	case raft.Leader:
		return "leader"
	case raft.Follower:
		return "follower"
	case raft.Candidate:
		return "candidate"
	case raft.Shutdown:
		return "shutdown"
	}
	return "unknown"
}

func (n *Node) registerInternalHandlers() {
	n.rpc.handle(rpcApply, func(ctx context.Context, req []byte) ([]byte, error) {
		if n.raft.State() != raft.Leader {
			return nil, errNotLeader
		}
		// The follower answers once it has applied the entry: tell it
		// the commit at once.
		r, err := n.applyLocal(ctx, req, 0)
		if err != nil {
			return nil, err
		}
		return json.Marshal(r)
	})
	n.rpc.handle(rpcReadIndex, func(ctx context.Context, _ []byte) ([]byte, error) {
		if n.raft.State() != raft.Leader {
			return nil, errNotLeader
		}
		idx, err := n.leaderReadIndex(ctx)
		if err != nil {
			return nil, err
		}
		return binary.BigEndian.AppendUint64(nil, idx), nil
	})
	n.rpc.handle(rpcInfo, func(ctx context.Context, _ []byte) ([]byte, error) {
		return json.Marshal(n.localInfo())
	})
	n.rpc.handle(rpcRemove, func(ctx context.Context, req []byte) ([]byte, error) {
		return nil, n.removeServer(string(req))
	})
}

// ForwardedWrites counts write attempts this node forwarded to a leader
// (retries included).
func (n *Node) ForwardedWrites() uint64 { return n.forwarded.Load() }

// Term is the raft term this node is in.
func (n *Node) Term() uint64 { return n.raft.CurrentTerm() }

// RaftState is this node's raft role: leader, follower, candidate or
// shutdown.
func (n *Node) RaftState() string { return raftStateName(n.raft.State()) }
