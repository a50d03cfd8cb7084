package protocol

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"
)

// writeTimeout bounds one write to a client; a client that does not read
// for this long is disconnected rather than allowed to hold the node.
const writeTimeout = 10 * time.Second

// conn is one control connection.
//
// Idle connections must be cheap (a node may hold tens of thousands), so a
// connection owns one goroutine, which reads a command, runs it and writes
// the response itself. Asynchronous lines (events, MAINT_OK, SHUTDOWN) go
// through a bounded queue that exists only while it holds lines; a flusher
// goroutine lives only while there is something to write. No sender ever
// waits for the client: a full queue counts drops, reported later as one
// EVENT|overflow line.
//
// Ordering: every line is written whole under wmu, so an asynchronous line
// never lands inside a response. While a command runs (busy), queued lines
// wait until its response is written, so MAINT_OK never overtakes its ACK.
type conn struct {
	srv *Server
	nc  net.Conn
	id  string

	wmu sync.Mutex // held for the write of one whole line

	mu       sync.Mutex
	attached map[string]struct{} // sessions attached through this connection; nil when none
	queue    []string            // asynchronous lines waiting; nil when empty
	dropped  int                 // lines dropped since the last overflow report
	busy     bool                // a command is running; its response is not written yet
	flushing bool                // a flusher goroutine is running
	closeReq bool                // close once the queue is written (server shutdown)
	closed   bool                // serve has ended: nothing more is queued or flushed
	flushers sync.WaitGroup
}

func (s *Server) newConn(nc net.Conn) *conn {
	return &conn{srv: s, nc: nc, id: s.newConnID()}
}

func (c *conn) remember(id string) {
	c.mu.Lock()
	if c.attached == nil {
		c.attached = make(map[string]struct{}, 1)
	}
	c.attached[id] = struct{}{}
	c.mu.Unlock()
}

func (c *conn) forget(id string) {
	c.mu.Lock()
	delete(c.attached, id)
	if len(c.attached) == 0 {
		c.attached = nil
	}
	c.mu.Unlock()
}

func (c *conn) sessions() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.attached))
	for id := range c.attached {
		out = append(out, id)
	}
	return out
}

func (c *conn) hasAttachment() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.attached) > 0
}

// remoteIP is the client's IP address as text.
func (c *conn) remoteIP() string {
	if ta, ok := c.nc.RemoteAddr().(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(c.nc.RemoteAddr().String())
	if err != nil {
		return "unknown"
	}
	return host
}

// sendAsync queues an asynchronous line without blocking; a full queue
// counts a drop, reported later as EVENT|overflow.
func (c *conn) sendAsync(line string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	if len(c.queue) >= c.srv.cfg.EventQueue {
		c.dropped++
		return
	}
	c.queue = append(c.queue, line)
	c.kickLocked()
}

// closeAfterFlush asks for the connection to be closed once the queued
// lines are written.
func (c *conn) closeAfterFlush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closeReq = true
	c.kickLocked()
}

// kickLocked starts a flusher when there is something to do and no
// command's response is pending. Called with c.mu held.
func (c *conn) kickLocked() {
	if c.busy || c.flushing || c.closed {
		return
	}
	if len(c.queue) == 0 && c.dropped == 0 && !c.closeReq {
		return
	}
	c.flushing = true
	c.flushers.Add(1)
	go c.flush()
}

// flush writes queued asynchronous lines until the queue is empty or a
// command starts, then ends.
func (c *conn) flush() {
	defer c.flushers.Done()
	for {
		c.mu.Lock()
		if c.busy || c.closed || len(c.queue) == 0 && c.dropped == 0 {
			closeNow := c.closeReq && !c.busy && len(c.queue) == 0
			c.flushing = false
			c.mu.Unlock()
			if closeNow {
				c.nc.Close()
			}
			return
		}
		lines, dropped := c.queue, c.dropped
		// Drop the backing array so an idle connection holds none.
		c.queue, c.dropped = nil, 0
		c.mu.Unlock()
		if dropped > 0 {
			b, _ := json.Marshal(map[string]int{"dropped": dropped})
			lines = append(lines, "EVENT|overflow|"+string(b))
		}
		for _, l := range lines {
			if err := c.writeLine(l); err != nil {
				c.abort(err)
				c.mu.Lock()
				c.flushing = false
				c.mu.Unlock()
				return
			}
		}
	}
}

// writeLine writes one whole line with the write deadline.
func (c *conn) writeLine(line string) error {
	b := make([]byte, 0, len(line)+1)
	b = append(append(b, line...), '\n')
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err := c.nc.Write(b)
	return err
}

// abort ends a connection whose writes fail (a client that stopped
// reading, or a closed socket).
func (c *conn) abort(err error) {
	if !errors.Is(err, net.ErrClosed) {
		c.srv.log.Debug("control connection write", "conn", c.id, "err", err)
	}
	c.nc.Close()
}

func (c *conn) serve() {
	defer c.srv.dropConn(c)
	c.readLoop()
	c.mu.Lock()
	c.closed = true
	c.queue = nil
	c.mu.Unlock()
	c.nc.Close()
	c.flushers.Wait()
}

func (c *conn) readLoop() {
	lr := NewLineReader(c.nc)
	for {
		idle := c.srv.cfg.IdleTimeout
		if c.hasAttachment() {
			// An attached session's connection lives as long as the client
			// keeps it; TCP keepalive finds dead peers.
			idle = 0
		}
		line, err := lr.ReadLine(idle, c.srv.cfg.LineTimeout)
		if errors.Is(err, ErrLineTooLong) {
			if !c.respond("ERROR|" + ErrLineTooLong.Error()) {
				return
			}
			continue
		}
		if err != nil {
			if isTimeout(err) {
				c.srv.log.Debug("control connection timed out", "conn", c.id)
			} else if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				c.srv.log.Debug("control connection read", "conn", c.id, "err", err)
			}
			return
		}
		c.mu.Lock()
		c.busy = true
		c.mu.Unlock()
		resp, closeAfter, ok := c.handle(line)
		if !c.respond(resp) || closeAfter || !ok {
			return
		}
	}
}

// handle runs one command. A panic in a handler is a bug, but it must not
// take the node (and every other client's connection) down with it: it is
// logged with its stack, the client gets a plain error, and the connection
// closes, since the handler may have left it half-way through something.
func (c *conn) handle(line string) (resp string, closeAfter, ok bool) {
	defer func() {
		if p := recover(); p != nil {
			c.srv.log.Error("control command panicked", "conn", c.id, "command", printable(commandWord(line), 32),
				"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			resp, closeAfter, ok = "ERROR|internal error", true, false
		}
	}()
	resp, closeAfter = c.srv.handleLine(c, line)
	return resp, closeAfter, true
}

// commandWord is the first field of a line, for logs.
func commandWord(line string) string {
	w, _, _ := strings.Cut(line, "|")
	return w
}

// respond writes a command's response, then lets the asynchronous lines
// queued meanwhile follow it; false when the connection is gone.
func (c *conn) respond(line string) bool {
	err := c.writeLine(line)
	c.mu.Lock()
	c.busy = false
	if err == nil {
		c.kickLocked()
	}
	c.mu.Unlock()
	if err != nil {
		c.abort(err)
		return false
	}
	return true
}

// commandContext bounds one command.
func (c *conn) commandContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(c.srv.ctx, c.srv.cfg.CommandTimeout)
}

func itoa(n int) string { return strconv.Itoa(n) }
