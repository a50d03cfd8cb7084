package chaos

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/anishathalye/porcupine"
)

// opKind is a control command the checker models.
type opKind uint8

const (
	opAdd opKind = iota
	opRemove
	opApply
	opList
)

func (k opKind) String() string {
	return [...]string{"ROUTE_ADD", "ROUTE_REMOVE", "CONFIG_APPLY", "ROUTE_LIST"}[k]
}

// opInput is one recorded call. Routes are named in the model by a tag the
// harness puts in the route's path (/t<tag>), not by their route ID: the ID
// of a ROUTE_ADD with an unknown outcome is never learnt from its answer,
// yet the route may well exist and show up in later reads.
type opInput struct {
	Session int
	Kind    opKind
	Tag     int
	RouteID string
}

// opOutput is one recorded answer.
type opOutput struct {
	// Unknown: the write timed out or its connection failed; it may or
	// may not have taken effect (its return time is infinite).
	Unknown bool
	// NotFound: ROUTE_REMOVE answered route not found.
	NotFound bool
	// Failed: a definite error answer; the write changed nothing.
	Failed bool
	// Active and Staged are what ROUTE_LIST showed: the tags of the
	// active configuration, and those of the configuration CONFIG_APPLY
	// would make active.
	Active, Staged []int
	// Text is the raw answer, for the visualization.
	Text string
}

// sessionState is the model of one session's routes: A is the active set,
// E the effective staged set (the staged configuration, or the active one
// when nothing is staged). Both are canonical sorted lists so states
// compare with ==. The two encodings of "nothing staged" (no staged
// config, or one equal to the active one) cannot be told apart by any
// command the workload sends, so the model does not distinguish them.
type sessionState struct {
	A, E string
}

func encodeTags(tags []int) string {
	s := slices.Clone(tags)
	slices.Sort(s)
	parts := make([]string, len(s))
	for i, t := range s {
		parts[i] = strconv.Itoa(t)
	}
	return strings.Join(parts, ",")
}

func decodeTags(s string) []int {
	if s == "" {
		return nil
	}
	parts := strings.Split(s, ",")
	out := make([]int, len(parts))
	for i, p := range parts {
		out[i], _ = strconv.Atoi(p)
	}
	return out
}

// step is the sequential specification of ROUTE_ADD, ROUTE_REMOVE,
// CONFIG_APPLY and ROUTE_LIST for one session (fsm/apply.go semantics).
func step(st sessionState, in opInput, out opOutput) (bool, sessionState) {
	a, e := decodeTags(st.A), decodeTags(st.E)
	switch in.Kind {
	case opAdd:
		if out.Failed {
			return true, st
		}
		if slices.Contains(e, in.Tag) || slices.Contains(a, in.Tag) {
			// A tag is used by one ROUTE_ADD only: seeing it twice
			// would be a duplicate apply.
			return false, st
		}
		return true, sessionState{A: st.A, E: encodeTags(append(e, in.Tag))}
	case opRemove:
		if i := slices.Index(e, in.Tag); i >= 0 {
			if out.NotFound || out.Failed {
				return false, st
			}
			return true, sessionState{A: st.A, E: encodeTags(slices.Delete(e, i, i+1))}
		}
		if slices.Contains(a, in.Tag) {
			// Already pending removal: OK, nothing changes.
			return !out.NotFound && !out.Failed, st
		}
		return out.Unknown || out.NotFound, st
	case opApply:
		if out.Failed {
			return true, st
		}
		return true, sessionState{A: st.E, E: st.E}
	case opList:
		return encodeTags(out.Active) == st.A && encodeTags(out.Staged) == st.E, st
	}
	return false, st
}

// routeModel is the porcupine model of the workload, partitioned by
// session: sessions are isolated from each other, so a history is
// linearizable exactly when each session's sub-history is.
var routeModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		by := map[int][]porcupine.Operation{}
		var keys []int
		for _, op := range history {
			s := op.Input.(opInput).Session
			if _, ok := by[s]; !ok {
				keys = append(keys, s)
			}
			by[s] = append(by[s], op)
		}
		slices.Sort(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, by[k])
		}
		return out
	},
	Init: func() any { return sessionState{} },
	Step: func(state, input, output any) (bool, any) {
		return step(state.(sessionState), input.(opInput), output.(opOutput))
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(opInput), output.(opOutput)
		arg := ""
		switch in.Kind {
		case opAdd, opRemove:
			arg = fmt.Sprintf("t%d %s", in.Tag, in.RouteID)
		}
		res := out.Text
		switch {
		case out.Unknown:
			res = "unknown (" + out.Text + ")"
		case in.Kind == opList:
			res = fmt.Sprintf("active=[%s] staged=[%s]", encodeTags(out.Active), encodeTags(out.Staged))
		}
		return fmt.Sprintf("s%d %s(%s) -> %s", in.Session, in.Kind, arg, res)
	},
	DescribeState: func(state any) string {
		st := state.(sessionState)
		return fmt.Sprintf("active=[%s] staged=[%s]", st.A, st.E)
	},
}
