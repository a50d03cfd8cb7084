package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// wsession is one workload session and what the harness knows about its
// routes.
type wsession struct {
	idx    int // unique over the run; the model's partition key
	id     string
	domain string

	mu          sync.Mutex
	nextTag     int
	ids         map[int]string // tag -> route ID, from acks and reads
	ackedAdds   map[int]string
	removeTried map[int]bool
	expired     bool
}

func newWSession(idx int, id, domain string) *wsession {
	return &wsession{idx: idx, id: id, domain: domain, ids: map[int]string{}, ackedAdds: map[int]string{}, removeTried: map[int]bool{}}
}

func (s *wsession) newTag() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextTag++
	return s.nextTag
}

// learn notes the route ID of a tag and reports a mismatch with what was
// known: one route, one ID, forever.
func (s *wsession) learn(tag int, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.ids[tag]; ok && old != id {
		return fmt.Errorf("session %s: route /t%d was %s and is now %s", s.id, tag, old, id)
	}
	s.ids[tag] = id
	return nil
}

// pickRemoval returns a known route to remove, or false.
func (s *wsession) pickRemoval(rng *rand.Rand) (int, string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.ids) == 0 {
		return 0, "", false
	}
	// Map order is random but not seeded; pick by sorted position.
	tags := make([]int, 0, len(s.ids))
	for t := range s.ids {
		tags = append(tags, t)
	}
	slices.Sort(tags)
	t := tags[rng.IntN(len(tags))]
	s.removeTried[t] = true
	return t, s.ids[t], true
}

// liveRoutes counts the known routes not yet removed.
func (s *wsession) liveRoutes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for t := range s.ids {
		if !s.removeTried[t] {
			n++
		}
	}
	return n
}

// listRoute is the part of a ROUTE_LIST element the harness reads.
type listRoute struct {
	RouteID string   `json:"route_id"`
	Path    string   `json:"path"`
	Status  string   `json:"status"`
	Domains []string `json:"domains"`
}

// parseList turns a ROUTE_LIST_OK answer into routes.
func parseList(resp string) ([]listRoute, error) {
	payload, ok := strings.CutPrefix(resp, "ROUTE_LIST_OK|")
	if !ok {
		return nil, fmt.Errorf("unexpected answer: %s", resp)
	}
	var rs []listRoute
	if err := json.Unmarshal([]byte(payload), &rs); err != nil {
		return nil, fmt.Errorf("decode ROUTE_LIST: %w", err)
	}
	return rs, nil
}

// routeTag reads the tag out of a workload route's path (/t<tag>).
func routeTag(path string) (int, bool) {
	n, err := strconv.Atoi(strings.TrimPrefix(path, "/t"))
	return n, err == nil && strings.HasPrefix(path, "/t")
}

// listOutput turns routes into the model's view.
func listOutput(rs []listRoute) (opOutput, error) {
	var out opOutput
	for _, r := range rs {
		tag, ok := routeTag(r.Path)
		if !ok {
			return out, fmt.Errorf("route %s has a path the workload never used: %q", r.RouteID, r.Path)
		}
		switch r.Status {
		case "active":
			out.Active = append(out.Active, tag)
			out.Staged = append(out.Staged, tag)
		case "pending_removal":
			out.Active = append(out.Active, tag)
		case "staged":
			out.Staged = append(out.Staged, tag)
		default:
			return out, fmt.Errorf("route %s has status %q", r.RouteID, r.Status)
		}
	}
	return out, nil
}

// outcome classifies an answer.
type outcome int

const (
	outOK outcome = iota
	outUnknown
	outNotFound
	outFailed
	outExpired
)

// classify sorts an answer (or a connection failure) into an outcome.
// Cluster trouble is "unknown": a write that met no leader, a timeout or a
// lost leadership may still have been committed.
func classify(resp string, err error) outcome {
	if err != nil {
		return outUnknown
	}
	msg, isErr := strings.CutPrefix(resp, "ERROR|")
	if !isErr {
		return outOK
	}
	switch {
	case msg == "session not found":
		return outExpired
	case msg == "route not found":
		return outNotFound
	case strings.HasPrefix(msg, "no leader"), strings.HasPrefix(msg, "timeout"),
		strings.HasPrefix(msg, "node is shutting down"), strings.HasPrefix(msg, "cluster unavailable"):
		return outUnknown
	}
	return outFailed
}

// worker drives one connection of a session.
type worker struct {
	r      *round
	s      *wsession
	owner  bool // the owner registered the session and re-attaches it
	client int
	rng    *rand.Rand
	conn   *lineConn
	last   string // node ID of the previous connection
}

// connect opens a connection to a random member, preferably not the last
// one; the owner re-attaches its session there.
func (w *worker) connect(ctx context.Context) bool {
	n := w.r.h.pickMember(w.rng, w.last)
	if n == nil {
		return false
	}
	c, err := dialLine(ctx, n.Control, time.Second)
	if err != nil {
		return false
	}
	if w.owner {
		resp, err := c.do("RECONNECT|"+w.s.id, w.r.h.cfg.OpTimeout)
		switch {
		case err == nil && resp == "OK":
			w.r.h.reattached.Add(1)
		case err == nil && resp == "REREGISTER":
			c.close()
			w.expired("RECONNECT answered REREGISTER on " + n.ID)
			return false
		default:
			c.close()
			return false
		}
	}
	w.conn, w.last = c, n.ID
	return true
}

