package proxy

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/raftgate/raftgate/fsm"
)

// Breaker states, as the protocol names them.
const (
	BreakerClosed   = "closed"
	BreakerOpen     = "open"
	BreakerHalfOpen = "half_open"
)

const (
	stClosed int32 = iota
	stOpen
	stHalfOpen
)

var stateNames = [...]string{BreakerClosed, BreakerOpen, BreakerHalfOpen}

// BreakerStatus is this node's view of one route's circuit breaker.
// LastFailure and NextAttempt are zero when there is none.
type BreakerStatus struct {
	State       string    `json:"state"`
	Failures    int       `json:"failures"`
	LastFailure time.Time `json:"last_failure"`
	NextAttempt time.Time `json:"next_attempt"`
}

// breaker is one route's circuit breaker on this node. The closed state,
// which is what nearly every request sees, is read with a single atomic
// load; transitions take the mutex.
type breaker struct {
	state    atomic.Int32
	failures atomic.Int64 // consecutive failures (closed state)

	mu          sync.Mutex
	cfg         fsm.CircuitBreaker
	lastFailure time.Time
	nextAttempt time.Time
	trials      int // trial requests admitted in this half-open period
	passes      int // trial requests that succeeded
}

func newBreaker(cfg fsm.CircuitBreaker) *breaker {
	return &breaker{cfg: cfg}
}

// configure applies a new configuration from a table; a changed
// ResetGeneration means CIRCUIT_BREAKER_RESET went through the log.
func (b *breaker) configure(cfg fsm.CircuitBreaker) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if cfg.ResetGeneration != b.cfg.ResetGeneration {
		b.closeLocked()
	}
	b.cfg = cfg
}

func (b *breaker) closeLocked() {
	b.state.Store(stClosed)
	b.failures.Store(0)
	b.trials, b.passes = 0, 0
	b.nextAttempt = time.Time{}
}

// allow reports whether a request may go to the backend now. In half-open
// it admits at most HalfOpenRequests trials; the caller must report the
// outcome of an admitted request through record. retry is how long until
// the breaker may admit again when it refuses.
func (b *breaker) allow(now time.Time) (ok bool, retry time.Duration) {
	if b.state.Load() == stClosed {
		return true, 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state.Load() {
	case stClosed:
		return true, 0
	case stOpen:
		if now.Before(b.nextAttempt) {
			return false, b.nextAttempt.Sub(now)
		}
		b.state.Store(stHalfOpen)
		b.trials, b.passes = 0, 0
	}
	if b.trials >= max(b.cfg.HalfOpenRequests, 1) {
		return false, time.Second
	}
	b.trials++
	return true, 0
}

// record feeds the outcome of one admitted request.
func (b *breaker) record(success bool, now time.Time) {
	if success && b.state.Load() == stClosed && b.failures.Load() == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state.Load() {
	case stClosed:
		if success {
			b.failures.Store(0)
			return
		}
		b.lastFailure = now
		if b.failures.Add(1) >= int64(max(b.cfg.Threshold, 1)) {
			b.openLocked(now)
		}
	case stHalfOpen:
		if !success {
			b.lastFailure = now
			b.failures.Add(1)
			b.openLocked(now)
			return
		}
		b.passes++
		if b.passes >= max(b.cfg.HalfOpenRequests, 1) {
			b.closeLocked()
		}
	case stOpen:
		// A request admitted before the breaker opened: it changes nothing.
		if !success {
			b.lastFailure = now
		}
	}
}

// release returns an admitted request that ended without a verdict (the
// client went away), so a half-open breaker does not wait for it forever.
func (b *breaker) release() {
	if b.state.Load() != stHalfOpen {
		return
	}
	b.mu.Lock()
	if b.state.Load() == stHalfOpen && b.trials > 0 {
		b.trials--
	}
	b.mu.Unlock()
}

func (b *breaker) openLocked(now time.Time) {
	b.state.Store(stOpen)
	b.nextAttempt = now.Add(time.Duration(b.cfg.Timeout))
	b.trials, b.passes = 0, 0
}

func (b *breaker) status() BreakerStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := BreakerStatus{
		State:       stateNames[b.state.Load()],
		Failures:    int(b.failures.Load()),
		LastFailure: b.lastFailure,
	}
	if b.state.Load() != stClosed {
		st.NextAttempt = b.nextAttempt
	}
	return st
}
