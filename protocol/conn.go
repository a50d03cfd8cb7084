package protocol

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"time"
)

// writeTimeout bounds one write to a client; a client that does not read
// for this long is disconnected rather than allowed to hold the node.
const writeTimeout = 10 * time.Second

// conn is one control connection. One goroutine reads and dispatches
// commands in order; one writes. Responses are never dropped; events go
// through a bounded queue and overflow is reported, not waited for.
type conn struct {
	srv *Server
	nc  net.Conn
	id  string

	resp   chan string   // responses, in command order
	events chan string   // asynchronous lines (events, MAINT_OK, SHUTDOWN)
	done   chan struct{} // closed when the connection ends

	mu       sync.Mutex
	attached map[string]struct{} // sessions attached through this connection
	dropped  int                 // events dropped since the last overflow line
	closeReq bool
	closed   bool
}

func (s *Server) newConn(nc net.Conn) *conn {
	return &conn{
		srv:      s,
		nc:       nc,
		id:       s.newConnID(),
		resp:     make(chan string, 16),
		events:   make(chan string, s.cfg.EventQueue),
		done:     make(chan struct{}),
		attached: make(map[string]struct{}),
	}
}

func (c *conn) remember(id string) {
	c.mu.Lock()
	c.attached[id] = struct{}{}
	c.mu.Unlock()
}

func (c *conn) forget(id string) {
	c.mu.Lock()
	delete(c.attached, id)
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
	select {
	case <-c.done:
		return
	default:
	}
	select {
	case c.events <- line:
	default:
		c.mu.Lock()
		c.dropped++
		c.mu.Unlock()
	}
}

// closeAfterFlush asks the writer to close the connection once the queued
// lines are written.
func (c *conn) closeAfterFlush() {
	c.mu.Lock()
	c.closeReq = true
	c.mu.Unlock()
	select {
	case c.events <- "":
	default:
		c.nc.Close()
	}
}

func (c *conn) serve() {
	defer c.srv.dropConn(c)
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		c.writeLoop()
	}()
	c.readLoop()
	c.mu.Lock()
	closing := c.closeReq
	c.mu.Unlock()
	if closing {
		// Let the writer flush the last answer (SHUTDOWN_OK) before the
		// socket goes.
		select {
		case <-writerDone:
		case <-time.After(writeTimeout):
		}
	}
	close(c.done)
	c.nc.Close()
	<-writerDone
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
			if errors.Is(err, os.ErrDeadlineExceeded) {
				c.srv.log.Debug("control connection timed out", "conn", c.id)
			} else if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				c.srv.log.Debug("control connection read", "conn", c.id, "err", err)
			}
			return
		}
		resp, closeAfter := c.srv.handleLine(c, line)
		if !c.respond(resp) {
			return
		}
		if closeAfter {
			c.closeAfterFlush()
			return
		}
	}
}

// respond queues a response line; false when the connection is gone.
func (c *conn) respond(line string) bool {
	select {
	case c.resp <- line:
		return true
	case <-c.done:
		return false
	}
}

func (c *conn) writeLoop() {
	w := bufio.NewWriterSize(c.nc, 4096)
	write := func(line string) bool {
		_ = c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := w.WriteString(line); err != nil {
			return false
		}
		return w.WriteByte('\n') == nil
	}
	flush := func() bool {
		_ = c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
		return w.Flush() == nil
	}
	defer c.nc.Close()
	for {
		var line string
		select {
		case line = <-c.resp:
		case line = <-c.events:
		case <-c.done:
			// Drain the responses already produced, then stop.
			for {
				select {
				case line := <-c.resp:
					if !write(line) {
						return
					}
				default:
					flush()
					return
				}
			}
		}
		if line != "" && !write(line) {
			c.abort()
			return
		}
		c.mu.Lock()
		dropped := c.dropped
		c.dropped = 0
		closeReq := c.closeReq
		c.mu.Unlock()
		if dropped > 0 {
			b, _ := json.Marshal(map[string]int{"dropped": dropped})
			if !write("EVENT|overflow|" + string(b)) {
				c.abort()
				return
			}
		}
		if len(c.resp) == 0 && len(c.events) == 0 || closeReq {
			if !flush() {
				c.abort()
				return
			}
		}
		if closeReq && len(c.resp) == 0 && len(c.events) == 0 {
			c.nc.Close()
			return
		}
	}
}

// abort ends a connection whose writes fail.
func (c *conn) abort() { c.nc.Close() }

// commandContext bounds one command.
func (c *conn) commandContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(c.srv.ctx, c.srv.cfg.CommandTimeout)
}

func itoa(n int) string { return strconv.Itoa(n) }
