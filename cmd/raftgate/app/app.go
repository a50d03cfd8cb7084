// Package app assembles one raftgate node from its parts: the replicated
// state (fsm), the cluster layer (raft, memberlist, forwarding), the data
// plane (proxy), the control listener (protocol) and the admin endpoint
// (metrics, health, readiness, fault injection). The binary and the
// end-to-end tests start nodes through it, so both run the same wiring.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/raftgate/raftgate/cluster"
	"github.com/raftgate/raftgate/fsm"
	"github.com/raftgate/raftgate/protocol"
	"github.com/raftgate/raftgate/proxy"
)

// Config configures one node. Addresses with port 0 pick a free port.
type Config struct {
	NodeID  string
	DataDir string

	ControlAddr string // the port-81 control protocol
	HTTPAddr    string // the reverse proxy
	RaftAddr    string
	GossipAddr  string
	RPCAddr     string
	AdminAddr   string // metrics, health, readiness; "" disables
	// AdvertiseHost is the host other nodes use to reach this one; empty
	// derives it from the bind addresses.
	AdvertiseHost string

	Join            []string
	BootstrapExpect int

	SessionGrace     time.Duration
	DeadNodeReap     time.Duration
	HoldTimeout      time.Duration
	StaleReads       bool
	LeaveOnTerminate bool

	TrustedProxies []netip.Prefix
	RateLimitScope string // "node" or "cluster"

	// FaultInjection enables the test-only admin endpoint that cuts this
	// node off from chosen peers (raftgate chaos).
	FaultInjection bool
	// Pprof serves net/http/pprof under /debug/pprof/ on the admin address.
	Pprof bool

	Timing cluster.Timing // zero: cluster.DefaultTiming()
	Logger *slog.Logger
}

// Node is one running raftgate node.
type Node struct {
	cfg     Config
	log     *slog.Logger
	FSM     *fsm.FSM
	Cluster *cluster.Node
	Proxy   *proxy.Proxy
	Control *protocol.Server
	Faults  *cluster.FaultInjector

	controlLn, httpLn, adminLn net.Listener
	httpSrv, adminSrv          *http.Server
	front                      *proxy.FrontServer
	registry                   *prometheus.Registry

	wg       sync.WaitGroup
	stopOnce sync.Once
	stopErr  error
	ready    atomic.Bool
}

