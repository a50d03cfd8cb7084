package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/raftgate/raftgate/fsm"
)

// Node is one member of a raftgate cluster.
type Node struct {
	cfg        Config
	log        *slog.Logger
	fsm        *fsm.FSM
	faults     *FaultInjector
	inc        string
	meta       nodeMeta
	gossipAddr string

	store    *raftboltdb.BoltStore
	logs     *raft.LogCache // raft's log store: store behind a cache of recent entries
	trans    *raft.NetworkTransport
	raft     *raft.Raft
	observer *raft.Observer
	ml       *memberlist.Memberlist
	rpc      *rpcServer
	pool     *rpcPool

	mmu         sync.Mutex
	members     map[string]*memberInfo
	memberCh    chan struct{} // wakes the leader loop
	bootstrapCh chan struct{} // wakes the bootstrap loop

	// State of the leader's reconciliation, guarded by leaderMu.
	leaderMu     sync.Mutex
	dataIDs      map[string]string
	unknownSince map[string]time.Time

	// readyTerm is the term in which this leader's barrier completed (its
	// commit index is current); leaseTerm the term in which it extended
	// every lease. Reads and expiry wait for them.
	readyTerm atomic.Uint64
	leaseTerm atomic.Uint64

	evmu   sync.Mutex
	evFns  []func(ClusterEvent)
	events chan ClusterEvent

	touchMu sync.Mutex
	touches map[string]struct{}

	notice commitNotice // nudgeLoop's pending no-op; see nudge.go

	ctx          context.Context // cancelled when Shutdown begins
	cancel       context.CancelFunc
	stop         <-chan struct{}
	wg           sync.WaitGroup
	shutdownOnce sync.Once
	shutdownErr  error
	left         atomic.Bool
	forwarded    atomic.Uint64 // writes forwarded to the leader, retries included
	leaving      atomic.Bool   // gossiped in the metadata during Leave
}

// Event types of ClusterEvent.
const (
	EventLeaderChanged = "leader_changed"
	EventNodeJoined    = "node_joined"
	EventNodeLeft      = "node_left"
)

// ClusterEvent is a membership or leadership change seen by this node.
type ClusterEvent struct {
	Type   string    `json:"type"`
	Node   string    `json:"node,omitempty"`
	Leader string    `json:"leader,omitempty"`
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
}

// Internal RPC endpoints; names with this prefix are reserved.
const (
	reservedPrefix = "cluster."
	rpcApply       = "cluster.apply"
	rpcReadIndex   = "cluster.read_index"
	rpcInfo        = "cluster.info"
	rpcRemove      = "cluster.remove"
)

