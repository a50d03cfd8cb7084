package app

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestAnyNodeTakesAnyCommand registers on node 1, adds a route on node 2
// over a fresh connection and applies it on node 3; every proxy serves it
// and ROUTE_LIST on any node shows it.
func TestAnyNodeTakesAnyCommand(t *testing.T) {
	tc := startCluster(t, 3)
	backend := echoBackend(t, "A")
	s, _ := register(t, tc.nodes[0].ControlAddr(), "web", "i1")
	rid := expect(t, once(t, tc.nodes[1].ControlAddr(), fmt.Sprintf("ROUTE_ADD|%s|example.com|/|%s|0", s, backend.URL)), "ROUTE_OK|")
	expect(t, once(t, tc.nodes[2].ControlAddr(), "CONFIG_APPLY|"+s), "OK")
	// OK means node 3 serves the change already; the others follow within
	// a heartbeat.
	if got := statusOf(t, tc.nodes[2].HTTPAddr(), "example.com", "/x"); got != 200 {
		t.Fatalf("node 3 answered %d right after its CONFIG_APPLY OK", got)
	}
	for i, n := range tc.nodes {
		eventually(t, 5*time.Second, fmt.Sprintf("node %d to serve the route", i+1), func() bool {
			return statusOf(t, n.HTTPAddr(), "example.com", "/x") == 200
		})
		list := once(t, n.ControlAddr(), "ROUTE_LIST|"+s)
		if !strings.Contains(list, `"route_id":"`+rid+`"`) || !strings.Contains(list, `"status":"active"`) {
			t.Fatalf("ROUTE_LIST on node %d: %s", i+1, list)
		}
	}
	// Reads are linearizable: a write acknowledged by one node is visible
	// to a read that starts afterwards on any other.
	for i := 0; i < 20; i++ {
		w, r := tc.nodes[i%3], tc.nodes[(i+1)%3]
		id := expect(t, once(t, w.ControlAddr(), fmt.Sprintf("ROUTE_ADD|%s|r%d.example.com|/|%s|0", s, i, backend.URL)), "ROUTE_OK|")
		if list := once(t, r.ControlAddr(), "ROUTE_LIST|"+s); !strings.Contains(list, `"`+id+`"`) {
			t.Fatalf("route %s acknowledged by node %s missing from a later read on node %s", id, w.cfg.NodeID, r.cfg.NodeID)
		}
	}
}

// TestLeaderFailoverKeepsWritesAndTraffic stops the leader while clients
// write through every node and a load loop hits a surviving proxy: writes
// resume, every acknowledged route is present exactly once, and the proxy
// never fails a request.
func TestLeaderFailoverKeepsWritesAndTraffic(t *testing.T) {
	tc := startCluster(t, 3)
	backend := echoBackend(t, "A")
	leader := tc.waitLeader()
	s, _ := register(t, tc.nodes[(leader+1)%3].ControlAddr(), "web", "i1")
	expect(t, once(t, tc.nodes[(leader+1)%3].ControlAddr(), fmt.Sprintf("ROUTE_ADD|%s|example.com|/|%s|0", s, backend.URL)), "ROUTE_OK|")
	expect(t, once(t, tc.nodes[(leader+1)%3].ControlAddr(), "CONFIG_APPLY|"+s), "OK")
	survivor := tc.nodes[(leader+2)%3]
	eventually(t, 5*time.Second, "survivor serves the route", func() bool {
		return statusOf(t, survivor.HTTPAddr(), "example.com", "/") == 200
	})

	ctx, cancel := context.WithCancel(context.Background())
	var probes, probeFailures atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			resp, _ := httpGetNoFatal(survivor.HTTPAddr(), "example.com", "/")
			probes.Add(1)
			if resp != 200 {
				probeFailures.Add(1)
			}
		}
	}()
	// The writers keep their own copy: the test clears tc.nodes[leader]
	// once it stopped that node.
	nodes := append([]*Node(nil), tc.nodes...)
	var mu sync.Mutex
	acked := map[string]int{}
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ctx.Err() == nil && i < 1000; i++ {
				n := nodes[(w+i)%3]
				if n == nodes[leader] {
					continue
				}
				line, err := onceNoFatal(n.ControlAddr(), fmt.Sprintf("ROUTE_ADD|%s|w%d-%d.example.com|/|%s|0", s, w, i, backend.URL))
				if err == nil && strings.HasPrefix(line, "ROUTE_OK|") {
					mu.Lock()
					acked[strings.TrimPrefix(line, "ROUTE_OK|")]++
					mu.Unlock()
				}
			}
		}(w)
	}
	eventually(t, 5*time.Second, "some writes before the kill", func() bool { mu.Lock(); defer mu.Unlock(); return len(acked) > 10 })
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	_ = tc.nodes[leader].Shutdown(sctx)
	scancel()
	killed := tc.nodes[leader]
	tc.nodes[leader] = nil
	before := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }()
	eventually(t, 15*time.Second, "writes to resume after the leader stopped", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) > before+20
	})
	cancel()
	wg.Wait()
	_ = killed

	if f := probeFailures.Load(); f != 0 {
		t.Fatalf("%d of %d proxy requests to a survivor failed during failover", f, probes.Load())
	}
	for id, n := range acked {
		if n != 1 {
			t.Fatalf("route ID %s acknowledged %d times", id, n)
		}
	}
	list := once(t, survivor.ControlAddr(), "ROUTE_LIST|"+s)
	for id := range acked {
		if !strings.Contains(list, `"route_id":"`+id+`"`) {
			t.Fatalf("acknowledged route %s lost after failover", id)
		}
	}
}
