package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/raftgate/raftgate/cmd/raftgate/localcluster"
)

// FaultReport is one injected fault and what it cost.
type FaultReport struct {
	Round    int      `json:"round"`
	Scenario Scenario `json:"scenario"`
	// Targets are the nodes the fault hit (killed, stopped, cut off).
	Targets []string `json:"targets"`
	// Start and Recovered are offsets from the round's start: when the
	// fault was injected, and when every hit node served again.
	Start     time.Duration `json:"start_ns"`
	Recovered time.Duration `json:"recovered_ns"`
	// Unavailability is the longest time without an acknowledged write
	// from the fault's start to the first ack after it recovered.
	Unavailability time.Duration `json:"unavailability_ns"`
	// Error is set when the harness could not inject or recover.
	Error string `json:"error,omitempty"`
}

// partitionHold is the shortest time a partition stays in place.
const partitionHold = 2 * time.Second

// inject runs one scenario to its end: the fault, its repair, and the wait
// until every hit node serves again.
func (r *round) inject(ctx context.Context, sc Scenario, rng *rand.Rand) FaultReport {
	fr := FaultReport{Round: r.num, Scenario: sc, Start: time.Duration(r.hist.now())}
	var err error
	switch sc {
	case LeaderKill, FollowerKill:
		err = r.h.killOne(ctx, sc == LeaderKill, rng, &fr)
	case Pause:
		err = r.h.pauseLeader(ctx, &fr)
	case PartitionLeader, PartitionHalves:
		err = r.partition(ctx, sc == PartitionLeader, rng, &fr)
	case RollingRestart:
		err = r.h.rollingRestart(ctx, rng, &fr)
	case Membership:
		err = r.h.membership(ctx, &fr)
	case FullRestart:
		err = r.h.fullRestart(ctx, &fr)
	default:
		err = fmt.Errorf("unknown scenario %q", sc)
	}
	if err != nil {
		fr.Error = err.Error()
		r.hist.problem(fmt.Sprintf("%s: %v", sc, err))
		// Put the cluster back together, so one failure does not drown
		// the rest of the run in follow-on errors.
		if rerr := r.h.repair(ctx); rerr != nil {
			r.hist.problem("repair after " + string(sc) + ": " + rerr.Error())
		}
	}
	fr.Recovered = time.Duration(r.hist.now())
	r.h.log.Info("fault done", "round", r.num, "scenario", sc, "targets", fr.Targets, "took", (fr.Recovered - fr.Start).Round(time.Millisecond), "err", err)
	return fr
}

// repair heals every partition, starts every member that is not running,
// resumes stopped ones, and waits until all serve.
func (h *harness) repair(ctx context.Context) error {
	var firstErr error
	for _, n := range h.currentMembers() {
		end := h.probes.exclude(n)
		if n.Running() {
			_ = n.Signal(syscall.SIGCONT)
			_ = n.Partition(ctx, nil)
		} else if err := h.startNode(n); err != nil && firstErr == nil {
			firstErr = err
		}
		if err := h.waitServing(ctx, n); err != nil && firstErr == nil {
			firstErr = err
		}
		end()
	}
	return firstErr
}

// findLeader polls the running members until one of them says it leads.
func (h *harness) findLeader(ctx context.Context, among []*localcluster.Node) (*localcluster.Node, error) {
	var leader *localcluster.Node
	ok := poll(ctx, 20*time.Second, 50*time.Millisecond, func() bool {
		for _, n := range among {
			if n.Running() && n.IsLeader(ctx) {
				leader = n
				return true
			}
		}
		return false
	})
	if !ok {
		return nil, fmt.Errorf("no leader among %s within 20s", nodeIDs(among))
	}
	return leader, nil
}

