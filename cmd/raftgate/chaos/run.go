package chaos

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/raftgate/raftgate/cmd/raftgate/localcluster"
)

// harness is one chaos run: the cluster, the backend, the probes and the
// facts that outlive a round.
type harness struct {
	cfg        Config
	log        *slog.Logger
	dir        string
	base       int
	backend    *backend
	backendURL string
	probes     *prober
	runCtx     context.Context // lives until the run ends

	// cluster holds every node slot, by index; nil until the cluster
	// starts. Slots added later are appended under mu.
	cluster *localcluster.Cluster

	mu       sync.Mutex
	members  []*localcluster.Node // nodes meant to be in the cluster now
	problems []string
	// finalRoutes maps every route ID seen in a final read to its
	// session, to find a route that shows up twice.
	finalRoutes map[string]string
	duplicates  int

	reattached      atomic.Int64 // RECONNECTs by workload owners
	heldReattaches  atomic.Int64
	maxHeldReattach atomic.Int64 // nanoseconds
	expiredHeld     atomic.Int64
}

func (h *harness) problem(msg string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.problems = append(h.problems, msg)
	h.log.Error("violation", "what", msg)
}

func (h *harness) noteReattach(sessions int, took time.Duration) {
	h.heldReattaches.Add(int64(sessions))
	for {
		old := h.maxHeldReattach.Load()
		if int64(took) <= old || h.maxHeldReattach.CompareAndSwap(old, int64(took)) {
			return
		}
	}
}

// noteFinalRoute records a route seen in a final read; seeing one route
// ID in two places, or twice, is a duplicate.
func (h *harness) noteFinalRoute(routeID, where string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if prev, ok := h.finalRoutes[routeID]; ok {
		h.duplicates++
		h.problems = append(h.problems, fmt.Sprintf("route %s appears twice (%s and %s)", routeID, prev, where))
		return
	}
	h.finalRoutes[routeID] = where
}

func (h *harness) currentMembers() []*localcluster.Node {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*localcluster.Node(nil), h.members...)
}

func (h *harness) addMember(n *localcluster.Node) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.members = append(h.members, n)
}

func (h *harness) removeMember(n *localcluster.Node) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.members = without(h.members, n)
}

// pickMember returns a random member, another than avoid when possible.
func (h *harness) pickMember(rng *rand.Rand, avoid string) *localcluster.Node {
	h.mu.Lock()
	defer h.mu.Unlock()
	var pool []*localcluster.Node
	for _, n := range h.members {
		if n.ID != avoid {
			pool = append(pool, n)
		}
	}
	if len(pool) == 0 {
		pool = h.members
	}
	if len(pool) == 0 {
		return nil
	}
	return pool[rng.IntN(len(pool))]
}

// spareNode returns the first slot that is not a member (making one).
func (h *harness) spareNode() *localcluster.Node {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, n := range h.cluster.Nodes {
		if !containsNode(h.members, n) {
			return n
		}
	}
	n := h.newSlot(len(h.cluster.Nodes))
	h.cluster.Nodes = append(h.cluster.Nodes, n)
	return n
}

func containsNode(nodes []*localcluster.Node, n *localcluster.Node) bool {
	for _, m := range nodes {
		if m == n {
			return true
		}
	}
	return false
}

// Run starts a cluster, runs the configured rounds of workload and faults,
// checks everything and returns the report. An error means the harness
// itself could not run (the cluster did not come up); violations are in
// the report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	h := &harness{cfg: cfg, log: cfg.Logger, probes: newProber(), finalRoutes: map[string]string{}}
	if h.dir, err = prepareDir(cfg.DataDir); err != nil {
		return nil, err
	}
	rep := &Report{Seed: cfg.Seed, Nodes: cfg.Nodes, Clients: cfg.Clients, Rounds: cfg.Rounds, DataDir: h.dir}
	for _, s := range cfg.Scenarios {
		rep.Scenarios = append(rep.Scenarios, s)
	}
	started := time.Now()
	err = h.run(ctx, rep)
	rep.Elapsed = time.Since(started)
	rep.finish(h)
	if err != nil || !rep.OK() || cfg.KeepData {
		rep.KeptData = true
	} else {
		_ = os.RemoveAll(h.dir)
	}
	return rep, err
}

func prepareDir(dir string) (string, error) {
	if dir == "" {
		d, err := os.MkdirTemp("", "raftgate-chaos-")
		if err != nil {
			return "", fmt.Errorf("make data dir: %w", err)
		}
		return d, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("make data dir: %w", err)
	}
	return dir, nil
}

// choosePorts finds a free block of ports for the nodes (one spare slot
// for the membership scenario).
func (h *harness) choosePorts() error {
	slots := h.cfg.Nodes + 1
	if h.cfg.BasePort != 0 {
		if !localcluster.PortsFree(h.cfg.BasePort, slots) {
			return fmt.Errorf("ports from %d are not all free", h.cfg.BasePort)
		}
		h.base = h.cfg.BasePort
		return nil
	}
	base, err := localcluster.FreeBase(slots)
	if err != nil {
		return fmt.Errorf("%w (or pass --base-port)", err)
	}
	h.base = base
	return nil
}

