package chaos

import (
	"math"
	"sort"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// history records one round's operations for the checker, and the facts
// the other checks need (acknowledged writes, their times).
type history struct {
	start time.Time

	mu       sync.Mutex
	ops      []porcupine.Operation
	ackTimes []time.Duration // return times of acknowledged writes
	reads    int
	writes   int
	acked    int
	unknown  int
	failed   int
	problems []string
	// The partition-leader witness: reads tried on an isolated old
	// leader after a majority write, reads it answered stale, writes it
	// acknowledged.
	staleChecks  int
	staleReads   int
	isolatedAcks int
}

func newHistory(start time.Time) *history { return &history{start: start} }

// now is the checker's clock: nanoseconds since the round started,
// monotonic.
func (h *history) now() int64 { return int64(time.Since(h.start)) }

// record adds one finished operation. A write with an unknown outcome gets
// an infinite return time, as etcd's robustness tests do: it may take
// effect at any point after its call, or never.
func (h *history) record(client int, in opInput, call, ret int64, out opOutput) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if in.Kind == opList {
		h.reads++
	} else {
		h.writes++
		switch {
		case out.Unknown:
			h.unknown++
			ret = math.MaxInt64
		case out.Failed:
			h.failed++
		default:
			h.acked++
			h.ackTimes = append(h.ackTimes, time.Duration(ret))
		}
	}
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret})
}

// problem records a violation found while the workload runs.
func (h *history) problem(msg string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.problems = append(h.problems, msg)
}

// acks returns the sorted return times of acknowledged writes.
func (h *history) acks() []time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := append([]time.Duration(nil), h.ackTimes...)
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// unavailability is the longest time without an acknowledged write inside
// [from, to]: measured from the fault (or the last ack before it) to the
// next ack, over every gap that overlaps the window.
func unavailability(acks []time.Duration, from, to time.Duration) time.Duration {
	var worst time.Duration
	prev := from
	for _, a := range acks {
		if a <= from {
			continue
		}
		if gap := a - prev; gap > worst {
			worst = gap
		}
		prev = a
		if a > to {
			return worst
		}
	}
	// No ack after the window's end: count up to the end.
	if gap := to - prev; gap > worst {
		worst = gap
	}
	return worst
}