// Start starts every part of a node and returns once its listeners are
// open; joining or bootstrapping the cluster continues in the background.
func Start(ctx context.Context, cfg Config) (n *Node, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Timing == (cluster.Timing{}) {
		cfg.Timing = cluster.DefaultTiming()
	}
	if cfg.SessionGrace <= 0 {
		cfg.SessionGrace = 5 * time.Minute
	}
	n = &Node{cfg: cfg, log: cfg.Logger.With("node", cfg.NodeID), registry: prometheus.NewRegistry()}
	var closers []func()
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				closers[i]()
			}
		}
	}()
	listen := func(what, addr string) (net.Listener, error) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("listen for %s on %s: %w", what, addr, err)
		}
		closers = append(closers, func() { ln.Close() })
		return ln, nil
	}
	if n.controlLn, err = listen("control", cfg.ControlAddr); err != nil {
		return nil, err
	}
	if n.httpLn, err = listen("proxy", cfg.HTTPAddr); err != nil {
		return nil, err
	}
	if cfg.AdminAddr != "" {
		if n.adminLn, err = listen("admin", cfg.AdminAddr); err != nil {
			return nil, err
		}
	}

	n.FSM = fsm.New()
	var control atomic.Pointer[protocol.Server]
	var liveNodes atomic.Pointer[cluster.Node]
	n.Proxy = proxy.New(proxy.Config{
		NodeID:         cfg.NodeID,
		Logger:         cfg.Logger,
		TrustedProxies: cfg.TrustedProxies,
		RateLimitScope: cfg.RateLimitScope,
		LiveNodes: func() int {
			if c := liveNodes.Load(); c != nil {
				return c.LiveNodes()
			}
			return 1
		},
		OnHealthChange: func(ev proxy.HealthEvent) {
			if s := control.Load(); s != nil {
				s.HealthChanged(ev)
			}
		},
		Registerer: n.registry,
	})
	closers = append(closers, n.Proxy.Close)
	n.FSM.OnTable(n.Proxy.Update)

	if cfg.FaultInjection {
		n.Faults = cluster.NewFaultInjector()
	}
	n.Cluster, err = cluster.Start(ctx, cluster.Config{
		NodeID:           cfg.NodeID,
		DataDir:          cfg.DataDir,
		RaftAddr:         cfg.RaftAddr,
		GossipAddr:       cfg.GossipAddr,
		RPCAddr:          cfg.RPCAddr,
		AdvertiseHost:    cfg.AdvertiseHost,
		ControlAddr:      advertised(n.controlLn.Addr(), cfg.AdvertiseHost),
		ProxyAddr:        advertised(n.httpLn.Addr(), cfg.AdvertiseHost),
		Join:             cfg.Join,
		BootstrapExpect:  cfg.BootstrapExpect,
		DeadNodeReap:     cfg.DeadNodeReap,
		HoldTimeout:      cfg.HoldTimeout,
		StaleReads:       cfg.StaleReads,
		SessionGrace:     cfg.SessionGrace,
		LeaveOnTerminate: cfg.LeaveOnTerminate,
		FSM:              n.FSM,
		Logger:           cfg.Logger,
		Timing:           cfg.Timing,
		Faults:           n.Faults,
	})
	if err != nil {
		return nil, fmt.Errorf("start cluster node: %w", err)
	}
	closers = append(closers, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = n.Cluster.Shutdown(sctx)
	})
	liveNodes.Store(n.Cluster)

	n.Control = protocol.NewServer(protocol.Config{
		Cluster:      n.Cluster,
		FSM:          n.FSM,
		DataPlane:    n.Proxy,
		Logger:       cfg.Logger,
		SessionGrace: cfg.SessionGrace,
	})
	control.Store(n.Control)
	n.Cluster.OnEvent(func(ev cluster.ClusterEvent) { n.Control.EmitLocal(ev.Type, ev) })
	n.registerMetrics()

	n.Proxy.Start(context.Background())
	n.httpSrv = &http.Server{
		Handler:           n.Proxy,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	// The front server answers plain keep-alive GET/HEAD requests on its
	// own loop and hands every other connection to httpSrv.
	n.front = proxy.NewFrontServer(n.Proxy, n.httpSrv)
	n.serve("proxy", func() error { return n.front.Serve(n.httpLn) })
	n.serve("control", func() error { return n.Control.Serve(n.controlLn) })
	if n.adminLn != nil {
		n.adminSrv = &http.Server{Handler: n.adminHandler(), ReadHeaderTimeout: 10 * time.Second}
		n.serve("admin", func() error { return n.adminSrv.Serve(n.adminLn) })
	}
	n.log.Info("node started", "control", n.ControlAddr(), "proxy", n.HTTPAddr(), "admin", n.AdminAddr(),
		"raft", n.Cluster.RaftAddr(), "gossip", n.Cluster.GossipAddr(), "rpc", n.Cluster.RPCAddr(), "data_dir", cfg.DataDir)
	return n, nil
}

func (n *Node) serve(what string, fn func() error) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := fn(); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			n.log.Error("listener stopped", "listener", what, "err", err)
		}
	}()
}

// advertised turns a bound address into one other hosts can dial.
func advertised(a net.Addr, host string) string {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String()
	}
	if host == "" {
		if ta.IP.IsUnspecified() {
			host = "127.0.0.1"
		} else {
			host = ta.IP.String()
		}
	}
	return net.JoinHostPort(host, fmt.Sprint(ta.Port))
}

// ControlAddr is the address of the control listener.
func (n *Node) ControlAddr() string { return advertised(n.controlLn.Addr(), n.cfg.AdvertiseHost) }

// HTTPAddr is the address of the reverse proxy.
func (n *Node) HTTPAddr() string { return advertised(n.httpLn.Addr(), n.cfg.AdvertiseHost) }

// AdminAddr is the address of the admin endpoint, or "".
func (n *Node) AdminAddr() string {
	if n.adminLn == nil {
		return ""
	}
	return advertised(n.adminLn.Addr(), n.cfg.AdvertiseHost)
}

// Shutdown stops the node gracefully: control clients are told SHUTDOWN,
// leadership moves away, the node leaves if configured, in-flight proxy
// requests finish. It is safe to call more than once.
func (n *Node) Shutdown(ctx context.Context) error {
	n.stopOnce.Do(func() {
		var errs []error
		if err := n.Control.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
		if err := n.Cluster.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("cluster: %w", err))
		}
		if err := n.front.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("proxy listener: %w", err))
		}
		if n.adminSrv != nil {
			_ = n.adminSrv.Shutdown(ctx)
		}
		n.Proxy.Close()
		n.wg.Wait()
		n.stopErr = errors.Join(errs...)
		n.log.Info("node stopped")
	})
	return n.stopErr
}