// Start opens the data directory, starts raft, memberlist and the internal
// RPC listener, and joins or bootstraps the cluster in the background.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	n := &Node{
		cfg: cfg, log: cfg.Logger.With("node", cfg.NodeID), fsm: cfg.FSM, faults: cfg.Faults,
		inc:     randomHex(8),
		members: map[string]*memberInfo{}, memberCh: make(chan struct{}, 1), bootstrapCh: make(chan struct{}, 1),
		notice:  commitNotice{wake: make(chan struct{}, 1)},
		dataIDs: map[string]string{}, unknownSince: map[string]time.Time{},
		events: make(chan ClusterEvent, 256), touches: map[string]struct{}{},
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.stop = n.ctx.Done()
	var closers []func()
	fail := func(err error) (*Node, error) {
		n.cancel()
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return fail(fmt.Errorf("start node %s: %w", cfg.NodeID, err))
	}

	dataID, err := prepareDataDir(cfg.DataDir, cfg.NodeID)
	if err != nil {
		return fail(err)
	}
	dbPath := filepath.Join(cfg.DataDir, "raft.db")
	n.store, err = raftboltdb.New(raftboltdb.Options{Path: dbPath, BoltOptions: &bbolt.Options{Timeout: time.Second}})
	if err != nil {
		return fail(fmt.Errorf("open raft log %s (corrupt, or in use by another process?): %w", dbPath, err))
	}
	closers = append(closers, func() { n.store.Close() })
	hlog := newHCLogger(n.log, "raft")
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, hlog)
	if err != nil {
		return fail(fmt.Errorf("open snapshot store in %s: %w", cfg.DataDir, err))
	}
	existing, err := raft.HasExistingState(n.store, n.store, snaps)
	if err != nil {
		return fail(fmt.Errorf("read raft state in %s (corrupt data dir?): %w", cfg.DataDir, err))
	}

	rl, raftAdv, err := listen(cfg.RaftAddr, cfg.AdvertiseHost)
	if err != nil {
		return fail(fmt.Errorf("raft: %w", err))
	}
	raftTCP, err := net.ResolveTCPAddr("tcp", raftAdv)
	if err != nil {
		rl.Close()
		return fail(fmt.Errorf("raft advertise address %s: %w", raftAdv, err))
	}
	stream := &raftStream{peerListener: newPeerListener(rl, n.faults, raftTCP), self: cfg.NodeID}
	n.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: stream, MaxPool: 3, Timeout: 10 * time.Second, Logger: hlog,
		// One AppendEntries in flight per follower: no pipelining. In
		// hashicorp/raft 1.7 a follower's Success=false (a term change, a
		// log mismatch) can leave the pipeline's sender parked forever
		// (hashicorp/raft#612): that follower gets no more entries and the
		// leader's Shutdown never returns (seen in chaos runs as a graceful
		// stop hanging, with the replicate goroutine in
		// netPipeline.AppendEntries). Raft batches entries per request, and
		// its maintainers measured that pipelining buys little with batching.
		MaxRPCsInFlight: 1,
	})
	closers = append(closers, func() { n.trans.Close() })

	pl, rpcAdv, err := listen(cfg.RPCAddr, cfg.AdvertiseHost)
	if err != nil {
		return fail(fmt.Errorf("internal rpc: %w", err))
	}
	n.rpc = newRPCServer(newPeerListener(pl, n.faults, pl.Addr()), n.log)
	closers = append(closers, n.rpc.close)
	n.pool = newRPCPool(cfg.NodeID, n.faults, cfg.Timing.DialTimeout)
	closers = append(closers, n.pool.close)

	n.meta = nodeMeta{
		ID: cfg.NodeID, Raft: raftAdv, RPC: rpcAdv, Control: cfg.ControlAddr, Proxy: cfg.ProxyAddr,
		Version: Version, DataID: dataID,
	}
	if b, _ := json.Marshal(n.meta); len(b) > memberlist.MetaMaxSize {
		return fail(fmt.Errorf("node metadata is %d bytes, memberlist allows %d: shorten node ID or addresses", len(b), memberlist.MetaMaxSize))
	}

	t := cfg.Timing
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.HeartbeatTimeout = t.HeartbeatTimeout
	rc.ElectionTimeout = t.ElectionTimeout
	rc.LeaderLeaseTimeout = t.LeaderLeaseTimeout
	rc.CommitTimeout = t.CommitTimeout
	rc.SnapshotThreshold = t.SnapshotThreshold
	rc.SnapshotInterval = t.SnapshotInterval
	rc.TrailingLogs = t.TrailingLogs
	rc.Logger = hlog
	// A removed node stays up as a follower so it can be added again, and
	// so a node rejoining with an empty data directory is not stopped by
	// the removal of its previous life.
	rc.ShutdownOnRemove = false
	rc.BatchApplyCh = true
	if err := raft.ValidateConfig(rc); err != nil {
		return fail(fmt.Errorf("raft timing: %w", err))
	}
	// The leader sends each new entry to every follower right after
	// storing it; the cache serves those reads from memory instead of a
	// bolt transaction per entry and follower.
	n.logs, err = raft.NewLogCache(512, n.store)
	if err != nil {
		return fail(fmt.Errorf("raft log cache: %w", err))
	}
	n.raft, err = raft.NewRaft(rc, n.fsm, n.logs, n.store, snaps, n.trans)
	if err != nil {
		return fail(fmt.Errorf("start raft from %s (corrupt data dir?): %w", cfg.DataDir, err))
	}
	closers = append(closers, func() { n.raft.Shutdown().Error() })
	n.publishLocalLog()

	n.registerInternalHandlers()
	n.rpc.start()

	if err := n.startMemberlist(); err != nil {
		return fail(err)
	}
	closers = append(closers, func() { n.ml.Shutdown() })

	if cfg.BootstrapExpect == 1 && !existing {
		err := n.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{
			{Suffrage: raft.Voter, ID: raft.ServerID(cfg.NodeID), Address: raft.ServerAddress(raftAdv)},
		}}).Error()
		if err != nil {
			return fail(fmt.Errorf("bootstrap single-node cluster: %w", err))
		}
		n.log.Info("bootstrapped single-node cluster")
	}

	obsCh := make(chan raft.Observation, 16)
	n.observer = raft.NewObserver(obsCh, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	n.raft.RegisterObserver(n.observer)

	n.wg.Add(7)
	go n.nudgeLoop()
	go n.dispatchEvents()
	go n.watchLeader(obsCh)
	go n.joinLoop()
	go n.runLoop()
	go n.touchLoop()
	go n.detachSelf()
	if cfg.BootstrapExpect > 1 && !existing {
		n.wg.Add(1)
		go n.bootstrapLoop()
	}
	n.log.Info("node started", "raft_addr", raftAdv, "gossip_addr", n.gossipAddr, "rpc_addr", rpcAdv,
		"existing_state", existing, "incarnation", n.inc)
	return n, nil
}

