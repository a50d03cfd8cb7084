package client

import (
	"encoding/json"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// eventQueueLen is how many handler invocations may wait for the handler
// goroutine before further ones are dropped. Dropping (with a log line) is
// preferred to blocking the reader, which would stall every response.
const eventQueueLen = 4096

// abandonedMaintTTL is how long a maintenance wait whose caller gave up is
// kept to absorb its own MAINT_OK; twice the server's 60 s maintenance
// timeout, after which that line can no longer come.
const abandonedMaintTTL = 2 * time.Minute

// handleAsync recognizes the lines that are not responses and consumes
// them; it runs on the connection's reader goroutine.
//
// Disambiguation: responses and asynchronous lines share one stream, so an
// asynchronous line must be recognizable by its text alone. EVENT|...,
// MAINT_OK|... and SHUTDOWN are never response codes (CLIENT_SHUTDOWN
// answers SHUTDOWN_OK). The maintenance timeout is an ERROR line, which is
// also how any command fails; it is recognized by its exact, complete text
// "ERROR|timeout waiting for maintenance page to become reachable", which no
// command answers synchronously, so it is treated as asynchronous even when
// commands are waiting for responses.
func (c *Client) handleAsync(cn *conn, line string) bool {
	switch {
	case strings.HasPrefix(line, "EVENT|"):
		typ, data, _ := strings.Cut(line[len("EVENT|"):], "|")
		ev := Event{Type: typ}
		if data != "" {
			ev.Data = json.RawMessage(data)
		}
		c.mu.Lock()
		handlers := append([]func(Event){}, c.onEvent...)
		c.mu.Unlock()
		if len(handlers) > 0 {
			c.post(func() {
				for _, fn := range handlers {
					fn(ev)
				}
			})
		}
	case line == "MAINT_OK" || strings.HasPrefix(line, "MAINT_OK|"):
		_, target, _ := strings.Cut(line, "|")
		c.maintArrived(MaintNotice{Target: target})
	case line == "SHUTDOWN":
		c.nodeShutdown(cn)
	case line == "ERROR|"+maintTimeoutMsg:
		c.maintArrived(MaintNotice{Err: &ServerError{Msg: maintTimeoutMsg}})
	default:
		return false
	}
	return true
}

// post queues a handler invocation without ever blocking the reader.
func (c *Client) post(fn func()) {
	select {
	case c.events <- fn:
	default:
		c.log.Warn("raftgate client: handlers too slow, asynchronous line dropped", "queue", eventQueueLen)
	}
}

// dispatchEvents runs queued handler invocations in order until Close.
func (c *Client) dispatchEvents() {
	for {
		select {
		case fn := <-c.events:
			fn()
		case <-c.ctx.Done():
			return
		}
	}
}

// maintWait is a MaintEnter or MaintExit call waiting for its MAINT_OK.
type maintWait struct {
	target    string
	since     time.Time
	ch        chan error // one result, buffered
	once      sync.Once
	abandoned atomic.Bool
}

func newMaintWait(target string) *maintWait {
	return &maintWait{target: target, ch: make(chan error, 1)}
}

func (mw *maintWait) finish(err error) {
	mw.once.Do(func() { mw.ch <- err })
}

// addMaint starts waiting for mw's MAINT_OK. It runs on the reader
// goroutine right after the ACK, before the next line can be read, so the
// MAINT_OK cannot slip past. session is the one the command was sent for.
func (c *Client) addMaint(mw *maintWait, session string) {
	mw.since = time.Now()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		mw.finish(ErrClosed)
		return
	}
	if c.session != session {
		// An ACK read on a connection retiring after SHUTDOWN, after
		// failover already replaced the expired session: its MAINT_OK
		// went with the old session.
		c.mu.Unlock()
		mw.finish(ErrSessionLost)
		return
	}
	kept := c.maint[:0]
	for _, w := range c.maint {
		if !w.abandoned.Load() || time.Since(w.since) < abandonedMaintTTL {
			kept = append(kept, w)
		}
	}
	clear(c.maint[len(kept):])
	c.maint = append(kept, mw)
	c.mu.Unlock()
}

// maintArrived completes the maintenance wait that n belongs to and tells
// the OnMaintenance handlers.
//
// MAINT_OK names its target (echoed as sent): it completes the oldest wait
// for exactly that target, or, when none matches, the oldest wait. The
// timeout line names no target: it completes the oldest wait. That is
// exact, not a guess: the node gives every wait the same timeout from its
// ACK, so when one times out every older wait has already ended, and the
// list is kept in ACK order. Waits whose caller gave up stay in the list for
// a while so that their own line does not complete a newer wait.
func (c *Client) maintArrived(n MaintNotice) {
	c.mu.Lock()
	idx := -1
	for i, w := range c.maint {
		if n.Err != nil || w.target == n.Target {
			idx = i
			break
		}
	}
	if idx < 0 && len(c.maint) > 0 {
		idx = 0
	}
	var mw *maintWait
	if idx >= 0 {
		mw = c.maint[idx]
		c.maint = append(c.maint[:idx], c.maint[idx+1:]...)
	}
	handlers := append([]func(MaintNotice){}, c.onMaint...)
	c.mu.Unlock()

	if mw != nil {
		mw.finish(n.Err)
	} else {
		c.log.Info("raftgate client: maintenance notice with no waiting call", "target", n.Target, "err", n.Err)
	}
	if len(handlers) > 0 {
		c.post(func() {
			for _, fn := range handlers {
				fn(n)
			}
		})
	}
}
