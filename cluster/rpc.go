package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// The internal RPC is a small framed protocol over TCP. After the hello
// (see faults.go) a connection carries one request at a time:
//
//	request:  u32 length | u8 name length | name | u32 timeout ms | body
//	response: u32 length | u8 status | body (the error text unless status is OK)
//
// Connections are pooled per address; a deadline from the caller's context
// bounds every exchange and travels to the server as the timeout.

// Handler serves one internal RPC endpoint.
type Handler func(ctx context.Context, req []byte) ([]byte, error)

const (
	statusOK        byte = 0
	statusError     byte = 1
	statusNotLeader byte = 2 // nothing was done: ask the leader
	statusUnknown   byte = 3 // the outcome is unknown (leadership lost mid-write)
	statusNoHandler byte = 4

	maxFrame       = 16 << 20
	maxIdlePerAddr = 4
	rpcIdleTimeout = 2 * time.Minute
	defaultRPCWait = 10 * time.Second
)

var (
	// errNotLeader: this node is not the leader; retry on the leader.
	errNotLeader = errors.New("not the leader")
	// errUnknownOutcome: a write may or may not have been committed; only
	// a retry with the same request ID is safe.
	errUnknownOutcome = errors.New("outcome unknown")
)

// RemoteError is an error returned by another node's handler.
type RemoteError struct {
	Node   string
	Status byte
	Msg    string
}

func (e *RemoteError) Error() string {
	if e.Node != "" {
		return fmt.Sprintf("node %s: %s", e.Node, e.Msg)
	}
	return e.Msg
}

// Is maps remote statuses back to this package's sentinels.
func (e *RemoteError) Is(target error) bool {
	switch e.Status {
	case statusNotLeader:
		return target == errNotLeader
	case statusUnknown:
		return target == errUnknownOutcome
	}
	return false
}

// dialError means the request was never sent, so any retry is safe.
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

func writeFrame(w io.Writer, parts ...[]byte) error {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	if n > maxFrame {
		return fmt.Errorf("frame of %d bytes exceeds %d", n, maxFrame)
	}
	buf := make([]byte, 4, 4+n)
	binary.BigEndian.PutUint32(buf, uint32(n))
	for _, p := range parts {
		buf = append(buf, p...)
	}
	_, err := w.Write(buf)
	return err
}

func readFrame(r io.Reader) ([]byte, error) {
	var h [4]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(h[:])
	if n > maxFrame {
		return nil, fmt.Errorf("frame of %d bytes exceeds %d", n, maxFrame)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	return b, nil
}

// rpcServer serves the internal RPC endpoints of one node.
type rpcServer struct {
	ln  *peerListener
	log *slog.Logger

	hmu      sync.RWMutex
	handlers map[string]Handler

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	cmu    sync.Mutex
	conns  map[net.Conn]struct{}
}

func newRPCServer(ln *peerListener, log *slog.Logger) *rpcServer {
	ctx, cancel := context.WithCancel(context.Background())
	return &rpcServer{ln: ln, log: log, handlers: map[string]Handler{}, ctx: ctx, cancel: cancel, conns: map[net.Conn]struct{}{}}
}

func (s *rpcServer) handle(name string, h Handler) {
	s.hmu.Lock()
	s.handlers[name] = h
	s.hmu.Unlock()
}

func (s *rpcServer) handler(name string) Handler {
	s.hmu.RLock()
	defer s.hmu.RUnlock()
	return s.handlers[name]
}

func (s *rpcServer) start() {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			conn, err := s.ln.Accept()
			if err != nil {
				return
			}
			s.cmu.Lock()
			if s.ctx.Err() != nil {
				s.cmu.Unlock()
				conn.Close()
				return
			}
			s.conns[conn] = struct{}{}
			s.wg.Add(1)
			s.cmu.Unlock()
			go s.serveConn(conn)
		}
	}()
}

func (s *rpcServer) serveConn(conn net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.cmu.Lock()
		delete(s.conns, conn)
		s.cmu.Unlock()
		conn.Close()
	}()
	for {
		if err := conn.SetReadDeadline(time.Now().Add(rpcIdleTimeout)); err != nil {
			return
		}
		frame, err := readFrame(conn)
		if err != nil {
			return
		}
		status, body := s.dispatch(frame)
		if err := conn.SetWriteDeadline(time.Now().Add(defaultRPCWait)); err != nil {
			return
		}
		if err := writeFrame(conn, []byte{status}, body); err != nil {
			return
		}
	}
}

