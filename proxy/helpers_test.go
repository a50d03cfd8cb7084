package proxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/raftgate/raftgate/fsm"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// tableBuilder assembles an fsm.RoutingTable by hand, the way
// fsm.BuildTable lays it out, without going through Raft.
type tableBuilder struct {
	t        *fsm.RoutingTable
	pools    map[string]*fsm.Pool
	exact    map[string][]*fsm.Pool
	wildcard map[string][]*fsm.Pool
	routes   map[string][]*fsm.Member
}

func newTable(index uint64) *tableBuilder {
	return &tableBuilder{
		t:        &fsm.RoutingTable{Index: index},
		pools:    map[string]*fsm.Pool{},
		exact:    map[string][]*fsm.Pool{},
		wildcard: map[string][]*fsm.Pool{},
		routes:   map[string][]*fsm.Member{},
	}
}

// route describes one route for the builder.
type route struct {
	id, session, service string
	domains              []string
	path                 string
	priority             int
	backend              string
	settings             *fsm.RouteSettings
	maint                bool
	maintBackend         string
	drain                *fsm.Drain
}

func (b *tableBuilder) add(r route) *tableBuilder {
	if r.service == "" {
		r.service = "svc"
	}
	if r.session == "" {
		r.session = "sess-" + r.id
	}
	if r.path == "" {
		r.path = "/"
	}
	if r.settings == nil {
		r.settings = &fsm.RouteSettings{Options: fsm.DefaultOptions()}
	}
	for _, d := range r.domains {
		m := &fsm.Member{
			RouteID: r.id, SessionID: r.session, Backend: r.backend, Settings: r.settings,
			InMaintenance: r.maint, MaintenanceBackend: r.maintBackend, Drain: r.drain,
		}
		key := fmt.Sprint(d, "|", r.path, "|", r.service, "|", r.priority)
		p := b.pools[key]
		if p == nil {
			p = &fsm.Pool{Domain: d, Path: r.path, Priority: r.priority, Service: r.service}
			b.pools[key] = p
			if parent, ok := strings.CutPrefix(d, "*."); ok {
				b.wildcard[parent] = append(b.wildcard[parent], p)
			} else {
				b.exact[d] = append(b.exact[d], p)
			}
		}
		p.Members = append(p.Members, m)
		b.routes[r.id] = append(b.routes[r.id], m)
	}
	return b
}

func (b *tableBuilder) build() *fsm.RoutingTable {
	for _, mm := range []map[string][]*fsm.Pool{b.exact, b.wildcard} {
		for _, ps := range mm {
			sort.SliceStable(ps, func(i, j int) bool {
				if ps[i].Priority != ps[j].Priority {
					return ps[i].Priority > ps[j].Priority
				}
				return len(ps[i].Path) > len(ps[j].Path)
			})
		}
	}
	b.t.Exact, b.t.Wildcard, b.t.Routes = fsm.NewShardMap(b.exact), fsm.NewShardMap(b.wildcard), fsm.NewShardMap(b.routes)
	return b.t
}

// settings returns default settings changed by fn.
func settings(fn func(s *fsm.RouteSettings)) *fsm.RouteSettings {
	s := &fsm.RouteSettings{Options: fsm.DefaultOptions()}
	if fn != nil {
		fn(s)
	}
	return s
}

// backend is a real HTTP backend that answers with its name and records
// the last request it saw.
type backend struct {
	*httptest.Server
	name string
	hits atomic.Int64
	mu   sync.Mutex
	last *http.Request
	fail atomic.Int32 // status to answer instead (0: 200)
	// trafficOnly limits fail to paths other than /healthz.
	trafficOnly atomic.Bool
}

func newBackend(t *testing.T, name string) *backend {
	t.Helper()
	b := &backend{name: name}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		b.mu.Lock()
		b.last = r.Clone(context.Background())
		b.mu.Unlock()
		if code := b.fail.Load(); code != 0 && !(b.trafficOnly.Load() && r.URL.Path == "/healthz") {
			http.Error(w, "failing", int(code))
			return
		}
		w.Header().Set("X-Backend", name)
		_, _ = io.WriteString(w, name+" "+r.URL.Path)
	}))
	t.Cleanup(b.Close)
	return b
}

func (b *backend) lastRequest() *http.Request {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last
}

// front is a proxy behind a real HTTP listener.
type front struct {
	p      *Proxy
	srv    *httptest.Server
	client *http.Client
}

func newFront(t *testing.T, cfg Config, tbl *fsm.RoutingTable) *front {
	t.Helper()
	p := New(cfg)
	if tbl != nil {
		p.Update(tbl)
	}
	srv := httptest.NewServer(p)
	tr := &http.Transport{MaxIdleConnsPerHost: 16, DisableCompression: true}
	f := &front{p: p, srv: srv, client: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		srv.Close()
		p.Close()
	})
	return f
}

type reply struct {
	code   int
	body   string
	header http.Header
}

// get sends a request with the given Host through the proxy.
func (f *front) do(t *testing.T, method, host, path string, hdr map[string]string, body io.Reader) reply {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := f.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s%s: %v", method, host, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return reply{code: resp.StatusCode, body: string(b), header: resp.Header}
}

func (f *front) get(t *testing.T, host, path string) reply {
	t.Helper()
	return f.do(t, http.MethodGet, host, path, nil, nil)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// fakeClock is a settable clock for drain, breaker and limiter tests.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *fakeClock { return &fakeClock{now: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}