func (h *harness) run(ctx context.Context, rep *Report) error {
	runCtx, cancel := context.WithCancel(ctx)
	h.runCtx = runCtx
	var holders sync.WaitGroup
	defer func() {
		cancel()
		holders.Wait()
		h.probes.stopAll()
		h.stopNodes()
		if h.backend != nil {
			h.backend.close()
		}
	}()
	var err error
	if h.backend, err = startBackend(); err != nil {
		return err
	}
	h.backendURL = h.backend.url
	if err := h.choosePorts(); err != nil {
		return err
	}
	if err := h.startCluster(runCtx); err != nil {
		return err
	}
	held, err := h.startHolders(runCtx, &holders)
	if err != nil {
		return err
	}
	var sessions []*wsession
	for i := range h.cfg.Rounds {
		if runCtx.Err() != nil {
			return errStopped
		}
		r := &round{h: h, num: i, seed: h.cfg.Seed + int64(i)}
		rr, err := r.run(runCtx)
		if err != nil {
			return fmt.Errorf("round %d: %w", i, err)
		}
		rep.RoundReports = append(rep.RoundReports, rr)
		sessions = append(sessions, r.sessions...)
	}
	// The run's last word on sessions: every one never shut down is alive.
	if err := h.checkSessionsAlive(runCtx, sessions); err != nil {
		return err
	}
	if err := h.checkHeld(runCtx, held); err != nil {
		return err
	}
	rep.HeldSessions = len(held)
	return nil
}

// startCluster starts the configured nodes and waits until all serve.
func (h *harness) startCluster(ctx context.Context) error {
	h.cluster = newCluster(h.cfg, h.dir, h.base)
	if err := h.cluster.StartAll(); err != nil {
		return err
	}
	h.members = append([]*localcluster.Node(nil), h.cluster.Nodes...)
	h.log.Info("cluster starting", "nodes", h.cfg.Nodes, "base_port", h.base, "dir", h.dir)
	if err := h.cluster.WaitReady(ctx, 60*time.Second); err != nil {
		return fmt.Errorf("cluster did not become ready within 60s (logs in %s): %w", h.dir, err)
	}
	return nil
}

// startHolders registers the probe session and the idle sessions (the
// holders work in parallel, so raft batches their writes), waits until
// every proxy serves the probe route, and starts the probe loops.
func (h *harness) startHolders(ctx context.Context, wg *sync.WaitGroup) ([]idleSession, error) {
	count := h.cfg.IdleSessions
	const perHolder = 125
	nHolders := max(1, (count+perHolder-1)/perHolder)
	holders := make([]*holder, nHolders)
	held := make([][]idleSession, nHolders)
	errs := make([]error, nHolders)
	var setup sync.WaitGroup
	for k := range nHolders {
		setup.Add(1)
		go func() {
			defer setup.Done()
			holders[k], held[k], errs[k] = h.newHolder(ctx, k, k*perHolder, min((k+1)*perHolder, count))
		}()
	}
	setup.Wait()
	var all []idleSession
	var firstErr error
	for k, ho := range holders {
		if errs[k] != nil && firstErr == nil {
			firstErr = errs[k]
		}
		if ho == nil {
			continue
		}
		if firstErr != nil {
			ho.conn.close()
			continue
		}
		all = append(all, held[k]...)
		wg.Add(1)
		go ho.run(ctx, wg)
	}
	if firstErr != nil {
		return nil, firstErr
	}
	for _, n := range h.cluster.Nodes {
		if err := h.waitServing(ctx, n); err != nil {
			return nil, err
		}
		h.probes.start(ctx, n)
	}
	return all, nil
}

// newHolder opens holder k on a node and registers its sessions: idle
// sessions from..to, and for holder 0 the probe session.
func (h *harness) newHolder(ctx context.Context, k, from, to int) (*holder, []idleSession, error) {
	n := h.cluster.Nodes[k%len(h.cluster.Nodes)]
	c, err := dialLine(ctx, n.Control, 2*time.Second)
	if err != nil {
		return nil, nil, err
	}
	ho := &holder{h: h, conn: c, node: n.ID, rng: rand.New(rand.NewPCG(uint64(h.cfg.Seed), uint64(k)+1000))}
	var all []idleSession
	if k == 0 {
		probe, err := h.registerHeld(c, "chaos-probe", "probe", 1, func(int) string { return probeHost }, probePath)
		if err != nil {
			c.close()
			return nil, nil, err
		}
		all = append(all, probe...)
	}
	if to > from {
		idle, err := h.registerHeld(c, "chaos-idle", fmt.Sprintf("h%d-", k), to-from,
			func(i int) string { return fmt.Sprintf("idle-%d-%d.chaos.test", k, i) }, "/idle")
		if err != nil {
			c.close()
			return nil, nil, err
		}
		all = append(all, idle...)
	}
	for _, s := range all {
		ho.sessions = append(ho.sessions, s.id)
	}
	return ho, all, nil
}

// checkSessionsAlive asks for SESSION_INFO of every workload session.
func (h *harness) checkSessionsAlive(ctx context.Context, sessions []*wsession) error {
	var ids []idleSession
	for _, s := range sessions {
		s.mu.Lock()
		gone := s.expired
		s.mu.Unlock()
		if !gone {
			ids = append(ids, idleSession{id: s.id})
		}
	}
	n := h.pickMember(rand.New(rand.NewPCG(1, 2)), "")
	c, err := dialLine(ctx, n.Control, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.close()
	lines := make([]string, len(ids))
	for i, s := range ids {
		lines[i] = "SESSION_INFO|" + s.id
	}
	answers, err := c.doMany(lines, 60*time.Second)
	if err != nil {
		return fmt.Errorf("final SESSION_INFO: %w", err)
	}
	for i, a := range answers {
		if len(a) < 11 || a[:11] != "SESSION_OK|" {
			h.problem(fmt.Sprintf("live session %s expired: SESSION_INFO answered %q", ids[i].id, a))
		}
	}
	return nil
}

// stopNodes stops every running node: SIGTERM in parallel, SIGQUIT and
// SIGKILL after 20 s.
func (h *harness) stopNodes() {
	if h.cluster != nil {
		_ = h.cluster.StopAll(20 * time.Second)
	}
}
