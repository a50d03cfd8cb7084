package proxy

import (
	"hash/maphash"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// ipBudget is the node-wide cap on client IPs tracked by all limiters.
type ipBudget struct {
	max     int64
	tracked atomic.Int64
	capHits atomic.Int64 // new IPs that found the budget exhausted
}

const limiterShards = 32

// bucket is one client's token bucket: tokens left at time last (Unix ns).
type bucket struct {
	tokens float64
	last   int64
}

type limiterShard struct {
	mu        sync.Mutex
	m         map[netip.Addr]bucket
	lastSweep int64
	_         [32]byte // keep hot shards on separate cache lines
}

// limiter is one route's per-client-IP token bucket limiter on this node:
// Requests per Window with a burst of Requests. When the node's IP budget
// is exhausted, clients it cannot track share one overflow bucket, so a
// flood of spoofed sources is limited as a whole instead of growing memory
// or passing unlimited.
type limiter struct {
	requests float64
	window   time.Duration
	budget   *ipBudget
	seed     maphash.Seed
	shards   [limiterShards]limiterShard
	overflow limiterShard // m unused; its bucket is ob
	ob       bucket
	obInit   bool
	dead     atomic.Bool // released: requests still in the old table pass untracked
}

func newLimiter(requests int, window time.Duration, budget *ipBudget) *limiter {
	if window <= 0 {
		window = time.Second
	}
	l := &limiter{requests: float64(requests), window: window, budget: budget, seed: maphash.MakeSeed()}
	for i := range l.shards {
		l.shards[i].m = make(map[netip.Addr]bucket)
	}
	return l
}

// allow takes one token for ip at now. share (0..1] scales the rate and the
// burst (cluster scope: this node's share of the configured limit). When it
// refuses, retry is how long until a token is available.
func (l *limiter) allow(ip netip.Addr, now int64, share float64) (ok bool, retry time.Duration) {
	if l.dead.Load() {
		return true, 0
	}
	burst := max(l.requests*share, 1)
	rate := burst / float64(l.window) // tokens per nanosecond
	a16 := ip.As16()
	sh := &l.shards[maphash.Bytes(l.seed, a16[:])%limiterShards]
	sh.mu.Lock()
	b, found := sh.m[ip]
	if !found && sh.m == nil {
		sh.mu.Unlock()
		return true, 0
	}
	if !found {
		if l.budget.tracked.Load() >= l.budget.max {
			l.sweepLocked(sh, now)
		}
		if l.budget.tracked.Load() >= l.budget.max {
			sh.mu.Unlock()
			l.budget.capHits.Add(1)
			return l.allowOverflow(now, burst, rate)
		}
		l.budget.tracked.Add(1)
		b = bucket{tokens: burst, last: now}
	}
	ok, retry = take(&b, now, burst, rate)
	sh.m[ip] = b
	sh.mu.Unlock()
	return ok, retry
}

func (l *limiter) allowOverflow(now int64, burst, rate float64) (bool, time.Duration) {
	l.overflow.mu.Lock()
	defer l.overflow.mu.Unlock()
	if !l.obInit {
		l.ob, l.obInit = bucket{tokens: burst, last: now}, true
	}
	return take(&l.ob, now, burst, rate)
}

func take(b *bucket, now int64, burst, rate float64) (bool, time.Duration) {
	if el := now - b.last; el > 0 {
		b.tokens = min(burst, b.tokens+float64(el)*rate)
		b.last = now
	}
	if b.tokens > burst {
		b.tokens = burst // the share shrank (more live nodes)
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration(math.Ceil((1 - b.tokens) / rate))
}

// sweepLocked drops buckets idle for a whole window: they have refilled to
// the burst, so forgetting them changes no decision. At most once per
// second per shard, so a flood of new IPs cannot make every request scan.
func (l *limiter) sweepLocked(sh *limiterShard, now int64) {
	if now-sh.lastSweep < int64(time.Second) {
		return
	}
	sh.lastSweep = now
	idle := int64(l.window)
	for ip, b := range sh.m {
		if now-b.last >= idle {
			delete(sh.m, ip)
			l.budget.tracked.Add(-1)
		}
	}
}

// sweep expires idle buckets in every shard.
func (l *limiter) sweep(now int64) {
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		sh.lastSweep = 0
		l.sweepLocked(sh, now)
		sh.mu.Unlock()
	}
}

// release forgets every bucket (the limiter was replaced or removed) and
// returns them to the node's budget.
func (l *limiter) release() {
	l.dead.Store(true)
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		l.budget.tracked.Add(-int64(len(sh.m)))
		sh.m = nil
		sh.mu.Unlock()
	}
}

// retryAfterSeconds renders a wait as a Retry-After value: whole seconds,
// at least 1.
func retryAfterSeconds(d time.Duration) int {
	s := int(math.Ceil(d.Seconds()))
	return max(s, 1)
}
