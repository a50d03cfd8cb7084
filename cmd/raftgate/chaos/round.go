package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/raftgate/raftgate/cmd/raftgate/localcluster"
)

// round is one seeded workload with its faults and its own checks.
type round struct {
	h        *harness
	num      int
	seed     int64
	hist     *history
	sessions []*wsession
	witness  *wsession
}

// witnessClient is the porcupine client ID of the harness's own probes.
func (r *round) witnessClient() int { return 2 * len(r.sessions) }

// register creates a session through a random member, retrying on other
// nodes while the cluster settles.
func (r *round) register(ctx context.Context, rng *rand.Rand, service, instance string) (*lineConn, string, error) {
	var last error
	var conn *lineConn
	var sid string
	ok := poll(ctx, 30*time.Second, 100*time.Millisecond, func() bool {
		n := r.h.pickMember(rng, "")
		c, err := dialLine(ctx, n.Control, time.Second)
		if err != nil {
			last = err
			return false
		}
		resp, err := c.do(fmt.Sprintf("REGISTER|%s|%s|0", service, instance), r.h.cfg.OpTimeout)
		if id, ok := strings.CutPrefix(resp, "ACK|"); err == nil && ok {
			conn, sid = c, id
			return true
		}
		c.close()
		last = fmt.Errorf("REGISTER on %s: %q %v", n.ID, resp, err)
		return false
	})
	if !ok {
		return nil, "", fmt.Errorf("register %s/%s: %v", service, instance, last)
	}
	return conn, sid, nil
}

func (r *round) run(ctx context.Context) (RoundReport, error) {
	h := r.h
	rng := rand.New(rand.NewPCG(uint64(r.seed), 0x5eed))
	r.hist = newHistory(time.Now())
	rr := RoundReport{Round: r.num, Seed: r.seed}
	service := fmt.Sprintf("chaos-r%d", r.num)
	type start struct {
		s    *wsession
		conn *lineConn
	}
	var starts []start
	for i := range h.cfg.Clients {
		c, id, err := r.register(ctx, rng, service, fmt.Sprintf("c%d", i))
		if err != nil {
			for _, s := range starts {
				s.conn.close()
			}
			return rr, err
		}
		s := newWSession(r.num*1000+i, id, fmt.Sprintf("r%d-c%d.chaos.test", r.num, i))
		r.sessions = append(r.sessions, s)
		starts = append(starts, start{s, c})
	}
	wc, wid, err := r.register(ctx, rng, service, "witness")
	if err != nil {
		for _, s := range starts {
			s.conn.close()
		}
		return rr, err
	}
	wc.close() // detached on purpose: a detached session must live too
	r.witness = newWSession(r.num*1000+999, wid, fmt.Sprintf("r%d-witness.chaos.test", r.num))

	wctx, stopWorkers := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i, st := range starts {
		for k := range 2 {
			w := &worker{r: r, s: st.s, owner: k == 0, client: 2*i + k,
				rng: rand.New(rand.NewPCG(uint64(r.seed), uint64(2*i+k+1)))}
			if k == 0 {
				w.conn = st.conn
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				w.run(wctx)
			}()
		}
	}

	scenarios := h.cfg.Scenarios
	slot := h.cfg.Duration / time.Duration(len(scenarios))
	roundStart := time.Now()
	lastRecovered := roundStart
	for i, sc := range scenarios {
		sleepCtx(ctx, time.Until(roundStart.Add(time.Duration(i)*slot+slot/4)))
		if ctx.Err() != nil {
			break
		}
		fr := r.inject(ctx, sc, rng)
		rr.Faults = append(rr.Faults, fr)
		lastRecovered = time.Now()
	}
	// Let the workload run on after the last fault, so the checker sees
	// the cluster working again, not only failing.
	sleepCtx(ctx, max(time.Until(roundStart.Add(h.cfg.Duration)), time.Until(lastRecovered.Add(slot/4))))
	stopWorkers()
	wg.Wait()
	if ctx.Err() != nil {
		return rr, errStopped
	}
	acks := r.hist.acks()
	for i := range rr.Faults {
		f := &rr.Faults[i]
		f.Unavailability = unavailability(acks, f.Start, f.Recovered)
	}
	r.check(ctx, &rr)
	return rr, nil
}

