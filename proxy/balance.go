package proxy

import (
	"hash/maphash"
	"math/rand/v2"
	"net/netip"
	"time"
)

type lbPolicy uint8

const (
	lbRoundRobin lbPolicy = iota
	lbLeastConn
	lbIPHash
	lbRandom
)

func parsePolicy(s string) lbPolicy {
	switch s {
	case "least_conn":
		return lbLeastConn
	case "ip_hash":
		return lbIPHash
	case "random":
		return lbRandom
	}
	return lbRoundRobin
}

var ipHashSeed = maphash.MakeSeed()

// refusal says why a pool had no member to offer.
type refusal struct {
	breakerOpen bool
	retry       time.Duration // breaker: until the next trial
	unhealthy   bool
	draining    bool
}

// pick chooses the member for one request. It walks the members in the
// order the pool's policy prefers and takes the first available one:
// healthy, admitted by its breaker, and, when its session drains, kept with
// probability equal to its traffic share (so a draining session loses that
// fraction of its requests to the others, or to a 503 when it is alone).
// Members in maintenance serve only when no other member can. skip is a
// bit set of member indexes already tried (retries); the breaker of the
// returned member has admitted the request.
func (pl *pool) pick(ip netip.Addr, now time.Time, skip uint64) (*routeCfg, int, refusal) {
	ms := pl.members
	n := len(ms)
	var ref refusal
	if n == 0 {
		return nil, 0, ref
	}
	start := 0
	switch pl.policy {
	case lbRoundRobin:
		start = int((pl.rr.Add(1) - 1) % uint64(n))
	case lbRandom:
		start = rand.IntN(n)
	case lbIPHash:
		a := ip.As16()
		start = int(maphash.Bytes(ipHashSeed, a[:]) % uint64(n))
	case lbLeastConn:
		start = leastConn(ms, skip, int((pl.rr.Add(1)-1)%uint64(n)))
	}
	if pl.plain {
		for i := range n {
			j := (start + i) % n
			if skip&(1<<(j&63)) == 0 {
				return ms[j], j, ref
			}
		}
		return nil, 0, ref
	}
	unix := now.UnixNano()
	var maint *routeCfg
	maintIdx := 0
	for i := range n {
		j := (start + i) % n
		m := ms[j]
		if skip&(1<<(j&63)) != 0 {
			continue
		}
		if m.maint {
			if maint == nil {
				maint, maintIdx = m, j
			}
			continue
		}
		if m.health != nil && !m.health.healthy.Load() {
			ref.unhealthy = true
			continue
		}
		if m.drain != nil {
			share := m.drain.TrafficShare(unix)
			if share <= 0 || (share < 1 && rand.Float64() >= share) {
				ref.draining = true
				continue
			}
		}
		if m.brk != nil {
			if ok, retry := m.brk.allow(now); !ok {
				if !ref.breakerOpen || retry < ref.retry {
					ref.retry = retry
				}
				ref.breakerOpen = true
				continue
			}
		}
		return m, j, ref
	}
	if maint != nil {
		return maint, maintIdx, ref
	}
	return nil, 0, ref
}

// leastConn is the index of the member with the fewest requests in flight
// on this node; ties go to the first one at or after from, so equal members
// still rotate.
func leastConn(ms []*routeCfg, skip uint64, from int) int {
	n := len(ms)
	best, bestN := from, int64(-1)
	for i := range n {
		j := (from + i) % n
		if skip&(1<<(j&63)) != 0 {
			continue
		}
		c := ms[j].rs.inflight.Load()
		if bestN < 0 || c < bestN {
			best, bestN = j, c
		}
	}
	return best
}
