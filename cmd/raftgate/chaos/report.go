package chaos

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// RoundReport is what one round did and found.
type RoundReport struct {
	Round        int           `json:"round"`
	Seed         int64         `json:"seed"`
	Reads        int           `json:"reads"`
	Writes       int           `json:"writes"`
	Linearizable string        `json:"linearizable"`
	CheckTime    time.Duration `json:"check_ns"`
	HistoryCounts
	ConvergeTime  time.Duration `json:"converge_ns"`
	AppliedIndex  uint64        `json:"applied_index"`
	Faults        []FaultReport `json:"faults"`
	Visualization string        `json:"visualization,omitempty"`
	Problems      []string      `json:"problems,omitempty"`
}

// HistoryCounts are the outcomes a history check counts, per round and
// summed over the run.
type HistoryCounts struct {
	Ops        int `json:"ops"`
	Acked      int `json:"acked_writes"`
	Unknown    int `json:"unknown_writes"`
	Failed     int `json:"failed_writes"`
	Lost       int `json:"lost"`
	Duplicated int `json:"duplicated"`
	Violations int `json:"violations"`
	// StaleChecks counts reads sent to an isolated old leader after a
	// write the majority acknowledged; StaleReads those it answered
	// without that write; IsolatedAcks writes it acknowledged.
	StaleChecks  int `json:"stale_read_checks"`
	StaleReads   int `json:"stale_reads"`
	IsolatedAcks int `json:"isolated_leader_acks"`
}

// add adds o's counts to c.
func (c *HistoryCounts) add(o HistoryCounts) {
	c.Ops += o.Ops
	c.Acked += o.Acked
	c.Unknown += o.Unknown
	c.Failed += o.Failed
	c.Lost += o.Lost
	c.Duplicated += o.Duplicated
	c.Violations += o.Violations
	c.StaleChecks += o.StaleChecks
	c.StaleReads += o.StaleReads
	c.IsolatedAcks += o.IsolatedAcks
}

// Stats is a median and a maximum.
type Stats struct {
	Count  int           `json:"count"`
	Median time.Duration `json:"median_ns"`
	Max    time.Duration `json:"max_ns"`
}