// isolatedTimeout bounds the witness's commands on an isolated old leader:
// long enough for it to notice it lost leadership (its lease is far
// shorter), short enough to keep the scenario brisk.
const isolatedTimeout = 2 * time.Second

// witnessIsolated checks, while oldLeader is cut off in a minority and
// newLeader leads the majority, that the old leader serves no stale read
// and that whatever it acknowledges is not lost (the final checks look for
// every acknowledged write). Its operations go into the history too, so
// the linearizability checker judges them with everything else.
func (r *round) witnessIsolated(ctx context.Context, oldLeader, newLeader *localcluster.Node) {
	s := r.witness
	// A write acknowledged by the majority...
	tag := s.newTag()
	added := poll(ctx, 10*time.Second, 50*time.Millisecond, func() bool {
		resp, err := r.witnessOp(ctx, newLeader, opInput{Session: s.idx, Kind: opAdd, Tag: tag}, 5*time.Second)
		if err == nil && strings.HasPrefix(resp, "ROUTE_OK|") {
			return true
		}
		tag = s.newTag() // an unknown outcome must not be reused
		return false
	})
	applied := added && poll(ctx, 10*time.Second, 50*time.Millisecond, func() bool {
		resp, err := r.witnessOp(ctx, newLeader, opInput{Session: s.idx, Kind: opApply}, 5*time.Second)
		return err == nil && resp == "OK"
	})
	if !applied {
		r.hist.problem(fmt.Sprintf("witness: the majority led by %s acknowledged no write while %s was isolated", newLeader.ID, oldLeader.ID))
		return
	}
	// ...must be in any read the isolated old leader answers, and a write
	// sent to it must not be acknowledged (if it is, the final checks make
	// sure it survived). Both at once: each may take the full timeout.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		resp, err := r.witnessOp(ctx, oldLeader, opInput{Session: s.idx, Kind: opAdd, Tag: s.newTag()}, isolatedTimeout)
		if err == nil && strings.HasPrefix(resp, "ROUTE_OK|") {
			r.hist.mu.Lock()
			r.hist.isolatedAcks++
			r.hist.mu.Unlock()
		}
	}()
	defer wg.Wait()
	resp, err := r.witnessOp(ctx, oldLeader, opInput{Session: s.idx, Kind: opList}, isolatedTimeout)
	r.hist.mu.Lock()
	r.hist.staleChecks++
	r.hist.mu.Unlock()
	if err != nil || !strings.HasPrefix(resp, "ROUTE_LIST_OK|") {
		return // refused or timed out: what an isolated node must do
	}
	// The concurrent add may or may not be in the answer; the majority's
	// route must be, and active.
	rs, perr := parseList(resp)
	seen := false
	for _, rt := range rs {
		if t, ok := routeTag(rt.Path); ok && t == tag && rt.Status == "active" {
			seen = true
		}
	}
	if perr != nil || !seen {
		r.hist.mu.Lock()
		r.hist.staleReads++
		r.hist.mu.Unlock()
		r.hist.problem(fmt.Sprintf("stale read: isolated old leader %s answered ROUTE_LIST without /t%d, acknowledged by the majority: %s", oldLeader.ID, tag, resp))
	}
}

// witnessOp runs one operation of the witness session on n over a fresh
// connection and records it.
func (r *round) witnessOp(ctx context.Context, n *localcluster.Node, in opInput, timeout time.Duration) (string, error) {
	s := r.witness
	var line string
	switch in.Kind {
	case opAdd:
		line = fmt.Sprintf("ROUTE_ADD|%s|%s|/t%d|%s|0", s.id, s.domain, in.Tag, r.h.backendURL)
	case opApply:
		line = "CONFIG_APPLY|" + s.id
	case opList:
		line = "ROUTE_LIST|" + s.id
	default:
		return "", fmt.Errorf("witness: unsupported %s", in.Kind)
	}
	c, err := dialLine(ctx, n.Control, time.Second)
	if err != nil {
		// Never sent: nothing to record.
		return "", err
	}
	defer c.close()
	call := r.hist.now()
	resp, err := c.do(line, timeout)
	ret := r.hist.now()
	r.finish(s, r.witnessClient(), in, call, ret, resp, err)
	return resp, err
}
