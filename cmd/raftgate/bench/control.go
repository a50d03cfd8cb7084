package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/raftgate/raftgate/cmd/raftgate/localcluster"
)

// Control measures ROUTE_ADD+CONFIG_APPLY on a local 3-node cluster with
// several client counts against two physical limits measured in the same
// run and directory: one bolt fsync'd write and one loopback round trip.
func Control(ctx context.Context, o Options) (*Report, error) {
	o = o.withDefaults()
	rep := newReport("control", "ROUTE_ADD+CONFIG_APPLY on 3 nodes vs fsync and loopback RTT")
	start := time.Now()
	dir, cleanup, err := workDir(o.Dir, "control")
	if err != nil {
		return nil, err
	}
	defer cleanup()

	fsyncs := 200
	if o.Quick {
		fsyncs = 30
	}
	fs, err := measureFsync(filepath.Join(dir, "fsync.db"), fsyncs)
	if err != nil {
		return nil, err
	}
	rtt, err := measureRTT(ctx, 2000)
	if err != nil {
		return nil, err
	}
	fsP50, rttP50 := median(fs), median(rtt)
	rep.Baseline["fsync_p50_ms"] = fsP50
	rep.Baseline["fsync_per_s"] = 1000 / fsP50
	rep.Baseline["loopback_rtt_p50_ms"] = rttP50
	fmt.Fprintf(o.Progress, "control: fsync p50 %.3fms (%.0f/s), loopback RTT p50 %.3fms\n", fsP50, 1000/fsP50, rttP50)

	c, err := startCluster(ctx, o.Binary, dir, 3)
	if err != nil {
		return nil, err
	}
	defer func() { _ = c.StopAll(clusterStopLimit) }()
	leader, err := c.WaitLeader(ctx, 3, 30*time.Second)
	if err != nil {
		return nil, err
	}
	var pingLat []float64
	if lc, err := dialLine(ctx, c.Nodes[leader].Control); err == nil {
		for range 500 {
			t0 := time.Now()
			if _, err := lc.expect("PING", "PONG", 5*time.Second); err != nil {
				break
			}
			pingLat = append(pingLat, ms(time.Since(t0)))
		}
		lc.close()
	}
	if len(pingLat) > 0 {
		rep.Baseline["ping_p50_ms"] = median(pingLat)
	}

	type phase struct {
		name    string
		clients int
		nodes   []int // nodes the clients connect to, round robin
	}
	var follower int
	for i := range c.Nodes {
		if i != leader {
			follower = i
			break
		}
	}
	var phases []phase
	for _, n := range o.Clients {
		if n == 1 {
			phases = append(phases, phase{"1 client (leader)", 1, []int{leader}}, phase{"1 client (follower)", 1, []int{follower}})
			continue
		}
		phases = append(phases, phase{fmt.Sprintf("%d clients (all nodes)", n), n, []int{0, 1, 2}})
	}
	rep.Columns = []Column{
		{Key: "writes_per_s", Header: "writes/s", Format: "%.0f"},
		{Key: "pairs_per_s", Header: "add+apply/s", Format: "%.0f"},
		{Key: "add_p50_ms", Header: "ROUTE_ADD p50", Format: "%.2f"},
		{Key: "add_p99_ms", Header: "ROUTE_ADD p99", Format: "%.2f"},
		{Key: "apply_p50_ms", Header: "APPLY p50", Format: "%.2f"},
		{Key: "apply_p99_ms", Header: "APPLY p99", Format: "%.2f"},
		{Key: "pair_p50_ms", Header: "pair p50", Format: "%.2f"},
		{Key: "pair_p99_ms", Header: "pair p99", Format: "%.2f"},
		{Key: "x_limit", Header: "write p50 ÷ (fsync+RTT)", Format: "%.2f"},
		{Key: "errors", Header: "errors", Format: "%.0f"},
	}
	rep.Charts = []Chart{{Key: "writes_per_s", Title: "acknowledged writes/s (ROUTE_ADD and CONFIG_APPLY each count)"}, {Key: "add_p50_ms", Title: "ROUTE_ADD p50 latency, ms"}}
	for _, ph := range phases {
		m, err := controlPhase(ctx, c, ph.clients, ph.nodes, o.ControlDuration)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ph.name, err)
		}
		m["x_limit"] = m["add_p50_ms"] / (fsP50 + rttP50)
		rep.addRow(ph.name, m)
		fmt.Fprintf(o.Progress, "control: %-22s %6.0f writes/s, ROUTE_ADD p50 %.2fms p99 %.2fms, CONFIG_APPLY p50 %.2fms\n", ph.name, m["writes_per_s"], m["add_p50_ms"], m["add_p99_ms"], m["apply_p50_ms"])
	}
	limit := fsP50 + rttP50
	if r := rep.row("1 client (leader)"); r != nil {
		x := r.Metrics["add_p50_ms"] / limit
		rep.target("single-client write latency", "≤ 3× (fsync + RTT)", fmt.Sprintf("%.2f× (ROUTE_ADD p50 %.2f ms; fsync %.2f ms + RTT %.3f ms)", x, r.Metrics["add_p50_ms"], fsP50, rttP50), x <= 3)
	}
	for _, row := range rep.Rows {
		if row.Name == "64 clients (all nodes)" {
			w := row.Metrics["writes_per_s"]
			rep.target("write throughput, 64 clients", "≥ 2000 acknowledged writes/s", fmt.Sprintf("%.0f writes/s (%.0f ROUTE_ADD+CONFIG_APPLY pairs/s)", w, row.Metrics["pairs_per_s"]), w >= 2000)
		}
	}
	rep.note("a write is one acknowledged log command; each ROUTE_ADD+CONFIG_APPLY pair is two writes; each phase starts from an empty table (sessions end with CLIENT_SHUTDOWN)")
	rep.Command = fmt.Sprintf("3 nodes, clients %v, %s per phase; fsync: %d bolt Update txns in the data directory's filesystem; RTT: 1-byte TCP echo on 127.0.0.1", o.Clients, o.ControlDuration, fsyncs)
	rep.Elapsed = time.Since(start).Seconds()
	return rep, nil
}