// raftStream is raft's StreamLayer over the hello-speaking listener.
type raftStream struct {
	*peerListener
	self string
}

func (s *raftStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return dialPeer(s.faults, s.self, string(addr), timeout)
}

func (n *Node) startMemberlist() error {
	cfg, t := n.cfg, n.cfg.Timing
	host, port, err := splitBind(cfg.GossipAddr)
	if err != nil {
		return fmt.Errorf("gossip: %w", err)
	}
	bindHost := host
	if bindHost == "" {
		bindHost = "0.0.0.0"
	}
	mlog := newStdLogger(n.log)
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{bindHost}, BindPort: port, Logger: mlog})
	if err != nil {
		return fmt.Errorf("gossip: listen on %s: %w", cfg.GossipAddr, err)
	}
	port = nt.GetAutoBindPort()
	adv := advertiseHost(host, cfg.AdvertiseHost)
	if net.ParseIP(adv) == nil {
		ips, err := net.LookupIP(adv)
		if err != nil || len(ips) == 0 {
			nt.Shutdown()
			return fmt.Errorf("gossip: resolve advertise host %s: %w", adv, err)
		}
		adv = ips[0].String()
	}
	n.gossipAddr = net.JoinHostPort(adv, strconv.Itoa(port))

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.NodeID
	mc.Delegate = delegate{n}
	mc.Events = delegate{n}
	mc.Logger = mlog
	mc.LogOutput = nil
	mc.BindAddr, mc.BindPort = bindHost, port
	mc.AdvertiseAddr, mc.AdvertisePort = adv, port
	mc.ProbeInterval = t.ProbeInterval
	mc.ProbeTimeout = t.ProbeTimeout
	mc.GossipInterval = t.GossipInterval
	mc.PushPullInterval = t.PushPullInterval
	mc.SuspicionMult = t.SuspicionMult
	mc.DeadNodeReclaimTime = t.DeadNodeReclaim
	mc.Transport = newGossipTransport(nt, cfg.NodeID, n.faults)
	n.ml, err = memberlist.Create(mc)
	if err != nil {
		mc.Transport.Shutdown()
		return fmt.Errorf("gossip: start memberlist: %w", err)
	}
	return nil
}

