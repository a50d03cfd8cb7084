package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"time"
)

// connectFirst makes the first connection (and session) for New and Dial.
// A REGISTER refused by the server is final: every node would refuse it.
func (c *Client) connectFirst(ctx context.Context) error {
	if err := c.establish(ctx, true); err != nil {
		return fmt.Errorf("raftgate client: connect: %w", err)
	}
	return nil
}

// startReconnectLocked starts the background reconnect unless one is
// running. Callers hold c.mu.
func (c *Client) startReconnectLocked() {
	if c.reconnecting || c.closed || c.noFailover {
		return
	}
	c.reconnecting = true
	c.ready = make(chan struct{})
	c.wg.Add(1)
	go c.reconnect(c.ready)
}

// reconnect runs establish until it succeeds or the client is closed, then
// wakes every command waiting in getConn.
func (c *Client) reconnect(ready chan struct{}) {
	defer c.wg.Done()
	err := c.establish(c.ctx, false)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reconnecting = false
	close(ready)
	// The new connection may already have died before this point; its
	// closed callback could not start a reconnect while this one ran.
	if err == nil && c.cur == nil && c.register && !c.closed {
		c.startReconnectLocked()
	}
}

// establish connects to the known addresses in turn, with a jittered,
// doubling pause after each full round, until one connection is set up or
// ctx ends.
func (c *Client) establish(ctx context.Context, initial bool) error {
	backoff := c.cfg.MinBackoff
	for round := 0; ; round++ {
		for _, addr := range c.dialOrder() {
			err := c.connectAddr(ctx, addr)
			if err == nil {
				return nil
			}
			if ctx.Err() != nil {
				return errors.Join(ctx.Err(), err)
			}
			var se *ServerError
			if initial && errors.As(err, &se) {
				return err
			}
			c.mu.Lock()
			c.lastErr = err
			c.mu.Unlock()
			c.log.Warn("raftgate client: connect failed", "addr", addr, "round", round, "err", err)
		}
		// Equal jitter: at least half the backoff, so a herd of clients
		// that lost the same node spreads out instead of retrying in step.
		pause := backoff/2 + rand.N(backoff/2+1)
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			c.mu.Lock()
			lastErr := c.lastErr
			c.mu.Unlock()
			return errors.Join(ctx.Err(), lastErr)
		}
		backoff = min(2*backoff, c.cfg.MaxBackoff)
	}
}

// dialOrder lists the known addresses starting after the one last used,
// which goes last: it is the node that just failed or shut down.
func (c *Client) dialOrder() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	start := 0
	for i, a := range c.addrs {
		if a == c.lastAddr {
			start = i + 1
			break
		}
	}
	order := make([]string, 0, len(c.addrs))
	for i := range c.addrs {
		order = append(order, c.addrs[(start+i)%len(c.addrs)])
	}
	return order
}

// connectAddr dials addr, reattaches (RECONNECT) or registers the session,
// and makes the connection current.
func (c *Client) connectAddr(ctx context.Context, addr string) error {
	cn, err := dialConn(ctx, addr, c.cfg.DialTimeout, c.log, c.handleAsync, c.connClosed)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		_ = cn.nc.Close()
		return ErrClosed
	}
	c.live[cn] = struct{}{}
	session := c.session
	c.mu.Unlock()
	cn.start(&c.wg)

	hctx, cancel := c.commandCtx(ctx)
	defer cancel()
	newSession := ""
	if c.register {
		expired := false
		if session != "" {
			resp, err := handshake(hctx, cn, "RECONNECT|"+session)
			if err != nil {
				cn.fail(err)
				return fmt.Errorf("reconnect on %s: %w", addr, err)
			}
			switch resp {
			case "OK":
			case "REREGISTER", "ERROR|session not found":
				// The second form is not what the contract says RECONNECT
				// answers, but it means the same, and registering again is
				// the only way forward.
				expired = true
			default:
				cn.fail(errors.New("bad RECONNECT answer"))
				return fmt.Errorf("reconnect on %s: %w", addr, responseErr("RECONNECT", resp))
			}
		}
		if session == "" || expired {
			id, err := c.registerOn(hctx, cn)
			if err != nil {
				cn.fail(errors.New("register failed"))
				return fmt.Errorf("register on %s: %w", addr, err)
			}
			newSession = id
		}
	}

	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		cn.fail(ErrClosed)
		return ErrClosed
	}
	c.cur = cn
	c.lastAddr = addr
	c.lastErr = nil
	old := c.session
	var lost []*maintWait
	var hooks []ReregisterFunc
	if newSession != "" {
		c.session = newSession
		if old != "" {
			lost, c.maint = c.maint, nil
			hooks = append(hooks, c.onRereg...)
		}
	}
	if !c.cfg.DisableDiscovery {
		c.wg.Add(1)
		go c.discover()
	}
	c.mu.Unlock()

	switch {
	case old == "" && newSession != "":
		c.log.Info("raftgate client: registered", "addr", addr, "session", newSession)
	case newSession != "":
		c.log.Warn("raftgate client: session expired, registered again", "addr", addr, "old_session", old, "session", newSession)
	case session != "":
		c.log.Info("raftgate client: reattached session", "addr", addr, "session", session)
	default:
		c.log.Debug("raftgate client: connected", "addr", addr)
	}
	for _, mw := range lost {
		mw.finish(ErrSessionLost)
	}
	for _, fn := range hooks {
		c.hooks.Add(1)
		go func() {
			defer c.hooks.Done()
			fn(c.ctx, old, newSession)
		}()
	}
	return nil
}

