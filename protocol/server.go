package protocol

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/raftgate/raftgate/cluster"
	"github.com/raftgate/raftgate/fsm"
	"github.com/raftgate/raftgate/proxy"
)

// Cluster is what the control server needs from the cluster layer:
// *cluster.Node satisfies it, and tests fake it with function fields.
type Cluster interface {
	// Apply proposes cmd and returns once it is committed and applied on
	// this node.
	Apply(ctx context.Context, cmd *fsm.Command) (fsm.Result, error)
	// LinearizableRead returns once this node's FSM reflects every write
	// acknowledged before the call.
	LinearizableRead(ctx context.Context) error
	// RecordActivity notes that a command named the session (batched lease
	// renewal).
	RecordActivity(sessionID string)
	// Incarnation is unique to this process; connection IDs start with it.
	Incarnation() string
	NodeID() string
	// Status describes the cluster for CLUSTER_STATUS.
	Status(ctx context.Context) cluster.Status
	// FanOut calls the named handler on every live node (this one too).
	FanOut(ctx context.Context, name string, req []byte) (map[string][]byte, error)
	// Call calls the named handler on one node.
	Call(ctx context.Context, nodeID, name string, req []byte) ([]byte, error)
	// RegisterHandler serves a named internal RPC on this node.
	RegisterHandler(name string, h func(ctx context.Context, req []byte) ([]byte, error))
}

// DataPlane is what the control server reads from this node's proxy.
type DataPlane interface {
	RouteStats(routeID string) proxy.RouteStats
	BreakerStatus(routeID string) proxy.BreakerStatus
	SessionInFlight(sessionID string) int64
}

// Config configures a control server.
type Config struct {
	Cluster   Cluster
	FSM       *fsm.FSM
	DataPlane DataPlane
	Logger    *slog.Logger
	// SessionGrace is reported as expires_at of detached sessions; it must
	// match the cluster's grace.
	SessionGrace time.Duration
	// IdleTimeout closes a connection with no attached session that sent
	// nothing for this long (default 5m).
	IdleTimeout time.Duration
	// LineTimeout bounds the time from a line's first byte to its end
	// (default 30s).
	LineTimeout time.Duration
	// MaintTimeout bounds the wait for a maintenance backend (default 60s).
	MaintTimeout time.Duration
	// CommandTimeout bounds one command's trip through the cluster
	// (default 10s; the cluster's hold timeout answers sooner without a
	// leader).
	CommandTimeout time.Duration
	// MaxConns caps concurrent control connections (default 20000); more
	// are answered ERROR and closed.
	MaxConns int
	// EventQueue is the per-connection bound on queued events (default 1024).
	EventQueue int
}

// Server is the port-81 control listener of one node.
type Server struct {
	cfg    Config
	log    *slog.Logger
	nodeID string

	connSeq atomic.Uint64
	nconns  atomic.Int64

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	// attached maps a session ID to the local connection it is attached to.
	attached map[string]*conn
	closing  bool

	wg       sync.WaitGroup // connection goroutines
	watchers sync.WaitGroup // maintenance watchers
	ctx      context.Context
	cancel   context.CancelFunc
}

// NewServer returns a server; call Serve to accept connections.
func NewServer(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.SessionGrace <= 0 {
		cfg.SessionGrace = 5 * time.Minute
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 5 * time.Minute
	}
	if cfg.LineTimeout <= 0 {
		cfg.LineTimeout = 30 * time.Second
	}
	if cfg.MaintTimeout <= 0 {
		cfg.MaintTimeout = 60 * time.Second
	}
	if cfg.CommandTimeout <= 0 {
		cfg.CommandTimeout = 10 * time.Second
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 20000
	}
	if cfg.EventQueue <= 0 {
		cfg.EventQueue = 1024
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:       cfg,
		nodeID:    cfg.Cluster.NodeID(),
		log:       cfg.Logger.With("node", cfg.Cluster.NodeID()),
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*conn]struct{}),
		attached:  make(map[string]*conn),
		ctx:       ctx,
		cancel:    cancel,
	}
	cfg.FSM.Observe(s.observe)
	s.registerRPC()
	return s
}

// Serve accepts control connections on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return errors.New("control server: closed")
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("control accept: %w", err)
		}
		backoff = 0
		if s.nconns.Add(1) > int64(s.cfg.MaxConns) {
			s.nconns.Add(-1)
			_ = nc.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = io.WriteString(nc, "ERROR|too many connections\n")
			nc.Close()
			continue
		}
		if tc, ok := nc.(*net.TCPConn); ok {
			_ = tc.SetKeepAlive(true)
			_ = tc.SetKeepAlivePeriod(30 * time.Second)
		}
		c := s.newConn(nc)
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			nc.Close()
			s.nconns.Add(-1)
			return nil
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			defer s.nconns.Add(-1)
			c.serve()
		}()
	}
}

// Shutdown tells every client SHUTDOWN, closes every connection and waits
// for their goroutines, or for ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	s.cancel()
	for ln := range s.listeners {
		ln.Close()
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.sendAsync("SHUTDOWN")
		c.closeAfterFlush()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		for _, c := range conns {
			c.nc.Close()
		}
		<-done
		err = fmt.Errorf("control server shutdown: %w", ctx.Err())
	}
	s.watchers.Wait()
	return err
}

func (s *Server) newConnID() string {
	return s.cfg.Cluster.Incarnation() + "-" + strconv.FormatUint(s.connSeq.Add(1), 10)
}

// attach records that session is attached to c on this node, replacing
// any other local connection.
func (s *Server) attach(sessionID string, c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.attached[sessionID]; old != nil && old != c {
		old.forget(sessionID)
	}
	s.attached[sessionID] = c
	c.remember(sessionID)
}

// release forgets a local attachment if it still belongs to c.
func (s *Server) release(sessionID string, c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.attached[sessionID] == c {
		delete(s.attached, sessionID)
	}
	c.forget(sessionID)
}

// attachedConn returns the local connection session is attached to.
func (s *Server) attachedConn(sessionID string) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attached[sessionID]
}

// dropConn removes a closed connection and proposes detaching every session
// still attached through it.
func (s *Server) dropConn(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	var detach []string
	for _, id := range c.sessions() {
		if s.attached[id] == c {
			delete(s.attached, id)
			detach = append(detach, id)
		}
	}
	s.mu.Unlock()
	for _, id := range detach {
		s.proposeDetach(id, c.id)
	}
}

// proposeDetach tells the cluster the connection is gone. It is best
// effort: if it never lands, the node's next incarnation or the leader's
// dead-node handling detaches the session instead.
func (s *Server) proposeDetach(sessionID, connID string) {
	cmd, err := fsm.NewCommand(fsm.CmdDetach, sessionID, fsm.ConnPayload{Conn: connID})
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.CommandTimeout)
	defer cancel()
	if _, err := s.cfg.Cluster.Apply(ctx, cmd); err != nil {
		s.log.Warn("detach session", "session", sessionID, "conn", connID, "err", err)
	}
}