func (w *worker) expired(how string) {
	w.s.mu.Lock()
	first := !w.s.expired
	w.s.expired = true
	w.s.mu.Unlock()
	if first {
		w.r.hist.problem(fmt.Sprintf("live session %s expired: %s", w.s.id, how))
	}
}

// run issues commands until ctx ends.
func (w *worker) run(ctx context.Context) {
	defer func() { w.conn.close() }()
	for ctx.Err() == nil {
		w.s.mu.Lock()
		gone := w.s.expired
		w.s.mu.Unlock()
		if gone {
			return
		}
		if w.conn == nil && !w.connect(ctx) {
			sleepCtx(ctx, 50*time.Millisecond)
			continue
		}
		w.step()
		sleepCtx(ctx, time.Duration(w.rng.IntN(10))*time.Millisecond)
	}
}

// step runs one randomly chosen command.
func (w *worker) step() {
	p := w.rng.Float64()
	switch {
	case p < 0.03:
		// A client moving to another node: the owner re-attaches there.
		w.conn.close()
		w.conn = nil
		return
	case p < 0.33 && w.s.liveRoutes() < 30:
		w.exec(opAdd)
	case p < 0.48:
		w.exec(opRemove)
	case p < 0.65:
		w.exec(opApply)
	default:
		w.exec(opList)
	}
}

// exec sends one command on the worker's connection and records it.
func (w *worker) exec(kind opKind) {
	in := opInput{Session: w.s.idx, Kind: kind}
	var line string
	switch kind {
	case opAdd:
		in.Tag = w.s.newTag()
		line = fmt.Sprintf("ROUTE_ADD|%s|%s|/t%d|%s|0", w.s.id, w.s.domain, in.Tag, w.r.h.backendURL)
	case opRemove:
		tag, id, ok := w.s.pickRemoval(w.rng)
		if !ok {
			kind, in.Kind = opList, opList
			line = "ROUTE_LIST|" + w.s.id
			break
		}
		in.Tag, in.RouteID = tag, id
		line = fmt.Sprintf("ROUTE_REMOVE|%s|%s", w.s.id, id)
	case opApply:
		line = "CONFIG_APPLY|" + w.s.id
	case opList:
		line = "ROUTE_LIST|" + w.s.id
	}
	call := w.r.hist.now()
	resp, err := w.conn.do(line, w.r.h.cfg.OpTimeout)
	ret := w.r.hist.now()
	if err != nil || w.conn.shutdown {
		w.conn.close()
		w.conn = nil
	}
	w.r.finish(w.s, w.client, in, call, ret, resp, err)
}

// finish classifies an answer and records the operation.
func (r *round) finish(s *wsession, client int, in opInput, call, ret int64, resp string, err error) {
	out := opOutput{Text: resp}
	if err != nil {
		out.Text = err.Error()
	}
	switch classify(resp, err) {
	case outExpired:
		s.mu.Lock()
		first := !s.expired
		s.expired = true
		s.mu.Unlock()
		if first {
			r.hist.problem(fmt.Sprintf("live session %s expired: %s answered session not found", s.id, in.Kind))
		}
		return
	case outUnknown:
		if in.Kind == opList {
			return // a read that failed tells nothing
		}
		out.Unknown = true
	case outNotFound:
		out.NotFound = true
	case outFailed:
		out.Failed = true
		r.hist.problem(fmt.Sprintf("session %s: %s answered %q", s.id, in.Kind, resp))
	case outOK:
		switch in.Kind {
		case opAdd:
			id, ok := strings.CutPrefix(resp, "ROUTE_OK|")
			if !ok {
				r.hist.problem(fmt.Sprintf("session %s: ROUTE_ADD answered %q", s.id, resp))
				out.Unknown = true
				break
			}
			in.RouteID = id
			if err := s.learn(in.Tag, id); err != nil {
				r.hist.problem(err.Error())
			}
			s.mu.Lock()
			s.ackedAdds[in.Tag] = id
			s.mu.Unlock()
		case opList:
			rs, perr := parseList(resp)
			if perr == nil {
				out2, lerr := listOutput(rs)
				perr = lerr
				out2.Text = out.Text
				out = out2
				for _, rt := range rs {
					if tag, ok := routeTag(rt.Path); ok {
						if err := s.learn(tag, rt.RouteID); err != nil {
							r.hist.problem(err.Error())
						}
					}
				}
			}
			if perr != nil {
				r.hist.problem(fmt.Sprintf("session %s: %v", s.id, perr))
				return
			}
		default:
			if resp != "ROUTE_OK" && resp != "OK" {
				r.hist.problem(fmt.Sprintf("session %s: %s answered %q", s.id, in.Kind, resp))
			}
		}
	}
	r.hist.record(client, in, call, ret, out)
}

func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
