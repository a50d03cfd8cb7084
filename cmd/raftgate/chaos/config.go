package chaos

import (
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Scenario names one kind of fault the harness injects.
type Scenario string

// The scenarios, in the order `all` runs them.
const (
	LeaderKill      Scenario = "leader-kill"
	FollowerKill    Scenario = "follower-kill"
	Pause           Scenario = "pause"
	PartitionLeader Scenario = "partition-leader"
	PartitionHalves Scenario = "partition-halves"
	RollingRestart  Scenario = "rolling-restart"
	Membership      Scenario = "membership"
	FullRestart     Scenario = "full-restart"
)

// AllScenarios lists every scenario in the order `all` runs them.
var AllScenarios = []Scenario{LeaderKill, FollowerKill, Pause, PartitionLeader, PartitionHalves, RollingRestart, Membership, FullRestart}

// ParseScenarios turns a comma list (repeats allowed, `all` expands to every
// scenario) into scenarios.
func ParseScenarios(list string) ([]Scenario, error) {
	var out []Scenario
	for _, part := range strings.Split(list, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if part == "all" {
			out = append(out, AllScenarios...)
			continue
		}
		found := false
		for _, s := range AllScenarios {
			if string(s) == part {
				out = append(out, s)
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("unknown scenario %q (known: %s, all)", part, scenarioNames())
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no scenario given")
	}
	return out, nil
}

func scenarioNames() string {
	names := make([]string, len(AllScenarios))
	for i, s := range AllScenarios {
		names[i] = string(s)
	}
	return strings.Join(names, ", ")
}

// Config is one chaos run.
type Config struct {
	// Binary is the raftgate executable started for every node.
	Binary string
	// Nodes is the cluster size, 3 or 5.
	Nodes int
	// Scenarios run one after the other in every round.
	Scenarios []Scenario
	// Duration is the workload time of one round; the faults of the round
	// are spread over it. A fault that takes longer stretches the round.
	Duration time.Duration
	// Rounds repeats the whole schedule with fresh sessions and the seeds
	// Seed, Seed+1, ...; each round's history is checked on its own.
	Rounds int
	// Seed makes the workload and fault choices repeatable.
	Seed int64
	// Clients is the number of workload sessions; each is driven by two
	// concurrent connections (its attached owner and a helper on another
	// node), so the checker sees real concurrency inside a session.
	Clients int
	// IdleSessions are extra sessions, each with one applied route, held
	// attached on a few long-lived connections that re-attach with
	// RECONNECT on another node when theirs dies.
	IdleSessions int
	// DataDir holds node data, logs and, on failure, the porcupine
	// visualization. Empty: a new temporary directory.
	DataDir string
	// KeepData keeps DataDir after a successful run (it is always kept
	// after a failed one).
	KeepData bool
	// BasePort lays out ports as `raftgate dev` does (node i: base+10i
	// proxy, +1 control, +2 raft, +3 gossip, +4 rpc, +5 admin); 0 picks a
	// free range.
	BasePort int
	// RestartDelay is how long a killed node stays down.
	RestartDelay time.Duration
	// OpTimeout bounds one control command; a write that times out has an
	// unknown outcome.
	OpTimeout time.Duration
	// ServeArgs are extra flags for every node's `raftgate serve`, e.g.
	// --stale-reads to watch the checker catch stale reads.
	ServeArgs []string
	// Logger receives progress lines; nil discards them.
	Logger *slog.Logger
}

// withDefaults fills zero fields and validates the rest.
func (c Config) withDefaults() (Config, error) {
	if c.Nodes == 0 {
		c.Nodes = 3
	}
	if c.Nodes != 3 && c.Nodes != 5 {
		return c, fmt.Errorf("--nodes must be 3 or 5, not %d", c.Nodes)
	}
	if len(c.Scenarios) == 0 {
		c.Scenarios = AllScenarios
	}
	if c.Duration <= 0 {
		c.Duration = 30 * time.Second
	}
	if c.Rounds <= 0 {
		c.Rounds = 1
	}
	if c.Clients <= 0 {
		c.Clients = 8
	}
	if c.IdleSessions < 0 {
		return c, fmt.Errorf("idle sessions must not be negative")
	}
	if c.RestartDelay <= 0 {
		c.RestartDelay = time.Second
	}
	if c.OpTimeout <= 0 {
		// Above the nodes' 5 s hold timeout, so a client sees the node's
		// own "no leader" answer instead of cutting it off.
		c.OpTimeout = 7 * time.Second
	}
	if c.Binary == "" {
		return c, fmt.Errorf("no raftgate binary given")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}
