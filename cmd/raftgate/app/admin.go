package app

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/raftgate/raftgate/cluster"
	"github.com/raftgate/raftgate/fsm"
)

// registerMetrics adds the node-level metrics (raft, sessions, process) to
// the registry the proxy already fills with per-route metrics.
func (n *Node) registerMetrics() {
	r := n.registry
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	gauge := func(name, help string, fn func() float64) {
		r.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "raftgate", Name: name, Help: help}, fn))
	}
	gauge("raft_is_leader", "1 when this node is the raft leader.", func() float64 {
		if n.Cluster.IsLeader() {
			return 1
		}
		return 0
	})
	gauge("raft_term", "The raft term this node is in.", func() float64 { return float64(n.Cluster.Term()) })
	r.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "raftgate", Name: "raft_forwarded_writes_total",
		Help: "Write attempts this node forwarded to the leader, retries included."},
		func() float64 { return float64(n.Cluster.ForwardedWrites()) }))
	for _, state := range []string{"leader", "follower", "candidate", "shutdown"} {
		r.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "raftgate", Name: "raft_state",
			Help: "1 for the raft role this node is in, 0 for the others.", ConstLabels: prometheus.Labels{"state": state}},
			func() float64 { return boolGauge(n.Cluster.RaftState() == state) }))
	}
	gauge("raft_applied_index", "Index of the last log entry applied on this node.", func() float64 {
		return float64(n.FSM.AppliedIndex())
	})
	gauge("routing_table_index", "Log index of the routing table this node's proxy serves.", func() float64 {
		return float64(n.Proxy.TableIndex())
	})
	sessions := func(attached bool) func() float64 {
		return func() float64 {
			count := 0
			n.FSM.View(func(st *fsm.State) {
				for _, s := range st.Sessions {
					if s.Attachment.Attached() == attached {
						count++
					}
				}
			})
			return float64(count)
		}
	}
	gauge("sessions_attached", "Sessions with an attached connection anywhere in the cluster.", sessions(true))
	gauge("sessions_detached", "Sessions without an attached connection (in their grace period).", sessions(false))
	gauge("cluster_live_nodes", "Nodes memberlist reports alive, this one included.", func() float64 {
		return float64(n.Cluster.LiveNodes())
	})
	leaderChanges := prometheus.NewCounter(prometheus.CounterOpts{Namespace: "raftgate", Name: "raft_leader_changes_total", Help: "Leader changes seen by this node."})
	r.MustRegister(leaderChanges)
	n.Cluster.OnEvent(func(ev cluster.ClusterEvent) {
		if ev.Type == cluster.EventLeaderChanged {
			leaderChanges.Inc()
		}
	})
}

// adminHandler serves /metrics, /healthz, /readyz and the operator
// endpoints. It listens on loopback by default: nothing here is for the
// public.
func (n *Node) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if ok, why := n.Ready(r.Context()); !ok {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("POST /v1/leave", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		if err := n.Cluster.Leave(ctx); err != nil {
			http.Error(w, "leave failed: "+err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "left the cluster")
	})
	mux.HandleFunc("POST /v1/force-leave", func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("node")
		if err := cluster.ValidateNodeID(id); err != nil {
			http.Error(w, "force-leave: node: "+err.Error(), http.StatusBadRequest)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		if err := n.Cluster.ForceRemove(ctx, id); err != nil {
			code := http.StatusInternalServerError
			if errors.Is(err, cluster.ErrNodeAlive) || errors.Is(err, cluster.ErrNotServer) {
				code = http.StatusConflict
			}
			http.Error(w, err.Error(), code)
			return
		}
		fmt.Fprintf(w, "removed %s from the cluster\n", id)
	})
	mux.HandleFunc("/v1/faults", n.handleFaults)
	mux.HandleFunc("GET /v1/fsm", n.handleFSMDigest)
	if n.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// Ready reports whether the node has a leader and has applied everything
// the leader had committed when asked.
func (n *Node) Ready(ctx context.Context) (bool, string) {
	if n.Cluster.LeaderID() == "" {
		return false, "no leader"
	}
	if n.ready.Load() {
		return true, ""
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := n.Cluster.LinearizableRead(ctx); err != nil {
		return false, "catching up: " + err.Error()
	}
	n.ready.Store(true)
	return true, ""
}

// FSMDigest identifies this node's replicated state: two nodes with the
// same digest at the same index hold byte-identical snapshots.
type FSMDigest struct {
	Node         string `json:"node"`
	AppliedIndex uint64 `json:"applied_index"`
	SHA256       string `json:"sha256"`
	Sessions     int    `json:"sessions"`
	Routes       int    `json:"routes"`
}

// Digest returns the FSM digest of this node.
func (n *Node) Digest() (FSMDigest, error) {
	b, err := n.FSM.SnapshotBytes()
	if err != nil {
		return FSMDigest{}, err
	}
	var idx struct {
		Index uint64 `json:"index"`
	}
	_ = json.Unmarshal(b, &idx)
	sum := sha256.Sum256(b)
	d := FSMDigest{Node: n.cfg.NodeID, AppliedIndex: idx.Index, SHA256: hex.EncodeToString(sum[:])}
	n.FSM.View(func(st *fsm.State) {
		d.Sessions = len(st.Sessions)
		for _, s := range st.Sessions {
			d.Routes += len(s.Active.Routes)
		}
	})
	return d, nil
}

// handleFSMDigest serves the FSM digest, used by raftgate chaos to check
// that every node converged to the same state.
func (n *Node) handleFSMDigest(w http.ResponseWriter, _ *http.Request) {
	d, err := n.Digest()
	if err != nil {
		http.Error(w, "snapshot failed: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(d)
}

// faultRequest is the body of POST /v1/faults.
type faultRequest struct {
	// Partition lists node IDs to cut off from; empty heals.
	Partition []string `json:"partition"`
}

// handleFaults lets raftgate chaos cut this node off from chosen peers. It
// exists only with --fault-injection, a test-only flag.
func (n *Node) handleFaults(w http.ResponseWriter, r *http.Request) {
	if n.Faults == nil {
		http.Error(w, "fault injection is disabled (start the node with --fault-injection)", http.StatusForbidden)
		return
	}
	switch r.Method {
	case http.MethodGet:
	case http.MethodPost:
		var req faultRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
			http.Error(w, "invalid json: "+err.Error(), http.StatusBadRequest)
			return
		}
		if len(req.Partition) == 0 {
			n.Faults.Heal()
			n.log.Warn("fault injection: healed")
		} else {
			n.Faults.Partition(req.Partition...)
			n.log.Warn("fault injection: partitioned", "peers", strings.Join(req.Partition, ","))
		}
	default:
		http.Error(w, "use GET or POST", http.StatusMethodNotAllowed)
		return
	}
	_ = json.NewEncoder(w).Encode(faultRequest{Partition: n.Faults.Partitioned()})
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
