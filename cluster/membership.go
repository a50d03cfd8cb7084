package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// nodeMeta is what a node gossips about itself (memberlist NodeMeta).
type nodeMeta struct {
	ID      string `json:"id"`
	Raft    string `json:"raft"`
	RPC     string `json:"rpc"`
	Control string `json:"control,omitempty"`
	Proxy   string `json:"proxy,omitempty"`
	Version string `json:"ver"`
	// DataID is made once per data directory, so the leader can tell a
	// node restarted with an empty directory from the same node restarted.
	DataID string `json:"data"`
	// Leaving is set by a node leaving gracefully, just before it leaves
	// the gossip ring: memberlist's leave callback does not say whether a
	// node left or died, so the metadata says it.
	Leaving bool `json:"leaving,omitempty"`
}

// Member is one node as memberlist sees it.
type Member struct {
	ID          string `json:"id"`
	GossipAddr  string `json:"gossip_addr"`
	RaftAddr    string `json:"raft_addr"`
	RPCAddr     string `json:"rpc_addr"`
	ControlAddr string `json:"control_addr"`
	ProxyAddr   string `json:"proxy_addr"`
	Version     string `json:"version"`
	// State is "alive", "suspect", "dead" or "left".
	State string    `json:"state"`
	Alive bool      `json:"alive"`
	Since time.Time `json:"since"`
}

type memberInfo struct {
	meta   nodeMeta
	gossip string
	state  memberlist.NodeStateType
	since  time.Time
}

func stateName(s memberlist.NodeStateType) string {
	switch s {
	case memberlist.StateAlive:
		return "alive"
	case memberlist.StateSuspect:
		return "suspect"
	case memberlist.StateDead:
		return "dead"
	case memberlist.StateLeft:
		return "left"
	}
	return "unknown"
}

// delegate receives memberlist callbacks. They run with memberlist's
// locks held, so they only update the node's own member table and signal.
type delegate struct{ n *Node }

func (d delegate) NodeMeta(limit int) []byte {
	meta := d.n.meta
	meta.Leaving = d.n.leaving.Load()
	b, err := json.Marshal(meta)
	if err != nil || len(b) > limit {
		// Start checks the size, so this cannot happen with a valid config.
		return nil
	}
	return b
}
func (d delegate) NotifyMsg([]byte)                           {}
func (d delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d delegate) LocalState(join bool) []byte                { return nil }
func (d delegate) MergeRemoteState(buf []byte, join bool)     {}

func (d delegate) NotifyJoin(m *memberlist.Node)   { d.n.memberEvent(m, memberlist.StateAlive) }
func (d delegate) NotifyUpdate(m *memberlist.Node) { d.n.memberEvent(m, memberlist.StateAlive) }
func (d delegate) NotifyLeave(m *memberlist.Node) {
	st := m.State
	if st != memberlist.StateLeft {
		st = memberlist.StateDead
	}
	d.n.memberEvent(m, st)
}

