package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Failover kills the leader of a 3-node cluster (SIGKILL) repeatedly while
// writers run, and measures the write unavailability of each kill: from
// the kill until the first write sent after it is acknowledged. Probes
// through the surviving nodes' proxies count data-plane errors.
func Failover(ctx context.Context, o Options) (*Report, error) {
	o = o.withDefaults()
	rep := newReport("failover", "leader SIGKILL under writers: write unavailability and data-plane errors")
	start := time.Now()
	c, backend, teardown, err := clusterWithBackend(ctx, o, "failover")
	if err != nil {
		return nil, err
	}
	defer teardown()

	// One route served by every node for the probes.
	lc, err := dialLine(ctx, c.Nodes[0].Control)
	if err != nil {
		return nil, err
	}
	ps, err := lc.register("probe", "bench")
	if err == nil {
		_, err = lc.addRoute(ps, "probe.test", "/", backend)
	}
	lc.close()
	if err != nil {
		return nil, err
	}
	for _, nd := range c.Nodes {
		if err := waitOK(ctx, "http://"+nd.Proxy+"/", "probe.test", 10*time.Second); err != nil {
			return nil, err
		}
	}

	// up[i] is true while node i is running and serving; probes count a
	// failure only when the node was up before and after the request.
	up := make([]atomic.Bool, len(c.Nodes))
	for i := range up {
		up[i].Store(true)
	}
	wctx, stopWork := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var probeOK, probeFail atomic.Int64
	for i, nd := range c.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{MaxIdleConnsPerHost: 2, DisableCompression: true}
			defer tr.CloseIdleConnections()
			hc := &http.Client{Transport: tr, Timeout: 2 * time.Second}
			for wctx.Err() == nil {
				if !up[i].Load() {
					select {
					case <-wctx.Done():
					case <-time.After(5 * time.Millisecond):
					}
					continue
				}
				code, err := get(wctx, hc, "http://"+nd.Proxy+"/", "probe.test")
				if wctx.Err() != nil || !up[i].Load() {
					continue
				}
				if err != nil || code != http.StatusOK {
					probeFail.Add(1)
				} else {
					probeOK.Add(1)
				}
			}
		}()
	}

	// Writers: each keeps its session and moves to another node when its
	// connection breaks (a session is usable from any node).
	var acks sync.Mutex
	var ackTimes []ackRec // (sent, acked)
	var writeErrs atomic.Int64
	for w := 0; w < o.Writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			var lc *lineConn
			var s string
			defer func() {
				if lc != nil {
					lc.close()
				}
			}()
			for k := 0; wctx.Err() == nil; k++ {
				if lc == nil {
					i := rng.IntN(len(c.Nodes))
					if !up[i].Load() {
						continue
					}
					conn, err := dialLine(wctx, c.Nodes[i].Control)
					if err != nil {
						// A refused dial returns at once; pause before the next node.
						select {
						case <-wctx.Done():
						case <-time.After(10 * time.Millisecond):
						}
						continue
					}
					lc = conn
					if s == "" {
						if s, err = lc.register("writer", fmt.Sprint(w)); err != nil {
							lc.close()
							lc, s = nil, ""
							continue
						}
					}
				}
				sent := time.Now()
				_, err := lc.expect(fmt.Sprintf("ROUTE_ADD|%s|w%d.k%d.fail.test|/|http://127.0.0.1:9|0", s, w, k), "ROUTE_OK|", 6*time.Second)
				if err != nil {
					writeErrs.Add(1)
					lc.close()
					lc = nil
					continue
				}
				acks.Lock()
				ackTimes = append(ackTimes, ackRec{sent, time.Now()})
				acks.Unlock()
			}
		}()
	}

	var unavail []float64
	var killErr error
	for k := 0; k < o.Kills && ctx.Err() == nil; k++ {
		leader, err := c.WaitLeader(ctx, 3, 60*time.Second)
		if err != nil {
			killErr = err
			break
		}
		// Let the writers run on a healthy cluster before each kill.
		if err := waitAcks(ctx, &acks, &ackTimes, time.Now(), 20, 10*time.Second); err != nil {
			killErr = fmt.Errorf("before kill %d: %w", k+1, err)
			break
		}
		up[leader].Store(false)
		killedAt := time.Now()
		_ = c.Nodes[leader].Kill()
		if err := waitAcks(ctx, &acks, &ackTimes, killedAt, 1, 30*time.Second); err != nil {
			killErr = fmt.Errorf("after kill %d: %w", k+1, err)
			break
		}
		acks.Lock()
		first := time.Duration(-1)
		for _, a := range ackTimes {
			if !a.sent.Before(killedAt) && (first < 0 || a.acked.Sub(killedAt) < first) {
				first = a.acked.Sub(killedAt)
			}
		}
		acks.Unlock()
		unavail = append(unavail, ms(first))
		fmt.Fprintf(o.Progress, "failover: kill %d of %s: writes back after %.0f ms\n", k+1, c.Nodes[leader].ID, ms(first))
		if err := c.StartNode(leader); err != nil {
			killErr = err
			break
		}
		if err := waitOK(ctx, "http://"+c.Nodes[leader].Proxy+"/", "probe.test", 30*time.Second); err != nil {
			killErr = err
			break
		}
		up[leader].Store(true)
	}
	stopWork()
	wg.Wait()
	if len(unavail) == 0 {
		return nil, fmt.Errorf("no kill measured: %v", killErr)
	}
	if killErr != nil {
		rep.note("stopped after %d kills: %v", len(unavail), killErr)
	}
	med, worst := median(unavail), maxOf(unavail)
	rep.Columns = []Column{
		{Key: "kills", Header: "kills", Format: "%.0f"},
		{Key: "unavail_p50_ms", Header: "unavailability median ms", Format: "%.0f"},
		{Key: "unavail_max_ms", Header: "max ms", Format: "%.0f"},
		{Key: "writes_acked", Header: "writes acked", Format: "%.0f"},
		{Key: "write_errors", Header: "write errors (unknown/failed)", Format: "%.0f"},
		{Key: "probes", Header: "probes on survivors", Format: "%.0f"},
		{Key: "probe_errors", Header: "probe errors", Format: "%.0f"},
	}
	rep.Charts = []Chart{{Key: "unavail_p50_ms", Title: "write unavailability median, ms"}, {Key: "unavail_max_ms", Title: "write unavailability max, ms"}}
	acks.Lock()
	nacks := len(ackTimes)
	acks.Unlock()
	rep.addRow("leader SIGKILL", map[string]float64{"kills": float64(len(unavail)), "unavail_p50_ms": med, "unavail_max_ms": worst,
		"writes_acked": float64(nacks), "write_errors": float64(writeErrs.Load()), "probes": float64(probeOK.Load() + probeFail.Load()), "probe_errors": float64(probeFail.Load())})
	rep.Baseline["election_timeout_ms"] = 500
	rep.target("failover median", "≤ 1.5 s", fmt.Sprintf("%.0f ms", med), med <= 1500)
	rep.target("failover worst", "≤ 3 s", fmt.Sprintf("%.0f ms", worst), worst <= 3000)
	rep.target("data-plane errors on survivors", "0", fmt.Sprint(probeFail.Load()), probeFail.Load() == 0)
	rep.note("unavailability per kill: %v ms", roundAll(unavail))
	rep.Command = fmt.Sprintf("3 nodes, %d writers (ROUTE_ADD, reconnecting to a random live node), %d leader kills, restart after writes resume, probes through every live proxy", o.Writers, o.Kills)
	rep.Elapsed = time.Since(start).Seconds()
	return rep, nil
}

type ackRec struct{ sent, acked time.Time }

// waitAcks waits until n writes sent at or after since were acknowledged.
func waitAcks(ctx context.Context, mu *sync.Mutex, acks *[]ackRec, since time.Time, n int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		mu.Lock()
		got := 0
		for i := len(*acks) - 1; i >= 0 && got < n; i-- {
			if !(*acks)[i].sent.Before(since) {
				got++
			}
		}
		mu.Unlock()
		if got >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d writes acknowledged within %s", got, n, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func roundAll(xs []float64) []int {
	out := make([]int, len(xs))
	for i, x := range xs {
		out[i] = int(x + 0.5)
	}
	return out
}
