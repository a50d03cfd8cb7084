package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/raftgate/raftgate/fsm"
)

// ErrNoLeader is returned (wrapped, with the reason) when a write or a
// linearizable read could not reach a leader within the hold timeout.
// Its text starts with "no leader", which the protocol layer sends as is.
var ErrNoLeader = errors.New("no leader")

// ErrShutdown is returned by calls made after Shutdown began.
var ErrShutdown = errors.New("cluster node is shut down")

// Version is advertised in the memberlist metadata of every node.
const Version = "1"

// Config configures one node. Zero durations take the documented defaults.
type Config struct {
	NodeID  string
	DataDir string

	// RaftAddr, GossipAddr and RPCAddr are bind addresses. A port of 0
	// picks a free one; an unspecified host advertises AdvertiseHost, or
	// the first private IPv4 address of the machine.
	RaftAddr, GossipAddr, RPCAddr string
	// AdvertiseHost overrides the host other nodes use to reach this one.
	AdvertiseHost string

	// ControlAddr and ProxyAddr are only advertised (CLUSTER_STATUS).
	ControlAddr, ProxyAddr string

	// Join lists gossip addresses of known nodes.
	Join []string
	// BootstrapExpect is the number of servers that must see each other
	// before the first cluster bootstraps; 1 bootstraps a single node at
	// once; 0 never bootstraps (the node only joins).
	BootstrapExpect int

	DeadNodeReap     time.Duration // default 72h
	HoldTimeout      time.Duration // default 5s
	StaleReads       bool
	SessionGrace     time.Duration // default 5m
	StagedIdle       time.Duration // default 30m
	LeaveOnTerminate bool

	FSM    *fsm.FSM
	Logger *slog.Logger
	Timing Timing
	// Faults, when set, lets tests (and the chaos admin endpoint) cut this
	// node off from chosen peers.
	Faults *FaultInjector
}

// Timing holds every timer of the node. DefaultTiming is for a LAN;
// TestTiming is for in-process tests on loopback.
type Timing struct {
	// Raft.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	SnapshotThreshold  uint64
	SnapshotInterval   time.Duration
	TrailingLogs       uint64

	// Memberlist.
	ProbeInterval    time.Duration
	ProbeTimeout     time.Duration
	GossipInterval   time.Duration
	PushPullInterval time.Duration
	SuspicionMult    int
	// DeadNodeReclaim is how long a dead node's name stays reserved before a
	// node with the same ID at another address may take it over.
	DeadNodeReclaim time.Duration

	// Cluster loops.
	// LeaderInterval paces the leader's reconciliation and lease sweep.
	LeaderInterval time.Duration
	// TouchInterval paces the batched lease renewals (CmdTouch); it is
	// capped at a quarter of the session grace.
	TouchInterval time.Duration
	// DialTimeout bounds one TCP dial of the internal RPC.
	DialTimeout time.Duration
}

// DefaultTiming returns timers for nodes on one LAN (sub-millisecond RTT).
//
// Raft's own defaults (1 s heartbeat and election timeouts) are sized for
// WAN-ish links; on a LAN a 500 ms heartbeat timeout still leaves hundreds
// of heartbeats of slack against GC pauses while halving the write
// unavailability window after a leader dies. The leader lease (500 ms) makes
// a leader cut off from its quorum step down well inside the 5 s hold
// timeout; 250 ms made loaded leaders on two shared cores step down under
// bulk writes (seen in chaos runs). Snapshots once 8192 entries have
// accumulated, checked every 20 s, keep restarts fast (with a 2 min check a
// node restarted at index 15,000 replayed the whole log); 10240 trailing
// logs let a briefly absent follower catch up without a snapshot install.
// CommitTimeout (50 ms) is how often raft sends idle followers the commit
// index. Followers learn of client writes at once from the leader's no-op
// after them (nudge.go), so this only bounds the lag of the last no-op;
// at 5 ms three idle nodes spent 16% of a core on empty AppendEntries, at
// 50 ms 5%.
// Memberlist uses its LAN profile: failure detection in a few seconds is
// enough because raft elects on its own; gossip only drives membership and
// lease detaches.
func DefaultTiming() Timing {
	return Timing{
		HeartbeatTimeout:   500 * time.Millisecond,
		ElectionTimeout:    500 * time.Millisecond,
		LeaderLeaseTimeout: 500 * time.Millisecond,
		CommitTimeout:      50 * time.Millisecond,
		SnapshotThreshold:  8192,
		SnapshotInterval:   20 * time.Second,
		TrailingLogs:       10240,
		ProbeInterval:      time.Second,
		ProbeTimeout:       500 * time.Millisecond,
		GossipInterval:     200 * time.Millisecond,
		PushPullInterval:   30 * time.Second,
		SuspicionMult:      4,
		DeadNodeReclaim:    10 * time.Second,
		LeaderInterval:     time.Second,
		TouchInterval:      time.Second,
		DialTimeout:        2 * time.Second,
	}
}