// prepareDataDir creates dir, checks it belongs to nodeID and returns the
// directory's random identity.
func prepareDataDir(dir, nodeID string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create data dir %s: %w", dir, err)
	}
	idPath := filepath.Join(dir, "node-id")
	b, err := os.ReadFile(idPath)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.WriteFile(idPath, []byte(nodeID+"\n"), 0o600); err != nil {
			return "", fmt.Errorf("write %s: %w", idPath, err)
		}
	case err != nil:
		return "", fmt.Errorf("read %s (unreadable data dir?): %w", idPath, err)
	case strings.TrimSpace(string(b)) != nodeID:
		return "", fmt.Errorf("data dir %s belongs to node %q, not %q", dir, strings.TrimSpace(string(b)), nodeID)
	}
	dataPath := filepath.Join(dir, "data-id")
	b, err = os.ReadFile(dataPath)
	switch {
	case errors.Is(err, os.ErrNotExist):
		id := randomHex(8)
		if err := os.WriteFile(dataPath, []byte(id+"\n"), 0o600); err != nil {
			return "", fmt.Errorf("write %s: %w", dataPath, err)
		}
		return id, nil
	case err != nil:
		return "", fmt.Errorf("read %s (unreadable data dir?): %w", dataPath, err)
	}
	return strings.TrimSpace(string(b)), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// NodeID is this node's ID.
func (n *Node) NodeID() string { return n.cfg.NodeID }

// Incarnation is random per process start. Connection IDs made by the
// protocol layer start with it and "-", so a restarted node can drop the
// attachments of its earlier life (CmdDetachNode KeepIncarnation).
func (n *Node) Incarnation() string { return n.inc }

// IsLeader reports whether this node is the raft leader.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// LeaderID is the current leader's node ID, or "" while there is none.
func (n *Node) LeaderID() string {
	_, id := n.raft.LeaderWithID()
	return string(id)
}

// GossipAddr is the advertised memberlist address (for --join).
func (n *Node) GossipAddr() string { return n.gossipAddr }

// RaftAddr is the advertised raft address.
func (n *Node) RaftAddr() string { return n.meta.Raft }

// RPCAddr is the advertised internal RPC address.
func (n *Node) RPCAddr() string { return n.meta.RPC }

// Faults is the node's fault injector (nil when none was configured).
func (n *Node) Faults() *FaultInjector { return n.faults }

// OnEvent registers fn for cluster events. fn runs on one dispatcher
// goroutine and must not block for long.
func (n *Node) OnEvent(fn func(ClusterEvent)) {
	n.evmu.Lock()
	n.evFns = append(n.evFns, fn)
	n.evmu.Unlock()
}

func (n *Node) emit(e ClusterEvent) {
	e.At = time.Now()
	select {
	case n.events <- e:
	default:
		n.log.Warn("cluster event dropped: dispatcher is behind", "type", e.Type, "event_node", e.Node)
	}
}

func (n *Node) dispatchEvents() {
	defer n.wg.Done()
	for {
		select {
		case <-n.stop:
			return
		case e := <-n.events:
			n.evmu.Lock()
			fns := n.evFns
			n.evmu.Unlock()
			for _, fn := range fns {
				fn(e)
			}
		}
	}
}

func (n *Node) watchLeader(ch <-chan raft.Observation) {
	defer n.wg.Done()
	for {
		select {
		case <-n.stop:
			return
		case o := <-ch:
			lo := o.Data.(raft.LeaderObservation)
			n.log.Info("leader changed", "leader", lo.LeaderID, "term", n.raft.CurrentTerm())
			n.emit(ClusterEvent{Type: EventLeaderChanged, Leader: string(lo.LeaderID)})
		}
	}
}

// Leave leaves the cluster gracefully: a leader hands leadership over
// first, then the node announces its departure over gossip and asks the
// leader to remove it from the voters. It returns once the leader removed
// it (or ctx ends).
func (n *Node) Leave(ctx context.Context) error {
	if n.left.Swap(true) {
		return nil
	}
	voters, err := n.Voters()
	if err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	others := 0
	for _, v := range voters {
		if v != n.cfg.NodeID {
			others++
		}
	}
	if n.IsLeader() && others > 0 {
		if err := n.raft.LeadershipTransfer().Error(); err != nil {
			n.log.Warn("leave: leadership transfer failed; removing self as leader", "err", err)
		}
	}
	// Tell the others first that this is a graceful leave, so the leader
	// removes this node and does not add it back meanwhile.
	n.leaving.Store(true)
	if err := n.ml.UpdateNode(n.cfg.HoldTimeout); err != nil {
		n.log.Warn("leave: announce leaving over gossip", "err", err)
	}
	defer func() {
		if err := n.ml.Leave(n.cfg.HoldTimeout); err != nil {
			n.log.Warn("leave: gossip leave broadcast", "err", err)
		}
	}()
	if others == 0 {
		n.log.Info("left cluster (last voter)")
		return nil
	}
	wait := 20 * time.Millisecond
	for {
		var err error
		switch leader := n.findLeader(ctx); leader {
		case "":
			err = errors.New("no leader")
		case n.cfg.NodeID:
			err = n.removeServer(n.cfg.NodeID)
		default:
			_, err = n.Call(ctx, leader, rpcRemove, []byte(n.cfg.NodeID))
		}
		if err == nil {
			n.log.Info("left cluster")
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("leave: leader did not remove %s: %w (last error: %v)", n.cfg.NodeID, ctx.Err(), err)
		case <-time.After(jitter(wait)):
		}
		wait = min(wait*2, 500*time.Millisecond)
	}
}