// waitServing waits until n is ready (has a leader and has caught up) and
// its proxy serves the probe route.
func (h *harness) waitServing(ctx context.Context, n *localcluster.Node) error {
	client := newProbeClient()
	defer client.CloseIdleConnections()
	ok := poll(ctx, 45*time.Second, 50*time.Millisecond, func() bool {
		return n.Ready(ctx) && probeOnce(ctx, client, n.Proxy, probeHost, probePath) == nil
	})
	if !ok {
		return fmt.Errorf("%s did not catch up and serve within 45s (see %s)", n.ID, n.LogPath)
	}
	return nil
}

// restart starts n again and waits until it serves.
func (h *harness) restart(ctx context.Context, n *localcluster.Node) error {
	if err := h.startNode(n); err != nil {
		return err
	}
	return h.waitServing(ctx, n)
}

func (h *harness) killOne(ctx context.Context, leader bool, rng *rand.Rand, fr *FaultReport) error {
	members := h.currentMembers()
	l, err := h.findLeader(ctx, members)
	if err != nil {
		return err
	}
	victim := l
	if !leader {
		var followers []*localcluster.Node
		for _, n := range members {
			if n != l {
				followers = append(followers, n)
			}
		}
		victim = followers[rng.IntN(len(followers))]
	}
	fr.Targets = []string{victim.ID}
	end := h.probes.exclude(victim)
	defer end()
	if err := victim.Kill(); err != nil {
		return err
	}
	sleepCtx(ctx, h.cfg.RestartDelay)
	return h.restart(ctx, victim)
}

// pauseLeader stops the leader with SIGSTOP until the others have elected
// a new one (so past the election timeout), then lets it go on.
func (h *harness) pauseLeader(ctx context.Context, fr *FaultReport) error {
	members := h.currentMembers()
	l, err := h.findLeader(ctx, members)
	if err != nil {
		return err
	}
	fr.Targets = []string{l.ID}
	end := h.probes.exclude(l)
	defer end()
	if err := l.Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	_, lerr := h.findLeader(ctx, without(members, l))
	// A little longer, so the stopped node's lease and heartbeats are
	// well past due when it wakes up as a stale leader.
	sleepCtx(ctx, 500*time.Millisecond)
	if err := l.Signal(syscall.SIGCONT); err != nil {
		return err
	}
	if lerr != nil {
		return fmt.Errorf("while %s was stopped: %w", l.ID, lerr)
	}
	return h.waitServing(ctx, l)
}

