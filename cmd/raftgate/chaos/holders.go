package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
)

// holder keeps sessions attached on one long-lived connection, like a
// service process that registered several instances, and re-attaches all
// of them with RECONNECT on another node when its node dies or stops.
type holder struct {
	h        *harness
	sessions []string
	conn     *lineConn
	node     string
	rng      *rand.Rand
}

// idleSession is a session held by a holder, with the route it applied.
type idleSession struct {
	id     string
	domain string
	path   string
}

// registerHeld registers count sessions of service on conn, gives each the
// route domainFn(i) + path, and applies it, all pipelined.
func (h *harness) registerHeld(conn *lineConn, service, instPrefix string, count int, domainFn func(i int) string, path string) ([]idleSession, error) {
	const chunk = 200
	var out []idleSession
	for start := 0; start < count; start += chunk {
		end := min(start+chunk, count)
		var lines []string
		for i := start; i < end; i++ {
			lines = append(lines, fmt.Sprintf("REGISTER|%s|%s%d|0", service, instPrefix, i))
		}
		answers, err := conn.doMany(lines, 60*time.Second)
		if err != nil {
			return nil, fmt.Errorf("register %s sessions: %w", service, err)
		}
		batch := make([]idleSession, 0, end-start)
		for k, a := range answers {
			id, ok := strings.CutPrefix(a, "ACK|")
			if !ok {
				return nil, fmt.Errorf("REGISTER answered %q", a)
			}
			batch = append(batch, idleSession{id: id, domain: domainFn(start + k), path: path})
		}
		lines = lines[:0]
		for _, s := range batch {
			lines = append(lines, fmt.Sprintf("ROUTE_ADD|%s|%s|%s|%s|0", s.id, s.domain, s.path, h.backendURL))
		}
		for _, s := range batch {
			lines = append(lines, "CONFIG_APPLY|"+s.id)
		}
		answers, err = conn.doMany(lines, 60*time.Second)
		if err != nil {
			return nil, fmt.Errorf("add routes of %s sessions: %w", service, err)
		}
		for i, a := range answers {
			if (i < len(batch) && !strings.HasPrefix(a, "ROUTE_OK|")) || (i >= len(batch) && a != "OK") {
				return nil, fmt.Errorf("%s answered %q", strings.SplitN(lines[i], "|", 2)[0], a)
			}
		}
		out = append(out, batch...)
	}
	return out, nil
}

// run waits for the holder's connection to break and re-attaches every
// session elsewhere, until ctx ends.
func (ho *holder) run(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	for {
		ho.conn.waitClosed(ctx)
		ho.conn.close()
		if ctx.Err() != nil {
			return
		}
		lost := time.Now()
		if !ho.reattach(ctx) {
			return
		}
		ho.h.noteReattach(len(ho.sessions), time.Since(lost))
	}
}

// reattach sends RECONNECT for every session to another node until all
// are attached there.
func (ho *holder) reattach(ctx context.Context) bool {
	pending := ho.sessions
	for ctx.Err() == nil {
		n := ho.h.pickMember(ho.rng, ho.node)
		if n == nil {
			sleepCtx(ctx, 100*time.Millisecond)
			continue
		}
		c, err := dialLine(ctx, n.Control, time.Second)
		if err != nil {
			sleepCtx(ctx, 100*time.Millisecond)
			continue
		}
		lines := make([]string, len(pending))
		for i, s := range pending {
			lines[i] = "RECONNECT|" + s
		}
		answers, err := c.doMany(lines, 30*time.Second)
		var still []string
		for i, s := range pending {
			switch {
			case i < len(answers) && answers[i] == "OK":
			case i < len(answers) && answers[i] == "REREGISTER":
				ho.h.problem(fmt.Sprintf("live session %s expired: RECONNECT on %s answered REREGISTER", s, n.ID))
			default:
				still = append(still, s)
			}
		}
		if err != nil || len(still) > 0 {
			// Some did not make it (no leader yet, the node went away):
			// start over on a fresh connection, possibly elsewhere; the
			// ones already attached re-attach harmlessly.
			c.close()
			sleepCtx(ctx, 100*time.Millisecond)
			continue
		}
		ho.conn, ho.node = c, n.ID
		return true
	}
	return false
}

// checkHeld verifies, through a member, that every held session is alive
// and still has its one route active.
func (h *harness) checkHeld(ctx context.Context, sessions []idleSession) error {
	n := h.pickMember(rand.New(rand.NewPCG(uint64(h.cfg.Seed), 99)), "")
	if n == nil {
		return fmt.Errorf("no member to check held sessions on")
	}
	c, err := dialLine(ctx, n.Control, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.close()
	const chunk = 250
	for start := 0; start < len(sessions); start += chunk {
		batch := sessions[start:min(start+chunk, len(sessions))]
		var lines []string
		for _, s := range batch {
			lines = append(lines, "SESSION_INFO|"+s.id, "ROUTE_LIST|"+s.id)
		}
		answers, err := c.doMany(lines, 60*time.Second)
		if err != nil {
			return fmt.Errorf("check held sessions on %s: %w", n.ID, err)
		}
		for i, s := range batch {
			info, list := answers[2*i], answers[2*i+1]
			if !strings.HasPrefix(info, "SESSION_OK|") {
				h.problem(fmt.Sprintf("live session %s expired: SESSION_INFO answered %q", s.id, info))
				h.expiredHeld.Add(1)
				continue
			}
			rs, err := parseList(list)
			if err != nil || len(rs) != 1 || rs[0].Status != "active" || rs[0].Path != s.path {
				h.problem(fmt.Sprintf("held session %s lost its route: %q", s.id, list))
				continue
			}
			h.noteFinalRoute(rs[0].RouteID, s.id)
		}
	}
	return nil
}