// findLeader returns the leader's ID, asking the other members when this
// node has lost track of it (a leaving node the leader already removed
// hears no more heartbeats).
func (n *Node) findLeader(ctx context.Context) string {
	if id := n.LeaderID(); id != "" {
		return id
	}
	for _, m := range n.Members() {
		if m.ID == n.cfg.NodeID || !m.Alive {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, statusDeadline)
		info, err := n.remoteInfo(cctx, m.ID)
		cancel()
		if err == nil && info.Leader != "" {
			return info.Leader
		}
	}
	return ""
}

// Shutdown stops the node: a leader transfers leadership first, the node
// leaves the cluster when LeaveOnTerminate is set, then raft, memberlist
// and the internal RPC stop and the bolt files close.
func (n *Node) Shutdown(ctx context.Context) error {
	n.shutdownOnce.Do(func() { n.shutdownErr = n.shutdown(ctx) })
	return n.shutdownErr
}

func (n *Node) shutdown(ctx context.Context) error {
	var errs []error
	if n.cfg.LeaveOnTerminate {
		if err := n.Leave(ctx); err != nil {
			errs = append(errs, err)
		}
	} else if n.IsLeader() {
		if voters, err := n.Voters(); err == nil && len(voters) > 1 {
			if err := n.raft.LeadershipTransfer().Error(); err != nil {
				n.log.Warn("shutdown: leadership transfer failed", "err", err)
			}
		}
	}
	n.cancel()
	n.wg.Wait()
	n.raft.DeregisterObserver(n.observer)
	if err := n.raft.Shutdown().Error(); err != nil {
		errs = append(errs, fmt.Errorf("stop raft: %w", err))
	}
	n.rpc.close()
	n.pool.close()
	if err := n.ml.Shutdown(); err != nil {
		errs = append(errs, fmt.Errorf("stop memberlist: %w", err))
	}
	n.trans.CloseStreams()
	if err := n.trans.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close raft transport: %w", err))
	}
	if err := n.store.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close raft log: %w", err))
	}
	n.log.Info("node stopped")
	return errors.Join(errs...)
}

// maxProvisionalEntries bounds the local log replayed at start; beyond it
// the node waits for the leader like plain raft would.
const maxProvisionalEntries = 200000

// publishLocalLog gives the proxy the table of the local log right after
// start, before any leader confirms what is committed (see
// fsm.PublishProvisional): a node restarted without a quorum keeps serving
// the routes it served before.
func (n *Node) publishLocalLog() {
	first := n.fsm.AppliedIndex() + 1
	last, err := n.store.LastIndex()
	if err != nil || last < first || last-first >= maxProvisionalEntries {
		return
	}
	logs := make([]*raft.Log, 0, last-first+1)
	for i := first; i <= last; i++ {
		l := new(raft.Log)
		if err := n.store.GetLog(i, l); err != nil {
			n.log.Warn("provisional table: read local log", "index", i, "err", err)
			return
		}
		logs = append(logs, l)
	}
	idx, err := n.fsm.PublishProvisional(logs)
	if err != nil {
		n.log.Warn("provisional table from the local log", "err", err)
		return
	}
	if idx > 0 {
		n.log.Info("serving the local log's routing table until a leader confirms it", "index", idx, "entries", len(logs))
	}
}
