package chaos

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/raftgate/raftgate/cmd/raftgate/localcluster"
)

// check runs the round's checks once the workload has stopped: final reads
// on every node, linearizability, acknowledged-exactly-once, the tables the
// proxies serve, and convergence of the FSM snapshots.
func (r *round) check(ctx context.Context, rr *RoundReport) {
	h := r.h
	members := h.currentMembers()
	all := append(append([]*wsession(nil), r.sessions...), r.witness)
	final := r.finalReads(ctx, members, all)

	r.hist.mu.Lock()
	ops := append([]porcupine.Operation(nil), r.hist.ops...)
	r.hist.mu.Unlock()
	started := time.Now()
	res, info := porcupine.CheckOperationsVerbose(routeModel, ops, 90*time.Second)
	rr.CheckTime = time.Since(started)
	switch res {
	case porcupine.Ok:
		rr.Linearizable = "ok"
	case porcupine.Illegal:
		rr.Linearizable = "violation"
		rr.Violations++
		path := filepath.Join(h.dir, fmt.Sprintf("round-%d-linearizability.html", r.num))
		if err := porcupine.VisualizePath(routeModel, info, path); err != nil {
			path = "(could not write visualization: " + err.Error() + ")"
		}
		rr.Visualization = path
		r.hist.problem("history is not linearizable; visualization: " + path)
	default:
		rr.Linearizable = "inconclusive"
		r.hist.problem("linearizability check timed out (inconclusive)")
	}

	for _, s := range all {
		routes, ok := final[s]
		if !ok {
			continue
		}
		lost, dup := r.exactlyOnce(s, routes)
		rr.Lost += lost
		rr.Duplicated += dup
		for _, rt := range routes {
			h.noteFinalRoute(rt.RouteID, s.id)
		}
	}
	r.checkProxies(ctx, members, final)
	var err error
	rr.ConvergeTime, rr.AppliedIndex, err = h.converge(ctx, members)
	if err != nil {
		r.hist.problem(err.Error())
	}

	r.hist.mu.Lock()
	defer r.hist.mu.Unlock()
	rr.Ops = len(r.hist.ops)
	rr.Reads, rr.Writes = r.hist.reads, r.hist.writes
	rr.Acked, rr.Unknown, rr.Failed = r.hist.acked, r.hist.unknown, r.hist.failed
	rr.StaleChecks, rr.StaleReads, rr.IsolatedAcks = r.hist.staleChecks, r.hist.staleReads, r.hist.isolatedAcks
	rr.Problems = append(rr.Problems, r.hist.problems...)
}

// finalReads reads every session's routes on every member, records the
// reads in the history and checks that all nodes answer the same. It
// returns what the first node answered, per session.
func (r *round) finalReads(ctx context.Context, members []*localcluster.Node, sessions []*wsession) map[*wsession][]listRoute {
	out := map[*wsession][]listRoute{}
	for k, n := range members {
		c, err := dialLine(ctx, n.Control, 2*time.Second)
		if err != nil {
			r.hist.problem(fmt.Sprintf("final read on %s: %v", n.ID, err))
			continue
		}
		for _, s := range sessions {
			s.mu.Lock()
			gone := s.expired
			s.mu.Unlock()
			if gone {
				continue
			}
			call := r.hist.now()
			resp, err := c.do("ROUTE_LIST|"+s.id, 30*time.Second)
			ret := r.hist.now()
			if err != nil || !strings.HasPrefix(resp, "ROUTE_LIST_OK|") {
				r.hist.problem(fmt.Sprintf("final ROUTE_LIST of %s on %s: %q %v", s.id, n.ID, resp, err))
				if err != nil {
					break
				}
				continue
			}
			r.finish(s, r.witnessClient()+1+k, opInput{Session: s.idx, Kind: opList}, call, ret, resp, nil)
			rs, _ := parseList(resp)
			if prev, ok := out[s]; !ok {
				out[s] = rs
			} else if !sameRoutes(prev, rs) {
				r.hist.problem(fmt.Sprintf("session %s: %s shows %s, %s shows %s", s.id, members[0].ID, describeRoutes(prev), n.ID, describeRoutes(rs)))
			}
		}
		c.close()
	}
	return out
}