// partition cuts a minority off: the leader and (with 5 nodes) one
// follower, or a random floor(N/2) nodes. While it holds, the round's
// witness checks that the minority acknowledges nothing and serves no
// stale read.
func (r *round) partition(ctx context.Context, leaderSide bool, rng *rand.Rand, fr *FaultReport) error {
	h := r.h
	members := h.currentMembers()
	size := len(members) / 2
	var minority []*localcluster.Node
	var oldLeader *localcluster.Node
	if leaderSide {
		l, err := h.findLeader(ctx, members)
		if err != nil {
			return err
		}
		oldLeader = l
		minority = append(minority, l)
	}
	for _, i := range rng.Perm(len(members)) {
		if len(minority) == size {
			break
		}
		if !slices.Contains(minority, members[i]) {
			minority = append(minority, members[i])
		}
	}
	majority := without(members, minority...)
	fr.Targets = nodeIDs(minority)
	var ends []func()
	for _, n := range minority {
		ends = append(ends, h.probes.exclude(n))
	}
	defer func() {
		for _, e := range ends {
			e()
		}
	}()
	heal := func() error {
		var firstErr error
		for _, n := range members {
			if err := n.Partition(ctx, nil); err != nil && firstErr == nil {
				firstErr = err
			}
		}
		return firstErr
	}
	for _, n := range minority {
		if err := n.Partition(ctx, nodeIDs(majority)); err != nil {
			_ = heal()
			return err
		}
	}
	for _, n := range majority {
		if err := n.Partition(ctx, nodeIDs(minority)); err != nil {
			_ = heal()
			return err
		}
	}
	cut := time.Now()
	newLeader, lerr := h.findLeader(ctx, majority)
	if lerr == nil && oldLeader != nil {
		r.witnessIsolated(ctx, oldLeader, newLeader)
	}
	// Hold the cut a while with the majority working, so the workload's
	// clients on the minority see it too.
	sleepCtx(ctx, max(500*time.Millisecond, time.Until(cut.Add(partitionHold))))
	if err := heal(); err != nil {
		return fmt.Errorf("heal: %w", err)
	}
	if lerr != nil {
		return fmt.Errorf("majority %s: %w", nodeIDs(majority), lerr)
	}
	for _, n := range minority {
		if err := h.waitServing(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

// rollingRestart stops every member gracefully (SIGTERM) and starts it
// again, one at a time, each serving before the next goes.
func (h *harness) rollingRestart(ctx context.Context, rng *rand.Rand, fr *FaultReport) error {
	members := h.currentMembers()
	for _, i := range rng.Perm(len(members)) {
		n := members[i]
		fr.Targets = append(fr.Targets, n.ID)
		end := h.probes.exclude(n)
		t0 := time.Now()
		err := n.Stop(30 * time.Second)
		stopped := time.Now()
		if err == nil {
			err = h.restart(ctx, n)
		}
		end()
		h.log.Info("node restarted", "node", n.ID, "stop", stopped.Sub(t0).Round(time.Millisecond), "start", time.Since(stopped).Round(time.Millisecond), "err", err)
		if err != nil {
			return err
		}
	}
	return nil
}

// membership adds a node with --join, lets it serve under load, then makes
// it leave gracefully and stops it. The joining node starts from an empty
// data directory every time, so a second run also shows that a removed
// node comes back cleanly.
func (h *harness) membership(ctx context.Context, fr *FaultReport) error {
	n := h.spareNode()
	fr.Targets = []string{n.ID}
	if err := os.RemoveAll(n.DataDir); err != nil {
		return fmt.Errorf("clear data of %s: %w", n.ID, err)
	}
	n.Join = nil
	for _, m := range h.currentMembers() {
		n.Join = append(n.Join, m.Gossip)
	}
	n.Expect = 0 // join only: never bootstrap a second cluster
	end := h.probes.exclude(n)
	h.probes.start(h.runCtx, n)
	if err := h.restart(ctx, n); err != nil {
		end()
		h.probes.stop(n)
		_ = n.Stop(20 * time.Second)
		return fmt.Errorf("join: %w", err)
	}
	end()
	h.addMember(n)
	sleepCtx(ctx, time.Second)

	h.removeMember(n)
	end = h.probes.exclude(n)
	defer end()
	lctx, cancel := context.WithTimeout(ctx, 40*time.Second)
	defer cancel()
	lerr := n.Leave(lctx)
	h.probes.stop(n)
	serr := n.Stop(30 * time.Second)
	if lerr != nil {
		return fmt.Errorf("leave: %w", lerr)
	}
	if serr != nil {
		return serr
	}
	// The voter set shrank back: the rest still elects and serves.
	_, err := h.findLeader(ctx, h.currentMembers())
	return err
}

// fullRestart kills every member at once, then starts them all.
func (h *harness) fullRestart(ctx context.Context, fr *FaultReport) error {
	members := h.currentMembers()
	fr.Targets = nodeIDs(members)
	var ends []func()
	for _, n := range members {
		ends = append(ends, h.probes.exclude(n))
	}
	defer func() {
		for _, e := range ends {
			e()
		}
	}()
	for _, n := range members {
		if err := n.Kill(); err != nil {
			return err
		}
	}
	sleepCtx(ctx, h.cfg.RestartDelay)
	for _, n := range members {
		if err := h.startNode(n); err != nil {
			return err
		}
	}
	errs := make([]error, len(members))
	var wg sync.WaitGroup
	for i, n := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = h.waitServing(ctx, n)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func without(nodes []*localcluster.Node, drop ...*localcluster.Node) []*localcluster.Node {
	var out []*localcluster.Node
	for _, n := range nodes {
		if !slices.Contains(drop, n) {
			out = append(out, n)
		}
	}
	return out
}

func nodeIDs(nodes []*localcluster.Node) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.ID
	}
	return out
}