func statsOf(ds []time.Duration) Stats {
	if len(ds) == 0 {
		return Stats{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return Stats{Count: len(s), Median: s[len(s)/2], Max: s[len(s)-1]}
}

// Report is the outcome of a chaos run. It is OK when Problems is empty.
type Report struct {
	Seed      int64         `json:"seed"`
	Nodes     int           `json:"nodes"`
	Clients   int           `json:"clients"`
	Rounds    int           `json:"rounds"`
	Scenarios []Scenario    `json:"scenarios"`
	DataDir   string        `json:"data_dir"`
	KeptData  bool          `json:"kept_data"`
	Elapsed   time.Duration `json:"elapsed_ns"`

	HistoryCounts

	ExpiredSessions int           `json:"expired_sessions"`
	HeldSessions    int           `json:"held_sessions"`
	Reattached      int64         `json:"reattached"`
	HeldReattached  int64         `json:"held_reattached"`
	MaxHeldReattach time.Duration `json:"max_held_reattach_ns"`

	ProbeRequests int `json:"probe_requests"`
	ProbeFailures int `json:"probe_failures"`
	// ProbeExcluded are failed probes on a node while it was faulted
	// (down, stopped, in a minority, joining or leaving); they do not
	// count.
	ProbeExcluded int `json:"probe_failures_excluded"`

	// Unavailability is per scenario over every round.
	Unavailability map[Scenario]Stats `json:"unavailability"`
	Converge       Stats              `json:"converge"`

	RoundReports []RoundReport `json:"round_reports"`
	Problems     []string      `json:"problems,omitempty"`
}

// OK reports whether the run found nothing wrong.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// finish sums the rounds and the run-wide facts.
func (r *Report) finish(h *harness) {
	un := map[Scenario][]time.Duration{}
	var conv []time.Duration
	for _, rr := range r.RoundReports {
		r.add(rr.HistoryCounts)
		conv = append(conv, rr.ConvergeTime)
		for _, f := range rr.Faults {
			un[f.Scenario] = append(un[f.Scenario], f.Unavailability)
		}
		for _, p := range rr.Problems {
			r.Problems = append(r.Problems, fmt.Sprintf("round %d: %s", rr.Round, p))
			if strings.HasPrefix(p, "live session ") {
				r.ExpiredSessions++
			}
		}
	}
	r.Unavailability = map[Scenario]Stats{}
	for sc, ds := range un {
		r.Unavailability[sc] = statsOf(ds)
	}
	r.Converge = statsOf(conv)
	total, counted, excluded := h.probes.tally()
	r.ProbeRequests, r.ProbeFailures, r.ProbeExcluded = total, len(counted), excluded
	for i, f := range counted {
		if i == 10 {
			r.Problems = append(r.Problems, fmt.Sprintf("... and %d more failed probes", len(counted)-10))
			break
		}
		r.Problems = append(r.Problems, fmt.Sprintf("probe through %s failed at %s: %s", f.node, f.start.Format("15:04:05.000"), f.err))
	}
	h.mu.Lock()
	for _, p := range h.problems {
		r.Problems = append(r.Problems, p)
		if strings.HasPrefix(p, "live session ") {
			r.ExpiredSessions++
		}
	}
	r.Duplicated += h.duplicates
	h.mu.Unlock()
	r.Reattached = h.reattached.Load()
	r.HeldReattached = h.heldReattaches.Load()
	r.MaxHeldReattach = time.Duration(h.maxHeldReattach.Load())
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report for people.
func (r *Report) WriteText(w io.Writer) {
	ms := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	verdict := "PASS"
	if !r.OK() {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "raftgate chaos: %s  (%d nodes, %d clients, %d round(s), seed %d, %s)\n", verdict, r.Nodes, r.Clients, r.Rounds, r.Seed, ms(r.Elapsed))
	names := make([]string, len(r.Scenarios))
	for i, s := range r.Scenarios {
		names[i] = string(s)
	}
	fmt.Fprintf(w, "scenarios: %s\n\n", strings.Join(names, ","))
	fmt.Fprintf(w, "  operations           %d\n", r.Ops)
	fmt.Fprintf(w, "  acknowledged writes  %d\n", r.Acked)
	fmt.Fprintf(w, "  unknown writes       %d   (timed out or connection lost: may or may not have happened)\n", r.Unknown)
	fmt.Fprintf(w, "  lost                 %d\n", r.Lost)
	fmt.Fprintf(w, "  duplicated           %d\n", r.Duplicated)
	fmt.Fprintf(w, "  violations           %d   (linearizability, porcupine)\n", r.Violations)
	fmt.Fprintf(w, "  stale reads          %d of %d reads on an isolated old leader (%d writes it acknowledged)\n", r.StaleReads, r.StaleChecks, r.IsolatedAcks)
	fmt.Fprintf(w, "  expired sessions     %d   (%d held sessions; %d owner and %d held re-attaches, slowest %s)\n",
		r.ExpiredSessions, r.HeldSessions, r.Reattached, r.HeldReattached, ms(r.MaxHeldReattach))
	fmt.Fprintf(w, "  probe failures       %d of %d   (%d more on faulted nodes, not counted)\n", r.ProbeFailures, r.ProbeRequests, r.ProbeExcluded)
	fmt.Fprintf(w, "  time to converge     median %s, max %s\n\n", ms(r.Converge.Median), ms(r.Converge.Max))
	fmt.Fprintf(w, "  write unavailability per fault:\n")
	for _, sc := range AllScenarios {
		if st, ok := r.Unavailability[sc]; ok {
			fmt.Fprintf(w, "    %-17s n=%-3d median %-8s max %s\n", sc, st.Count, ms(st.Median), ms(st.Max))
		}
	}
	if len(r.Problems) > 0 {
		fmt.Fprintf(w, "\nproblems:\n")
		for _, p := range r.Problems {
			fmt.Fprintf(w, "  - %s\n", p)
		}
	}
	if r.KeptData {
		fmt.Fprintf(w, "\ndata, node logs and any visualization: %s\n", r.DataDir)
	}
}
