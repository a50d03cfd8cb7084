package app

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/raftgate/raftgate/cluster"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// glog-free deps still start these package-level workers.
		goleak.IgnoreTopFunction("github.com/hashicorp/go-metrics.(*InmemSignal).run"),
		goleak.IgnoreTopFunction("github.com/armon/go-metrics.(*InmemSignal).run"),
	)
}

// testLogger keeps node logs out of the test output unless RAFTGATE_TEST_LOG
// is set.
func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("RAFTGATE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testCluster is n real nodes on loopback: real raft over TCP, real bolt
// files in temporary directories, real memberlist, real listeners.
type testCluster struct {
	t     *testing.T
	nodes []*Node
	dirs  []string
	cfgs  []Config
}

// clusterOption adjusts every node's config before start.
type clusterOption func(*Config)

func withGrace(d time.Duration) clusterOption { return func(c *Config) { c.SessionGrace = d } }

func startCluster(t *testing.T, n int, opts ...clusterOption) *testCluster {
	t.Helper()
	tc := &testCluster{t: t}
	for i := 0; i < n; i++ {
		cfg := Config{
			NodeID:          fmt.Sprintf("n%d", i+1),
			DataDir:         t.TempDir(),
			ControlAddr:     "127.0.0.1:0",
			HTTPAddr:        "127.0.0.1:0",
			RaftAddr:        "127.0.0.1:0",
			GossipAddr:      "127.0.0.1:0",
			RPCAddr:         "127.0.0.1:0",
			AdminAddr:       "127.0.0.1:0",
			BootstrapExpect: n,
			HoldTimeout:     3 * time.Second,
			Timing:          cluster.TestTiming(),
			Logger:          testLogger(t).With("test_node", i+1),
			FaultInjection:  true,
		}
		if i > 0 {
			cfg.Join = []string{tc.nodes[0].Cluster.GossipAddr()}
		}
		for _, o := range opts {
			o(&cfg)
		}
		node, err := Start(context.Background(), cfg)
		if err != nil {
			t.Fatalf("start node %d: %v", i+1, err)
		}
		tc.nodes = append(tc.nodes, node)
		tc.cfgs = append(tc.cfgs, cfg)
	}
	t.Cleanup(tc.stop)
	tc.waitLeader()
	return tc
}

func (tc *testCluster) stop() {
	var wg sync.WaitGroup
	for _, n := range tc.nodes {
		if n == nil {
			continue
		}
		wg.Add(1)
		go func(n *Node) {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_ = n.Shutdown(ctx)
		}(n)
	}
	wg.Wait()
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitLeader waits until every live node agrees on one leader and returns
// its index.
func (tc *testCluster) waitLeader() int {
	tc.t.Helper()
	leader := -1
	eventually(tc.t, 20*time.Second, "a leader every node agrees on", func() bool {
		id := ""
		for _, n := range tc.nodes {
			if n == nil {
				continue
			}
			l := n.Cluster.LeaderID()
			if l == "" || (id != "" && l != id) {
				return false
			}
			id = l
		}
		for i, n := range tc.nodes {
			if n != nil && n.cfg.NodeID == id {
				leader = i
				return true
			}
		}
		return false
	})
	return leader
}

// ctl is one control connection speaking the line protocol.
type ctl struct {
	t  testing.TB
	c  net.Conn
	rd *bufio.Reader
}

func dialCtl(t testing.TB, addr string) *ctl {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial control %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &ctl{t: t, c: c, rd: bufio.NewReaderSize(c, 1<<20)}
}

// send writes one line and returns the next line read, skipping nothing.
func (c *ctl) send(line string) string {
	c.t.Helper()
	c.write(line)
	return c.read()
}

func (c *ctl) write(line string) {
	c.t.Helper()
	_ = c.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c.c, line+"\n"); err != nil {
		c.t.Fatalf("write %q: %v", line, err)
	}
}

func (c *ctl) read() string {
	c.t.Helper()
	_ = c.c.SetReadDeadline(time.Now().Add(15 * time.Second))
	s, err := c.rd.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return strings.TrimSuffix(s, "\n")
}

// readSkippingEvents reads the next line that is not an asynchronous one.
func (c *ctl) readSkippingEvents() string {
	c.t.Helper()
	for {
		l := c.read()
		if !strings.HasPrefix(l, "EVENT|") && !strings.HasPrefix(l, "MAINT_OK|") {
			return l
		}
	}
}

// once sends one command on a fresh connection, as `nc -w 1` would.
func once(t testing.TB, addr, line string) string {
	t.Helper()
	c := dialCtl(t, addr)
	defer c.c.Close()
	return c.send(line)
}

// register opens a connection, registers and returns the session ID and
// the (attached) connection.
func register(t testing.TB, addr, service, instance string) (string, *ctl) {
	t.Helper()
	c := dialCtl(t, addr)
	r := c.send(fmt.Sprintf("REGISTER|%s|%s|0", service, instance))
	id, ok := strings.CutPrefix(r, "ACK|")
	if !ok {
		t.Fatalf("REGISTER answered %q", r)
	}
	return id, c
}

// expect fails unless got has the wanted prefix.
func expect(t testing.TB, got, wantPrefix string) string {
	t.Helper()
	if !strings.HasPrefix(got, wantPrefix) {
		t.Fatalf("got %q, want prefix %q", got, wantPrefix)
	}
	return strings.TrimPrefix(got, wantPrefix)
}

// httpGet sends a request with a Host header through a node's proxy.
func httpGet(t testing.TB, proxyAddr, host, path string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+proxyAddr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s%s via %s: %v", host, path, proxyAddr, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	client.CloseIdleConnections()
	return resp, string(body)
}

// statusOf returns only the status code of a proxied GET.
func statusOf(t testing.TB, proxyAddr, host, path string) int {
	t.Helper()
	resp, _ := httpGet(t, proxyAddr, host, path)
	return resp.StatusCode
}

// onceNoFatal is once for goroutines other than the test's: it returns
// errors instead of failing the test.
func onceNoFatal(addr, line string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", err
	}
	s, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSuffix(s, "\n"), err
}

// probeClient keeps connections to the proxy alive between probes, as a
// real load balancer in front of raftgate would.
var probeClient = &http.Client{Timeout: 5 * time.Second}

// httpGetNoFatal returns the status of a proxied GET, or 0 on a transport
// error.
func httpGetNoFatal(proxyAddr, host, path string) (int, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+proxyAddr+path, nil)
	if err != nil {
		return 0, err
	}
	req.Host = host
	resp, err := probeClient.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}