func (s *rpcServer) dispatch(frame []byte) (byte, []byte) {
	if len(frame) < 1 || len(frame) < 1+int(frame[0])+4 {
		return statusError, []byte("malformed request")
	}
	nl := int(frame[0])
	name := string(frame[1 : 1+nl])
	timeout := time.Duration(binary.BigEndian.Uint32(frame[1+nl:])) * time.Millisecond
	body := frame[1+nl+4:]
	h := s.handler(name)
	if h == nil {
		return statusNoHandler, []byte("no handler for " + name)
	}
	if timeout <= 0 {
		timeout = defaultRPCWait
	}
	ctx, cancel := context.WithTimeout(s.ctx, timeout)
	defer cancel()
	out, err := h(ctx, body)
	if err != nil {
		return errorStatus(err), []byte(err.Error())
	}
	return statusOK, out
}

func errorStatus(err error) byte {
	switch {
	case errors.Is(err, errNotLeader):
		return statusNotLeader
	case errors.Is(err, errUnknownOutcome):
		return statusUnknown
	}
	return statusError
}

// close stops accepting, cancels running handlers and waits for them.
func (s *rpcServer) close() {
	s.cmu.Lock()
	s.cancel()
	for c := range s.conns {
		c.Close()
	}
	s.cmu.Unlock()
	s.ln.Close()
	s.wg.Wait()
}

// rpcPool dials other nodes' RPC listeners and keeps idle connections.
type rpcPool struct {
	self        string
	faults      *FaultInjector
	dialTimeout time.Duration

	mu     sync.Mutex
	idle   map[string][]net.Conn
	closed bool
}

func newRPCPool(self string, f *FaultInjector, dialTimeout time.Duration) *rpcPool {
	return &rpcPool{self: self, faults: f, dialTimeout: dialTimeout, idle: map[string][]net.Conn{}}
}

func (p *rpcPool) get(ctx context.Context, addr string) (net.Conn, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, &dialError{ErrShutdown}
	}
	if l := p.idle[addr]; len(l) > 0 {
		c := l[len(l)-1]
		p.idle[addr] = l[:len(l)-1]
		p.mu.Unlock()
		return c, nil
	}
	p.mu.Unlock()
	timeout := p.dialTimeout
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
		timeout = time.Until(dl)
	}
	if timeout <= 0 {
		return nil, &dialError{fmt.Errorf("dial %s: %w", addr, context.DeadlineExceeded)}
	}
	c, err := dialPeer(p.faults, p.self, addr, timeout)
	if err != nil {
		return nil, &dialError{fmt.Errorf("dial %s: %w", addr, err)}
	}
	return c, nil
}

func (p *rpcPool) put(addr string, c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(p.idle[addr]) >= maxIdlePerAddr {
		c.Close()
		return
	}
	p.idle[addr] = append(p.idle[addr], c)
}

// call sends one request to addr and returns the response body.
func (p *rpcPool) call(ctx context.Context, addr, name string, body []byte) ([]byte, error) {
	if len(name) > 255 {
		return nil, fmt.Errorf("rpc %s: name too long", name)
	}
	if err := ctx.Err(); err != nil {
		return nil, &dialError{err}
	}
	conn, err := p.get(ctx, addr)
	if err != nil {
		return nil, err
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(defaultRPCWait)
	}
	// A context cancelled early (not only its deadline) must also end the
	// exchange, so watch it and break the connection's deadline.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if err := conn.SetDeadline(deadline); err != nil {
		conn.Close()
		return nil, &dialError{fmt.Errorf("rpc %s to %s: %w", name, addr, err)}
	}
	head := make([]byte, 0, 1+len(name)+4)
	head = append(head, byte(len(name)))
	head = append(head, name...)
	head = binary.BigEndian.AppendUint32(head, uint32(max(time.Until(deadline)/time.Millisecond, 1)))
	if err := writeFrame(conn, head, body); err != nil {
		conn.Close()
		return nil, fmt.Errorf("rpc %s to %s: %w: %w", name, addr, errUnknownOutcome, err)
	}
	resp, err := readFrame(conn)
	if err != nil {
		conn.Close()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("rpc %s to %s: %w: %w", name, addr, errUnknownOutcome, err)
	}
	if !stop() || conn.SetDeadline(time.Time{}) != nil {
		conn.Close()
	} else {
		p.put(addr, conn)
	}
	if len(resp) < 1 {
		return nil, fmt.Errorf("rpc %s to %s: empty response", name, addr)
	}
	if resp[0] != statusOK {
		return nil, &RemoteError{Status: resp[0], Msg: string(resp[1:])}
	}
	return resp[1:], nil
}

func (p *rpcPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, l := range p.idle {
		for _, c := range l {
			c.Close()
		}
	}
	p.idle = nil
}
