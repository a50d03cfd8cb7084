package bench

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// Propagation measures the time from a CONFIG_APPLY's OK until every
// node's proxy serves the new route, polling each proxy tightly.
func Propagation(ctx context.Context, o Options) (*Report, error) {
	o = o.withDefaults()
	rep := newReport("propagation", "CONFIG_APPLY OK → every node's proxy serves the change")
	start := time.Now()
	c, backend, teardown, err := clusterWithBackend(ctx, o, "propagation")
	if err != nil {
		return nil, err
	}
	defer teardown()

	conns := make([]*lineConn, len(c.Nodes))
	for i, nd := range c.Nodes {
		if conns[i], err = dialLine(ctx, nd.Control); err != nil {
			return nil, err
		}
		defer conns[i].close()
	}
	s, err := conns[0].register("prop", "bench")
	if err != nil {
		return nil, err
	}
	clients := make([]*http.Client, len(c.Nodes))
	for i := range clients {
		tr := &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}
		defer tr.CloseIdleConnections()
		clients[i] = &http.Client{Transport: tr, Timeout: 2 * time.Second}
	}
	var all, answering []float64
	perNode := make([][]float64, len(c.Nodes))
	for k := 0; k < o.Samples && ctx.Err() == nil; k++ {
		via := k % len(c.Nodes)
		host := fmt.Sprintf("p%d.prop.test", k)
		if _, err := conns[via].expect(fmt.Sprintf("ROUTE_ADD|%s|%s|/|%s|0", s, host, backend), "ROUTE_OK|", 10*time.Second); err != nil {
			return nil, err
		}
		if _, err := conns[via].expect("CONFIG_APPLY|"+s, "OK", 10*time.Second); err != nil {
			return nil, err
		}
		okAt := time.Now()
		lags := make([]time.Duration, len(c.Nodes))
		var wg sync.WaitGroup
		var firstErr error
		var mu sync.Mutex
		for i, nd := range c.Nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				url := "http://" + nd.Proxy + "/"
				for {
					code, err := get(ctx, clients[i], url, host)
					if err == nil && code == http.StatusOK {
						lags[i] = time.Since(okAt)
						return
					}
					if time.Since(okAt) > 10*time.Second {
						mu.Lock()
						firstErr = fmt.Errorf("%s never served %s (last %d %v)", nd.ID, host, code, err)
						mu.Unlock()
						return
					}
				}
			}()
		}
		wg.Wait()
		if firstErr != nil {
			return nil, firstErr
		}
		worst := time.Duration(0)
		for i, l := range lags {
			worst = max(worst, l)
			perNode[i] = append(perNode[i], ms(l))
		}
		all = append(all, ms(worst))
		answering = append(answering, ms(lags[via]))
	}
	if len(all) == 0 {
		return nil, fmt.Errorf("no sample: %w", ctx.Err())
	}
	rep.Columns = []Column{
		{Key: "p50_ms", Header: "p50 ms", Format: "%.3f"},
		{Key: "p99_ms", Header: "p99 ms", Format: "%.3f"},
		{Key: "max_ms", Header: "max ms", Format: "%.3f"},
		{Key: "samples", Header: "samples", Format: "%.0f"},
	}
	rep.Charts = []Chart{{Key: "p50_ms", Title: "p50, ms"}, {Key: "p99_ms", Title: "p99, ms"}}
	row := func(name string, xs []float64) {
		rep.addRow(name, map[string]float64{"p50_ms": quantile(xs, 0.5), "p99_ms": quantile(xs, 0.99), "max_ms": maxOf(xs), "samples": float64(len(xs))})
	}
	row("all nodes serve", all)
	row("answering node serves", answering)
	for i, xs := range perNode {
		row(c.Nodes[i].ID, xs)
	}
	p99 := rep.Rows[0].Metrics["p99_ms"]
	rep.target("propagation p99", "≤ 50 ms", fmt.Sprintf("%.2f ms (p50 %.2f ms)", p99, rep.Rows[0].Metrics["p50_ms"]), p99 <= 50)
	rep.note("the answering node's lag includes one HTTP round trip of the poll; a lag there means OK came before the node served the change")
	rep.Command = fmt.Sprintf("3 nodes, %d applies rotated over the nodes, each node's proxy polled back to back after OK", o.Samples)
	rep.Elapsed = time.Since(start).Seconds()
	return rep, nil
}

// inprocBackend serves the benchmark body on a loopback port in this
// process; it is for control-plane benchmarks whose HTTP load is light.
func inprocBackend(ctx context.Context) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("backend: %w", err)
	}
	bctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = serveBackend(bctx, ln, 64)
	}()
	return "http://" + ln.Addr().String(), func() { cancel(); <-done }, nil
}