func sameRoutes(a, b []listRoute) bool {
	return describeRoutes(a) == describeRoutes(b)
}

func describeRoutes(rs []listRoute) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = r.RouteID + ":" + r.Path + ":" + r.Status
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// exactlyOnce counts acknowledged adds missing from the final table (and
// never targeted by a removal) and routes that appear more than once.
func (r *round) exactlyOnce(s *wsession, routes []listRoute) (lost, dup int) {
	seen := map[int]int{}
	for _, rt := range routes {
		if tag, ok := routeTag(rt.Path); ok {
			seen[tag]++
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var tags []int
	for tag := range seen {
		tags = append(tags, tag)
	}
	slices.Sort(tags)
	for _, tag := range tags {
		if seen[tag] > 1 {
			dup += seen[tag] - 1
			r.hist.problem(fmt.Sprintf("session %s: route /t%d appears %d times", s.id, tag, seen[tag]))
		}
	}
	tags = tags[:0]
	for tag := range s.ackedAdds {
		tags = append(tags, tag)
	}
	slices.Sort(tags)
	for _, tag := range tags {
		if !s.removeTried[tag] && seen[tag] == 0 {
			lost++
			r.hist.problem(fmt.Sprintf("lost write: session %s: acknowledged ROUTE_ADD /t%d (%s) is not in the final table", s.id, tag, s.ackedAdds[tag]))
		}
	}
	return lost, dup
}

// checkProxies sends requests for a few active routes of every session
// through every member's proxy: each must reach the backend on its path.
func (r *round) checkProxies(ctx context.Context, members []*localcluster.Node, final map[*wsession][]listRoute) {
	client := newProbeClient()
	defer client.CloseIdleConnections()
	for s, routes := range final {
		checked := 0
		for _, rt := range routes {
			if rt.Status == "staged" || checked == 2 {
				continue
			}
			checked++
			for _, n := range members {
				// The proxy may trail the answering node by a moment
				// (each node applies on its own); poll briefly.
				var err error
				poll(ctx, 5*time.Second, 50*time.Millisecond, func() bool {
					err = probeOnce(ctx, client, n.Proxy, s.domain, rt.Path)
					return err == nil
				})
				if err != nil {
					r.hist.problem(fmt.Sprintf("proxy of %s does not serve %s%s (%s): %v", n.ID, s.domain, rt.Path, rt.RouteID, err))
				}
			}
		}
	}
}

// converge polls every member's /v1/fsm until all report the same applied
// index and the same snapshot digest, and returns how long that took and
// the index.
func (h *harness) converge(ctx context.Context, members []*localcluster.Node) (time.Duration, uint64, error) {
	start := time.Now()
	var last []localcluster.Digest
	var index uint64
	ok := poll(ctx, 30*time.Second, 50*time.Millisecond, func() bool {
		ds := make([]localcluster.Digest, len(members))
		errs := make([]error, len(members))
		var wg sync.WaitGroup
		for i, n := range members {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ds[i], errs[i] = n.Digest(ctx)
			}()
		}
		wg.Wait()
		last = ds
		for i := range ds {
			if errs[i] != nil || ds[i].AppliedIndex != ds[0].AppliedIndex || ds[i].SHA256 != ds[0].SHA256 {
				return false
			}
		}
		index = ds[0].AppliedIndex
		return true
	})
	took := time.Since(start)
	if !ok {
		var parts []string
		for _, d := range last {
			parts = append(parts, fmt.Sprintf("%s@%d=%.12s", d.Node, d.AppliedIndex, d.SHA256))
		}
		return took, 0, fmt.Errorf("FSM snapshots did not converge within 30s: %s", strings.Join(parts, " "))
	}
	return took, index, nil
}