// registerOn sends REGISTER on a connection that is not yet current.
func (c *Client) registerOn(ctx context.Context, cn *conn) (string, error) {
	meta, err := encodeJSONField("metadata", c.cfg.Metadata)
	if err != nil {
		return "", err
	}
	fields := []string{c.cfg.Service, c.cfg.Instance, fmt.Sprint(c.cfg.MaintenancePort)}
	if meta != "" {
		fields = append(fields, meta)
	}
	resp, err := handshake(ctx, cn, buildLine("REGISTER", false, "", fields))
	if err != nil {
		return "", err
	}
	code, id, _ := strings.Cut(resp, "|")
	if code != "ACK" || id == "" {
		return "", responseErr("REGISTER", resp)
	}
	return id, nil
}

// handshake sends one line on a connection that is not yet current.
func handshake(ctx context.Context, cn *conn, line string) (string, error) {
	w, err := cn.send(ctx, line, nil)
	if err != nil {
		return "", err
	}
	return cn.wait(ctx, w)
}

// responseErr turns an unexpected handshake answer into an error.
func responseErr(word, resp string) error {
	code, rest, _ := strings.Cut(resp, "|")
	if code == "ERROR" {
		return &ServerError{Command: word, Msg: rest}
	}
	return unexpected(word, code, rest)
}

// connClosed is the connection's closed callback: losing the current
// connection starts failover at once for a session client, so that the
// session is reattached (and receives events again) without waiting for the
// next command. A Dial client reconnects lazily, on its next command.
func (c *Client) connClosed(cn *conn, cause error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.live, cn)
	if c.cur != cn {
		return
	}
	c.cur = nil
	if c.closed {
		return
	}
	if c.noFailover {
		c.log.Debug("raftgate client: connection closed after CLIENT_SHUTDOWN", "addr", cn.addr)
		return
	}
	c.log.Warn("raftgate client: connection lost", "addr", cn.addr, "err", cause)
	if c.register {
		c.startReconnectLocked()
	}
}

// nodeShutdown handles SHUTDOWN: new commands go to another node at once,
// while commands already written to this one still get their answers.
func (c *Client) nodeShutdown(cn *conn) {
	c.log.Info("raftgate client: node shutting down, failing over", "addr", cn.addr)
	c.mu.Lock()
	if c.cur == cn {
		c.cur = nil
		if c.register {
			c.startReconnectLocked()
		}
	}
	handlers := append([]func(string){}, c.onShutdown...)
	c.mu.Unlock()
	cn.retire()
	if len(handlers) > 0 {
		c.post(func() {
			for _, fn := range handlers {
				fn(cn.addr)
			}
		})
	}
}

// discover asks the cluster for its members and remembers their control
// addresses as failover targets. Failure is harmless: the configured
// addresses remain.
func (c *Client) discover() {
	defer c.wg.Done()
	if _, err := c.ClusterStatus(c.ctx); err != nil && c.ctx.Err() == nil {
		c.log.Debug("raftgate client: discovery failed", "err", err)
	}
}

// learnAddrs adds the control addresses of st's nodes. A node that reports
// its listen address (":81", "0.0.0.0:81") is reached on the host we used
// to reach the answering node.
func (c *Client) learnAddrs(st *ClusterStatus, via string) {
	viaHost, _, _ := net.SplitHostPort(via)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range st.Nodes {
		host, port, err := net.SplitHostPort(n.ControlAddr)
		if err != nil || port == "" || port == "0" {
			continue
		}
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			host = viaHost
		}
		addr := net.JoinHostPort(host, port)
		known := false
		for _, a := range c.addrs {
			if a == addr {
				known = true
				break
			}
		}
		if !known {
			c.addrs = append(c.addrs, addr)
			c.log.Debug("raftgate client: learned node address", "addr", addr, "node", n.ID)
		}
	}
}
