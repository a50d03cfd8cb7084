package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/raftgate/raftgate/cmd/raftgate/chaos"
)

// runChaosJSON runs `raftgate chaos` in process against the built binary
// and decodes its JSON report.
func runChaosJSON(t *testing.T, args ...string) (int, *chaos.Report) {
	t.Helper()
	var out, errb bytes.Buffer
	full := append([]string{"chaos", "--binary", raftgateBin, "--json", "--data-dir", t.TempDir()}, args...)
	code := run(full, &out, &errb)
	var rep chaos.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("raftgate %s: exit %d, no JSON report (%v)\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, err, out.String(), errb.String())
	}
	if code != 0 || !rep.OK() {
		var text bytes.Buffer
		rep.WriteText(&text)
		t.Logf("report:\n%s\nstderr: %s", text.String(), errb.String())
	}
	return code, &rep
}

// assertClean checks the counts every chaos run must end with.
func assertClean(t *testing.T, code int, rep *chaos.Report) {
	t.Helper()
	if code != 0 {
		t.Errorf("exit code %d", code)
	}
	if len(rep.Problems) > 0 {
		t.Errorf("problems: %q", rep.Problems)
	}
	if rep.Lost != 0 || rep.Duplicated != 0 || rep.Violations != 0 || rep.StaleReads != 0 {
		t.Errorf("lost %d, duplicated %d, violations %d, stale reads %d", rep.Lost, rep.Duplicated, rep.Violations, rep.StaleReads)
	}
	if rep.ExpiredSessions != 0 {
		t.Errorf("%d live sessions expired", rep.ExpiredSessions)
	}
	if rep.ProbeRequests == 0 || rep.ProbeFailures != 0 {
		t.Errorf("probe failures %d of %d", rep.ProbeFailures, rep.ProbeRequests)
	}
	if rep.Acked == 0 {
		t.Error("no write was acknowledged")
	}
	for _, rr := range rep.RoundReports {
		// Done means 5 and 8: every round's history linearizable, and
		// every node at one applied index with one snapshot digest.
		if rr.Linearizable != "ok" {
			t.Errorf("round %d (seed %d): linearizability %q", rr.Round, rr.Seed, rr.Linearizable)
		}
		if rr.AppliedIndex == 0 {
			t.Errorf("round %d: FSM snapshots did not converge", rr.Round)
		}
		for _, f := range rr.Faults {
			if f.Error != "" {
				t.Errorf("round %d %s: %s", rr.Round, f.Scenario, f.Error)
			}
		}
	}
}

func TestChaosFlags(t *testing.T) {
	for _, args := range [][]string{
		{"chaos", "--scenario", "nope"},
		{"chaos", "--nodes", "4"},
		{"chaos", "extra"},
	} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 2 {
			t.Errorf("%q: exit %d, want 2 (%s)", args, code, errb.String())
		}
	}
}

// TestChaosEveryScenario runs every scenario once, in one round, on one
// 3-node cluster: CI's short form of `raftgate chaos --scenario all`.
func TestChaosEveryScenario(t *testing.T) {
	code, rep := runChaosJSON(t, "--scenario", "all", "--duration", "16s", "--seed", "11")
	assertClean(t, code, rep)
	for _, sc := range chaos.AllScenarios {
		if rep.Unavailability[sc].Count != 1 {
			t.Errorf("scenario %s ran %d times", sc, rep.Unavailability[sc].Count)
		}
	}
	if rep.StaleChecks != 1 {
		t.Errorf("%d stale-read checks on the isolated leader, want 1", rep.StaleChecks)
	}
}