// TestTiming returns fast timers for in-process clusters on loopback. They
// are not tight enough to flap under -race on two shared cores.
func TestTiming() Timing {
	return Timing{
		HeartbeatTimeout:   200 * time.Millisecond,
		ElectionTimeout:    200 * time.Millisecond,
		LeaderLeaseTimeout: 150 * time.Millisecond,
		CommitTimeout:      5 * time.Millisecond,
		SnapshotThreshold:  1024,
		SnapshotInterval:   time.Second,
		TrailingLogs:       1024,
		ProbeInterval:      100 * time.Millisecond,
		ProbeTimeout:       80 * time.Millisecond,
		GossipInterval:     20 * time.Millisecond,
		PushPullInterval:   300 * time.Millisecond,
		SuspicionMult:      2,
		DeadNodeReclaim:    50 * time.Millisecond,
		LeaderInterval:     100 * time.Millisecond,
		TouchInterval:      100 * time.Millisecond,
		DialTimeout:        500 * time.Millisecond,
	}
}

// withDefaults fills zero fields of t from DefaultTiming.
func (t Timing) withDefaults() Timing {
	d := DefaultTiming()
	set := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	set(&t.HeartbeatTimeout, d.HeartbeatTimeout)
	set(&t.ElectionTimeout, d.ElectionTimeout)
	set(&t.LeaderLeaseTimeout, d.LeaderLeaseTimeout)
	set(&t.CommitTimeout, d.CommitTimeout)
	set(&t.SnapshotInterval, d.SnapshotInterval)
	set(&t.ProbeInterval, d.ProbeInterval)
	set(&t.ProbeTimeout, d.ProbeTimeout)
	set(&t.GossipInterval, d.GossipInterval)
	set(&t.PushPullInterval, d.PushPullInterval)
	set(&t.DeadNodeReclaim, d.DeadNodeReclaim)
	set(&t.LeaderInterval, d.LeaderInterval)
	set(&t.TouchInterval, d.TouchInterval)
	set(&t.DialTimeout, d.DialTimeout)
	if t.SnapshotThreshold == 0 {
		t.SnapshotThreshold = d.SnapshotThreshold
	}
	if t.TrailingLogs == 0 {
		t.TrailingLogs = d.TrailingLogs
	}
	if t.SuspicionMult <= 0 {
		t.SuspicionMult = d.SuspicionMult
	}
	return t
}

// ValidateNodeID checks a node ID: 1 to 128 bytes of UTF-8 text without
// control characters (it is gossiped, logged and typed by operators).
func ValidateNodeID(id string) error {
	switch {
	case id == "":
		return errors.New("node ID is required")
	case len(id) > 128:
		return fmt.Errorf("node ID %.20q... is longer than 128 bytes", id)
	case !utf8.ValidString(id) || strings.ContainsFunc(id, unicode.IsControl):
		return fmt.Errorf("node ID %q has control characters or is not UTF-8", id)
	}
	return nil
}

// withDefaults validates c and fills its defaults.
func (c Config) withDefaults() (Config, error) {
	if err := ValidateNodeID(c.NodeID); err != nil {
		return c, fmt.Errorf("cluster config: %w", err)
	}
	if c.DataDir == "" {
		return c, errors.New("cluster config: data dir is required")
	}
	if c.FSM == nil {
		return c, errors.New("cluster config: FSM is required")
	}
	if c.BootstrapExpect < 0 {
		return c, fmt.Errorf("cluster config: bootstrap-expect %d is negative", c.BootstrapExpect)
	}
	if c.RaftAddr == "" {
		c.RaftAddr = ":8300"
	}
	if c.GossipAddr == "" {
		c.GossipAddr = ":8301"
	}
	if c.RPCAddr == "" {
		c.RPCAddr = ":8302"
	}
	if c.DeadNodeReap <= 0 {
		c.DeadNodeReap = 72 * time.Hour
	}
	if c.HoldTimeout <= 0 {
		c.HoldTimeout = 5 * time.Second
	}
	if c.SessionGrace <= 0 {
		c.SessionGrace = 5 * time.Minute
	}
	if c.StagedIdle <= 0 {
		c.StagedIdle = 30 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Timing = c.Timing.withDefaults()
	if limit := c.SessionGrace / 4; c.Timing.TouchInterval > limit && limit > 0 {
		c.Timing.TouchInterval = limit
	}
	return c, nil
}