// controlPhase runs clients, each with its own session and connection,
// adding and applying one route at a time for d.
func controlPhase(ctx context.Context, c *localcluster.Cluster, clients int, nodes []int, d time.Duration) (map[string]float64, error) {
	type result struct {
		add, apply, pair []float64
		errs             int
		err              error
	}
	res := make([]result, clients)
	conns := make([]*lineConn, clients)
	sessions := make([]string, clients)
	defer func() {
		for i, lc := range conns {
			if lc != nil {
				_, _ = lc.do("CLIENT_SHUTDOWN|"+sessions[i], 10*time.Second)
				lc.close()
			}
		}
	}()
	for i := range clients {
		lc, err := dialLine(ctx, c.Nodes[nodes[i%len(nodes)]].Control)
		if err != nil {
			return nil, err
		}
		conns[i] = lc
		if sessions[i], err = lc.register("ctl", fmt.Sprintf("c%d-%d", clients, i)); err != nil {
			return nil, err
		}
	}
	var wg sync.WaitGroup
	begin := time.Now()
	stopAt := begin.Add(d)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &res[i]
			lc, s := conns[i], sessions[i]
			for k := 0; time.Now().Before(stopAt) && ctx.Err() == nil; k++ {
				t0 := time.Now()
				_, err := lc.expect(fmt.Sprintf("ROUTE_ADD|%s|c%d.k%d.ctl.test|/|http://127.0.0.1:9|0", s, i, k), "ROUTE_OK|", 15*time.Second)
				t1 := time.Now()
				if err == nil {
					_, err = lc.expect("CONFIG_APPLY|"+s, "OK", 15*time.Second)
				}
				t2 := time.Now()
				if err != nil {
					r.errs++
					if r.errs > 10 {
						r.err = err
						return
					}
					continue
				}
				r.add = append(r.add, ms(t1.Sub(t0)))
				r.apply = append(r.apply, ms(t2.Sub(t1)))
				r.pair = append(r.pair, ms(t2.Sub(t0)))
			}
		}()
	}
	wg.Wait()
	el := time.Since(begin).Seconds()
	var add, apply, pair []float64
	errs := 0
	for _, r := range res {
		if r.err != nil {
			return nil, r.err
		}
		add, apply, pair = append(add, r.add...), append(apply, r.apply...), append(pair, r.pair...)
		errs += r.errs
	}
	if len(pair) == 0 {
		return nil, fmt.Errorf("no write acknowledged in %s", time.Duration(el*float64(time.Second)))
	}
	return map[string]float64{
		"writes_per_s": float64(2*len(pair)) / el, "pairs_per_s": float64(len(pair)) / el,
		"add_p50_ms": quantile(add, 0.5), "add_p99_ms": quantile(add, 0.99),
		"apply_p50_ms": quantile(apply, 0.5), "apply_p99_ms": quantile(apply, 0.99),
		"pair_p50_ms": quantile(pair, 0.5), "pair_p99_ms": quantile(pair, 0.99),
		"errors": float64(errs), "acknowledged": float64(2 * len(pair)),
	}, nil
}

// measureFsync times n bolt update transactions, each writing one small
// key and fsyncing, as raft-boltdb does for every batch of log entries.
func measureFsync(path string, n int) ([]float64, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open bolt file for the fsync baseline: %w", err)
	}
	defer func() {
		db.Close()
		os.Remove(path)
	}()
	val := make([]byte, 256)
	out := make([]float64, 0, n)
	for i := range n {
		t0 := time.Now()
		err := db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("logs"))
			if err != nil {
				return err
			}
			return b.Put(fmt.Appendf(nil, "%016d", i), val)
		})
		if err != nil {
			return nil, fmt.Errorf("bolt write %d: %w", i, err)
		}
		out = append(out, ms(time.Since(t0)))
	}
	return out, nil
}

// measureRTT times n one-byte ping-pongs over a loopback TCP connection.
func measureRTT(ctx context.Context, n int) ([]float64, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("rtt listener: %w", err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, c)
	}()
	d := net.Dialer{Timeout: 2 * time.Second}
	c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		return nil, fmt.Errorf("rtt dial: %w", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	buf := []byte{1}
	out := make([]float64, 0, n)
	for range n {
		t0 := time.Now()
		if _, err := c.Write(buf); err != nil {
			return nil, fmt.Errorf("rtt write: %w", err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return nil, fmt.Errorf("rtt read: %w", err)
		}
		out = append(out, ms(time.Since(t0)))
	}
	return out, nil
}