func (n *Node) memberEvent(m *memberlist.Node, st memberlist.NodeStateType) {
	var meta nodeMeta
	if err := json.Unmarshal(m.Meta, &meta); err != nil || meta.ID == "" {
		n.log.Warn("gossip member without raftgate metadata", "member", m.Name, "addr", m.Address())
		return
	}
	if st != memberlist.StateAlive && meta.Leaving {
		st = memberlist.StateLeft
	}
	gossip := m.Address()
	n.faults.learn(meta.ID, gossip, meta.Raft, meta.RPC)
	n.mmu.Lock()
	old := n.members[meta.ID]
	changed := old == nil || old.state != st
	info := &memberInfo{meta: meta, gossip: gossip, state: st, since: time.Now()}
	if !changed {
		info.since = old.since
	}
	n.members[meta.ID] = info
	n.mmu.Unlock()

	for _, ch := range []chan struct{}{n.memberCh, n.bootstrapCh} {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	if !changed || meta.ID == n.cfg.NodeID {
		return
	}
	switch st {
	case memberlist.StateAlive:
		n.log.Info("node joined", "node", meta.ID, "gossip_addr", gossip, "raft_addr", meta.Raft)
		n.emit(ClusterEvent{Type: EventNodeJoined, Node: meta.ID})
	default:
		n.log.Info("node left", "node", meta.ID, "state", stateName(st))
		n.emit(ClusterEvent{Type: EventNodeLeft, Node: meta.ID, Reason: stateName(st)})
	}
}

// Members lists every node memberlist has reported, alive or not, by ID.
func (n *Node) Members() []Member {
	n.mmu.Lock()
	defer n.mmu.Unlock()
	out := make([]Member, 0, len(n.members))
	for _, m := range n.members {
		out = append(out, Member{
			ID: m.meta.ID, GossipAddr: m.gossip, RaftAddr: m.meta.Raft, RPCAddr: m.meta.RPC,
			ControlAddr: m.meta.Control, ProxyAddr: m.meta.Proxy, Version: m.meta.Version,
			State: stateName(m.state), Alive: m.state == memberlist.StateAlive, Since: m.since,
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// LiveNodes counts the alive members, this node included.
func (n *Node) LiveNodes() int {
	n.mmu.Lock()
	defer n.mmu.Unlock()
	c := 0
	for _, m := range n.members {
		if m.state == memberlist.StateAlive {
			c++
		}
	}
	return c
}

func (n *Node) member(id string) (memberInfo, bool) {
	n.mmu.Lock()
	defer n.mmu.Unlock()
	m, ok := n.members[id]
	if !ok {
		return memberInfo{}, false
	}
	return *m, true
}

// rpcAddrOf returns the internal RPC address of node id, or "".
func (n *Node) rpcAddrOf(id string) string {
	if id == n.cfg.NodeID {
		return n.meta.RPC
	}
	m, ok := n.member(id)
	if !ok {
		return ""
	}
	return m.meta.RPC
}

// joinLoop joins the configured gossip addresses, retrying with backoff
// until some other node answered, so nodes can start in any order.
func (n *Node) joinLoop() {
	defer n.wg.Done()
	var peers []string
	for _, j := range n.cfg.Join {
		if j != "" && j != n.gossipAddr {
			peers = append(peers, j)
		}
	}
	if len(peers) == 0 {
		return
	}
	wait := 100 * time.Millisecond
	for {
		joined, err := n.ml.Join(peers)
		if joined > 0 && n.ml.NumMembers() > 1 {
			n.log.Info("joined gossip", "contacted", joined, "members", n.ml.NumMembers())
			return
		}
		n.log.Debug("join failed, will retry", "peers", peers, "err", err, "retry_in", wait)
		select {
		case <-n.stop:
			return
		case <-time.After(wait):
		}
		wait = min(wait*2, 5*time.Second)
	}
}

// bootstrapLoop bootstraps the first cluster once BootstrapExpect servers
// see each other. Only the server with the lowest node ID bootstraps, with
// the configuration of every server it sees, and only after every one of
// them said it has no raft state yet: a node restarted with an empty data
// directory next to an existing cluster thus never forks it.
func (n *Node) bootstrapLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.Timing.LeaderInterval)
	defer t.Stop()
	for {
		done, err := n.tryBootstrap()
		if err != nil {
			n.log.Warn("bootstrap attempt failed", "err", err)
		}
		if done {
			return
		}
		select {
		case <-n.stop:
			return
		case <-t.C:
		case <-n.bootstrapCh:
		}
	}
}

func (n *Node) tryBootstrap() (bool, error) {
	if n.hasState() {
		return true, nil
	}
	if id, _ := n.raft.LeaderWithID(); id != "" {
		return true, nil
	}
	var servers []raft.Server
	n.mmu.Lock()
	for _, m := range n.members {
		if m.state == memberlist.StateAlive {
			servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(m.meta.ID), Address: raft.ServerAddress(m.meta.Raft)})
		}
	}
	n.mmu.Unlock()
	if len(servers) < n.cfg.BootstrapExpect {
		return false, nil
	}
	sort.Slice(servers, func(i, j int) bool { return servers[i].ID < servers[j].ID })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, s := range servers {
		if string(s.ID) == n.cfg.NodeID {
			continue
		}
		info, err := n.remoteInfo(ctx, string(s.ID))
		if err != nil {
			return false, fmt.Errorf("ask %s for its raft state: %w", s.ID, err)
		}
		if info.HasState || info.Leader != "" {
			n.log.Info("not bootstrapping: a cluster already exists", "peer", s.ID)
			return true, nil
		}
	}
	if string(servers[0].ID) != n.cfg.NodeID {
		// The lowest ID bootstraps; the rest wait to hear from its leader.
		return false, nil
	}
	if err := n.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
		return false, fmt.Errorf("bootstrap raft cluster: %w", err)
	}
	n.log.Info("bootstrapped cluster", "servers", len(servers))
	return true, nil
}

// hasState reports whether this node's raft has a log or a configuration.
func (n *Node) hasState() bool {
	if n.raft.LastIndex() > 0 {
		return true
	}
	f := n.raft.GetConfiguration()
	return f.Error() == nil && len(f.Configuration().Servers) > 0
}