// TestChaosLeaderKills is issue 3's "Done means" 2 and 3 (and half of 5):
// ten rounds, each with its own seed and porcupine check, each SIGKILLing
// the leader while 8 sessions (16 connections) write through all nodes and
// every proxy is probed. Writes resume, every acknowledged write is there
// exactly once, the restarted node catches up and serves (its proxy, its
// FSM digest), and no probe on a surviving node fails.
func TestChaosLeaderKills(t *testing.T) {
	code, rep := runChaosJSON(t, "--scenario", "leader-kill", "--rounds", "10", "--duration", "3s", "--seed", "100", "--clients", "8")
	assertClean(t, code, rep)
	st := rep.Unavailability[chaos.LeaderKill]
	if st.Count != 10 {
		t.Fatalf("%d leader kills, want 10", st.Count)
	}
	if rep.Reattached == 0 {
		t.Error("no owner re-attached after its node was killed")
	}
	t.Logf("write unavailability over %d leader kills: median %v, max %v; %d ops, %d acked, %d unknown",
		st.Count, st.Median, st.Max, rep.Ops, rep.Acked, rep.Unknown)
}

// TestChaosPartitionedLeader is "Done means" 4 (and the other half of 5):
// ten rounds that cut the leader off in a minority. Each round writes
// through the new majority and then reads on the isolated old leader: it
// must refuse or time out, never answer without the write; a write it
// acknowledges must survive.
func TestChaosPartitionedLeader(t *testing.T) {
	code, rep := runChaosJSON(t, "--scenario", "partition-leader", "--rounds", "10", "--duration", "3s", "--seed", "200")
	assertClean(t, code, rep)
	if rep.StaleChecks != 10 {
		t.Errorf("%d stale-read checks, want 10", rep.StaleChecks)
	}
	t.Logf("isolated leader: %d reads tried, %d stale, %d writes acknowledged; unavailability %+v",
		rep.StaleChecks, rep.StaleReads, rep.IsolatedAcks, rep.Unavailability[chaos.PartitionLeader])
}

// TestChaosSessionsSurviveLeaderKills is "Done means" 6: 1,000 held
// sessions and the workload's sessions live through 5 consecutive leader
// kills; clients whose node died re-attach elsewhere with RECONNECT and
// keep their session and routes (the held sessions' routes are checked at
// the end, the workload's by the linearizability checker).
func TestChaosSessionsSurviveLeaderKills(t *testing.T) {
	code, rep := runChaosJSON(t, "--scenario", "leader-kill,leader-kill,leader-kill,leader-kill,leader-kill",
		"--idle-sessions", "1000", "--duration", "10s", "--seed", "300", "--clients", "4")
	assertClean(t, code, rep)
	if rep.HeldSessions != 1001 { // 1,000 idle plus the probe session
		t.Errorf("%d held sessions checked, want 1001", rep.HeldSessions)
	}
	if rep.HeldReattached == 0 || rep.Reattached == 0 {
		t.Errorf("re-attaches: held %d, owners %d; want both > 0", rep.HeldReattached, rep.Reattached)
	}
	t.Logf("held sessions re-attached: %d (slowest %v); owners: %d", rep.HeldReattached, rep.MaxHeldReattach, rep.Reattached)
}

// TestChaosCatchesStaleReads shows the checks can fail: nodes serving
// reads from local state (--stale-reads) answer the witness's read on an
// isolated old leader without the majority's write, and both the witness
// and porcupine report it, with the visualization written.
func TestChaosCatchesStaleReads(t *testing.T) {
	code, rep := runChaosJSON(t, "--scenario", "partition-leader", "--duration", "3s", "--seed", "400", "--serve-flag=--stale-reads")
	if code != 1 || rep.OK() {
		t.Fatalf("exit %d, ok %v: stale reads went unnoticed", code, rep.OK())
	}
	if rep.StaleReads == 0 || rep.Violations == 0 {
		t.Fatalf("stale reads %d, violations %d", rep.StaleReads, rep.Violations)
	}
	vis := rep.RoundReports[0].Visualization
	if b, err := os.ReadFile(vis); err != nil || len(b) == 0 {
		t.Fatalf("visualization %q: %v", vis, err)
	}
}
