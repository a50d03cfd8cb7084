package chaos

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/raftgate/raftgate/cmd/raftgate/localcluster"
)

// probeHost and probePath address the probe route every node serves.
const (
	probeHost = "probe.chaos.test"
	probePath = "/probe"
)

// backend is the healthy loopback HTTP server behind every route: it
// answers 200 with the request path, so a proxied request proves which
// route it went through.
type backend struct {
	srv *http.Server
	url string
	wg  sync.WaitGroup
}

func startBackend() (*backend, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("backend listen: %w", err)
	}
	b := &backend{url: "http://" + ln.Addr().String()}
	b.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, r.URL.Path)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		_ = b.srv.Serve(ln)
	}()
	return b, nil
}

func (b *backend) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = b.srv.Shutdown(ctx)
	b.wg.Wait()
}

// window is a time during which a node is faulted (down, stopped, cut off
// in a minority, joining or leaving); probe failures overlapping it do not
// count.
type window struct {
	from, to time.Time // to zero: still open
}

// probeFailure is one failed probe request.
type probeFailure struct {
	node       string
	start, end time.Time
	err        string
}

// prober runs one probe loop per node through its proxy.
type prober struct {
	mu       sync.Mutex
	windows  map[string][]*window
	failures []probeFailure
	total    int
	loops    map[string]*probeLoop
	wg       sync.WaitGroup
}

type probeLoop struct {
	n      *localcluster.Node
	tr     *http.Transport
	cancel context.CancelFunc
}

func newProber() *prober {
	return &prober{windows: map[string][]*window{}, loops: map[string]*probeLoop{}}
}

// exclude opens a fault window on a node; call the returned func to close it.
func (p *prober) exclude(n *localcluster.Node) func() {
	w := &window{from: time.Now()}
	p.mu.Lock()
	p.windows[n.ID] = append(p.windows[n.ID], w)
	loop := p.loops[n.ID]
	p.mu.Unlock()
	return func() {
		p.mu.Lock()
		if w.to.IsZero() {
			w.to = time.Now()
		}
		p.mu.Unlock()
		// Connections from before the fault may be half dead (a stopped
		// peer); new probes start on fresh ones.
		if loop != nil {
			loop.tr.CloseIdleConnections()
		}
	}
}

// start begins probing n until stop(n) or ctx ends.
func (p *prober) start(ctx context.Context, n *localcluster.Node) {
	ctx, cancel := context.WithCancel(ctx)
	loop := &probeLoop{n: n, cancel: cancel, tr: &http.Transport{MaxIdleConnsPerHost: 2, IdleConnTimeout: 30 * time.Second}}
	p.mu.Lock()
	if old := p.loops[n.ID]; old != nil {
		old.cancel()
	}
	p.loops[n.ID] = loop
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer loop.tr.CloseIdleConnections()
		client := &http.Client{Transport: loop.tr, Timeout: 3 * time.Second}
		for ctx.Err() == nil {
			start := time.Now()
			err := probeOnce(ctx, client, n.Proxy, probeHost, probePath)
			end := time.Now()
			if ctx.Err() != nil {
				return
			}
			p.mu.Lock()
			p.total++
			if err != nil {
				p.failures = append(p.failures, probeFailure{node: n.ID, start: start, end: end, err: err.Error()})
			}
			p.mu.Unlock()
			sleepCtx(ctx, 20*time.Millisecond)
		}
	}()
}

// stop ends the probe loop of n.
func (p *prober) stop(n *localcluster.Node) {
	p.mu.Lock()
	if l := p.loops[n.ID]; l != nil {
		l.cancel()
		delete(p.loops, n.ID)
	}
	p.mu.Unlock()
}

// stopAll ends every loop and waits for them.
func (p *prober) stopAll() {
	p.mu.Lock()
	for id, l := range p.loops {
		l.cancel()
		delete(p.loops, id)
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// tally splits failures into counted ones (the node was healthy) and
// excluded ones (they overlap a fault window of their node).
func (p *prober) tally() (total int, counted []probeFailure, excluded int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, f := range p.failures {
		if p.overlapsLocked(f) {
			excluded++
		} else {
			counted = append(counted, f)
		}
	}
	return p.total, counted, excluded
}

func (p *prober) overlapsLocked(f probeFailure) bool {
	for _, w := range p.windows[f.node] {
		if !f.end.Before(w.from) && (w.to.IsZero() || !f.start.After(w.to)) {
			return true
		}
	}
	return false
}

// probeOnce sends one request through a proxy and checks that the backend
// answered for the expected path.
func probeOnce(ctx context.Context, client *http.Client, proxyAddr, host, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+proxyAddr+path, nil)
	if err != nil {
		return err
	}
	req.Host = host
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode != http.StatusOK || string(body) != path {
		return fmt.Errorf("%s %s%s: status %d, body %q", proxyAddr, host, path, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return nil
}

// newProbeClient returns a client for one-off checks through a proxy.
func newProbeClient() *http.Client {
	return &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
}
