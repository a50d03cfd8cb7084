package cluster

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// RegisterHandler serves name over the internal RPC, for other layers
// (statistics fan-out, event delivery). Names starting with "cluster." are
// reserved; registering one is refused with an error log.
func (n *Node) RegisterHandler(name string, h func(ctx context.Context, req []byte) ([]byte, error)) {
	if strings.HasPrefix(name, reservedPrefix) || name == "" || len(name) > 255 {
		n.log.Error("refused to register internal RPC handler: reserved or invalid name", "name", name)
		return
	}
	n.rpc.handle(name, h)
}

// Call invokes handler name on node nodeID (this node included) and
// returns its response. ctx bounds the whole exchange.
func (n *Node) Call(ctx context.Context, nodeID, name string, req []byte) ([]byte, error) {
	if nodeID == n.cfg.NodeID {
		h := n.rpc.handler(name)
		if h == nil {
			return nil, &RemoteError{Node: nodeID, Status: statusNoHandler, Msg: "no handler for " + name}
		}
		return h(ctx, req)
	}
	addr := n.rpcAddrOf(nodeID)
	if addr == "" {
		return nil, fmt.Errorf("call %s on %s: node is not known", name, nodeID)
	}
	b, err := n.pool.call(ctx, addr, name, req)
	if err != nil {
		var re *RemoteError
		if errors.As(err, &re) {
			re.Node = nodeID
		}
		return nil, fmt.Errorf("call %s on %s: %w", name, nodeID, err)
	}
	return b, nil
}

// FanOutError reports the nodes that did not answer a FanOut.
type FanOutError struct {
	Asked  int
	Failed map[string]error
}

func (e *FanOutError) Error() string {
	ids := make([]string, 0, len(e.Failed))
	for id := range e.Failed {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	parts := make([]string, 0, len(ids))
	for _, id := range ids {
		parts = append(parts, fmt.Sprintf("%s: %v", id, e.Failed[id]))
	}
	return fmt.Sprintf("%d of %d nodes did not answer: %s", len(e.Failed), e.Asked, strings.Join(parts, "; "))
}

// FanOut calls handler name on every live node, this one included, in
// parallel, bounded by ctx. It returns the answers by node ID; when some
// nodes failed it also returns a *FanOutError saying how many were asked,
// so callers can report "answered N of M" with the partial results.
func (n *Node) FanOut(ctx context.Context, name string, req []byte) (map[string][]byte, error) {
	var ids []string
	n.mmu.Lock()
	for id, m := range n.members {
		if m.state == memberlist.StateAlive {
			ids = append(ids, id)
		}
	}
	n.mmu.Unlock()
	if len(ids) == 0 {
		ids = []string{n.cfg.NodeID}
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	out := make(map[string][]byte, len(ids))
	failed := map[string]error{}
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := n.Call(ctx, id, name, req)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed[id] = err
				return
			}
			out[id] = b
		}()
	}
	wg.Wait()
	if len(failed) > 0 {
		return out, &FanOutError{Asked: len(ids), Failed: failed}
	}
	return out, nil
}

// Status is the cluster as this node sees it (CLUSTER_STATUS).
type Status struct {
	Leader string       `json:"leader"`
	Term   uint64       `json:"term"`
	Nodes  []NodeStatus `json:"nodes"`
}

// NodeStatus is one node of Status. RaftState is "leader", "follower",
// "candidate", "shutdown" or "unknown" (the node did not answer in time).
type NodeStatus struct {
	ID           string `json:"id"`
	ControlAddr  string `json:"control_addr"`
	ProxyAddr    string `json:"proxy_addr"`
	RaftState    string `json:"raft_state"`
	AppliedIndex uint64 `json:"applied_index"`
	Alive        bool   `json:"alive"`
}

// statusDeadline bounds the fan-out of Status so a dead node costs little.
const statusDeadline = 500 * time.Millisecond

// Status reports the leader, the term and every known node (raft servers
// and gossip members) with its applied index, asked over the internal RPC
// with a short deadline.
func (n *Node) Status(ctx context.Context) Status {
	ctx, cancel := context.WithTimeout(ctx, statusDeadline)
	defer cancel()
	st := Status{Leader: n.LeaderID(), Term: n.raft.CurrentTerm()}
	byID := map[string]*NodeStatus{}
	for _, m := range n.Members() {
		byID[m.ID] = &NodeStatus{ID: m.ID, ControlAddr: m.ControlAddr, ProxyAddr: m.ProxyAddr, RaftState: "unknown", Alive: m.Alive}
	}
	if voters, err := n.raftServers(); err == nil {
		for _, id := range voters {
			if byID[id] == nil {
				byID[id] = &NodeStatus{ID: id, RaftState: "unknown"}
			}
		}
	}
	self := byID[n.cfg.NodeID]
	if self == nil {
		self = &NodeStatus{ID: n.cfg.NodeID, ControlAddr: n.cfg.ControlAddr, ProxyAddr: n.cfg.ProxyAddr}
		byID[n.cfg.NodeID] = self
	}
	info := n.localInfo()
	self.Alive, self.RaftState, self.AppliedIndex = true, info.RaftState, info.AppliedIndex

	var wg sync.WaitGroup
	var mu sync.Mutex
	for id, ns := range byID {
		if id == n.cfg.NodeID || !ns.Alive {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			info, err := n.remoteInfo(ctx, id)
			if err != nil {
				return
			}
			mu.Lock()
			ns.RaftState, ns.AppliedIndex = info.RaftState, info.AppliedIndex
			mu.Unlock()
		}()
	}
	wg.Wait()
	for _, ns := range byID {
		st.Nodes = append(st.Nodes, *ns)
	}
	sort.Slice(st.Nodes, func(i, j int) bool { return st.Nodes[i].ID < st.Nodes[j].ID })
	return st
}

// raftServers lists every server ID of the raft configuration.
func (n *Node) raftServers() ([]string, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("read raft configuration: %w", err)
	}
	var out []string
	for _, s := range f.Configuration().Servers {
		out = append(out, string(s.ID))
	}
	return out, nil
}