// reconcile makes the raft configuration follow memberlist. Only the
// leader calls it.
func (n *Node) reconcile() {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		n.log.Warn("reconcile: read raft configuration", "err", err)
		return
	}
	servers := map[string]raft.Server{}
	for _, s := range f.Configuration().Servers {
		servers[string(s.ID)] = s
	}
	now := time.Now()
	n.mmu.Lock()
	members := make(map[string]memberInfo, len(n.members))
	for id, m := range n.members {
		members[id] = *m
	}
	n.mmu.Unlock()
	timeout := n.cfg.HoldTimeout

	for id, m := range members {
		if id == n.cfg.NodeID || m.state != memberlist.StateAlive || m.meta.Leaving {
			continue
		}
		s, ok := servers[id]
		seenData, known := n.dataIDs[id]
		n.dataIDs[id] = m.meta.DataID
		fresh := ok && known && seenData != m.meta.DataID
		if ok && (string(s.Address) != m.meta.Raft || fresh) {
			// Same node ID at another address, or with a new data
			// directory: the old server entry must go before the new one
			// can be added, so its stale log position is forgotten.
			n.log.Info("replacing raft server", "node", id, "old_addr", s.Address, "new_addr", m.meta.Raft, "fresh_data_dir", fresh)
			if err := n.raft.RemoveServer(raft.ServerID(id), 0, timeout).Error(); err != nil {
				n.log.Warn("remove stale raft server", "node", id, "err", err)
				continue
			}
			ok = false
		}
		if !ok || s.Suffrage != raft.Voter {
			if err := n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(m.meta.Raft), 0, timeout).Error(); err != nil {
				n.log.Warn("add raft voter", "node", id, "err", err)
				continue
			}
			n.log.Info("added raft voter", "node", id, "addr", m.meta.Raft)
		}
	}

	for id := range servers {
		if id == n.cfg.NodeID {
			continue
		}
		m, ok := members[id]
		var reason string
		switch {
		case ok && (m.state == memberlist.StateLeft || m.meta.Leaving):
			reason = "left"
		case ok && m.state == memberlist.StateDead && now.Sub(m.since) > n.cfg.DeadNodeReap:
			reason = "dead longer than reap time"
		case !ok:
			// A server memberlist never reported (this leader started
			// after it vanished): count its absence from first notice.
			first, seen := n.unknownSince[id]
			if !seen {
				n.unknownSince[id] = now
			} else if now.Sub(first) > n.cfg.DeadNodeReap {
				reason = "unknown to gossip longer than reap time"
			}
		}
		if ok {
			delete(n.unknownSince, id)
		}
		if reason == "" {
			continue
		}
		if err := n.raft.RemoveServer(raft.ServerID(id), 0, timeout).Error(); err != nil {
			n.log.Warn("remove raft server", "node", id, "reason", reason, "err", err)
			continue
		}
		n.log.Info("removed raft server", "node", id, "reason", reason)
	}
}

// ErrNodeAlive is returned by ForceRemove for a node gossip reports alive.
var ErrNodeAlive = errors.New("node is alive: stop it first, or run 'raftgate leave' on it")

// ErrNotServer is returned by ForceRemove for a node that is not in the
// raft configuration.
var ErrNotServer = errors.New("not a server of this cluster")

// ForceRemove drops a failed node from the raft configuration now instead
// of after DeadNodeReap: what an operator does for a node that is gone for
// good, so that the quorum stops counting it. A node that gossip reports
// alive is refused (the leader would add it back at once), as is this node
// itself. A removed node that comes back joins again like a new one.
func (n *Node) ForceRemove(ctx context.Context, id string) error {
	if id == n.cfg.NodeID {
		return fmt.Errorf("force-remove %s: that is this node; run 'raftgate leave' on it instead", id)
	}
	if m, ok := n.member(id); ok && m.state == memberlist.StateAlive && !m.meta.Leaving {
		return fmt.Errorf("force-remove %s: %w", id, ErrNodeAlive)
	}
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return fmt.Errorf("force-remove %s: read raft configuration: %w", id, err)
	}
	if !slices.ContainsFunc(f.Configuration().Servers, func(s raft.Server) bool { return string(s.ID) == id }) {
		return fmt.Errorf("force-remove %s: %w", id, ErrNotServer)
	}
	err := n.retry(ctx, "force-remove "+id, func(ctx context.Context) error {
		switch leader := n.LeaderID(); leader {
		case "":
			return errNoLeaderYet
		case n.cfg.NodeID:
			return n.removeServer(id)
		default:
			_, err := n.Call(ctx, leader, rpcRemove, []byte(id))
			return err
		}
	})
	if err != nil {
		return err
	}
	n.log.Info("force-removed raft server", "removed_node", id)
	return nil
}

// removeServer asks raft to drop node id; leader only.
func (n *Node) removeServer(id string) error {
	if n.raft.State() != raft.Leader {
		return errNotLeader
	}
	if err := n.raft.RemoveServer(raft.ServerID(id), 0, n.cfg.HoldTimeout).Error(); err != nil {
		return fmt.Errorf("remove raft server %s: %w", id, err)
	}
	return nil
}

// Voters lists the voting servers of the current raft configuration.
func (n *Node) Voters() ([]string, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("read raft configuration: %w", err)
	}
	var out []string
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			out = append(out, string(s.ID))
		}
	}
	sort.Strings(out)
	return out, nil
}
