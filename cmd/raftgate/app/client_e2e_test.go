package app

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/raftgate/raftgate/protocol/client"
)

// TestClientFailsOverAndKeepsItsSession uses the Go client against a real
// 3-node cluster: the client is attached to the leader, the leader stops,
// the client reconnects to another node with RECONNECT and keeps its session,
// routes and subscriptions; traffic never stopped.
func TestClientFailsOverAndKeepsItsSession(t *testing.T) {
	tc := startCluster(t, 3)
	backend := echoBackend(t, "A")
	leader := tc.waitLeader()
	addrs := []string{tc.nodes[leader].ControlAddr()}
	for i, n := range tc.nodes {
		if i != leader {
			addrs = append(addrs, n.ControlAddr())
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := client.New(ctx, client.Config{Addrs: addrs, Service: "web", Instance: "i1", DisableDiscovery: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.ConnectedTo(); got != tc.nodes[leader].ControlAddr() {
		t.Fatalf("client connected to %s, want the leader %s", got, tc.nodes[leader].ControlAddr())
	}
	var mu sync.Mutex
	var events []client.Event
	c.OnEvent(func(e client.Event) { mu.Lock(); events = append(events, e); mu.Unlock() })
	var reregistered bool
	c.OnReregister(func(context.Context, string, string) { reregistered = true })
	if err := c.Subscribe(ctx, "config_applied"); err != nil {
		t.Fatal(err)
	}
	rid, err := c.RouteAdd(ctx, client.RouteSpec{Domains: []string{"example.com"}, Path: "/", BackendURL: backend.URL})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ConfigApply(ctx); err != nil {
		t.Fatal(err)
	}
	// Exactly one config_applied, however many nodes applied the entry.
	eventually(t, 5*time.Second, "config_applied event", func() bool { mu.Lock(); defer mu.Unlock(); return len(events) >= 1 })
	session := c.SessionID()

	sctx, scancel := context.WithTimeout(context.Background(), 15*time.Second)
	if err := tc.nodes[leader].Shutdown(sctx); err != nil {
		t.Logf("leader shutdown: %v", err)
	}
	scancel()
	tc.nodes[leader] = nil
	tc.waitLeader()

	eventually(t, 15*time.Second, "client to fail over", func() bool {
		return c.ConnectedTo() != "" && c.ConnectedTo() != addrs[0] && c.Ping(ctx) == nil
	})
	if c.SessionID() != session || reregistered {
		t.Fatalf("session changed across failover: %s -> %s (reregistered %v)", session, c.SessionID(), reregistered)
	}
	routes, err := c.RouteList(ctx)
	if err != nil || len(routes) != 1 || routes[0].ID != rid || routes[0].Status != "active" {
		t.Fatalf("routes after failover: %+v, %v", routes, err)
	}
	// Subscriptions belong to the session: they follow it to the new node.
	if err := c.HeadersSet(ctx, "ALL", "X-After", "failover"); err != nil {
		t.Fatal(err)
	}
	if err := c.ConfigApply(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "config_applied after failover", func() bool { mu.Lock(); defer mu.Unlock(); return len(events) >= 2 })
	mu.Lock()
	n := len(events)
	mu.Unlock()
	if n != 2 {
		t.Fatalf("got %d config_applied events for 2 applies: each subscriber must get one copy", n)
	}
	info, err := c.SessionInfo(ctx)
	if err != nil || !info.Connected {
		t.Fatalf("session info after failover: %+v %v", info, err)
	}
	for i, node := range tc.nodes {
		if node == nil {
			continue
		}
		// The node that answered OK serves the change at once; the others
		// within a commit notice or two.
		eventually(t, 5*time.Second, fmt.Sprintf("node %d to serve the new header", i+1), func() bool {
			resp, _ := httpGet(t, node.HTTPAddr(), "example.com", "/")
			return resp.StatusCode == 200 && resp.Header.Get("X-After") == "failover"
		})
	}
}

// TestClusterStatusListsEveryNode checks CLUSTER_STATUS from every node.
func TestClusterStatusListsEveryNode(t *testing.T) {
	tc := startCluster(t, 3)
	// A new leader's first entries (no-op, barrier) never reach the FSM;
	// its first command does. Wait for it rather than race it.
	for _, n := range tc.nodes {
		eventually(t, 10*time.Second, "first applied command", func() bool { return n.FSM.AppliedIndex() > 0 })
	}
	for _, n := range tc.nodes {
		var st struct {
			Leader string `json:"leader"`
			Term   uint64 `json:"term"`
			Nodes  []struct {
				ID           string `json:"id"`
				ControlAddr  string `json:"control_addr"`
				ProxyAddr    string `json:"proxy_addr"`
				RaftState    string `json:"raft_state"`
				AppliedIndex uint64 `json:"applied_index"`
				Alive        bool   `json:"alive"`
			} `json:"nodes"`
		}
		payload := expect(t, once(t, n.ControlAddr(), "CLUSTER_STATUS"), "CLUSTER_OK|")
		if err := json.Unmarshal([]byte(payload), &st); err != nil {
			t.Fatal(err)
		}
		if st.Leader == "" || st.Term == 0 || len(st.Nodes) != 3 {
			t.Fatalf("CLUSTER_STATUS from %s: %s", n.cfg.NodeID, payload)
		}
		leaders := 0
		for _, ns := range st.Nodes {
			if !ns.Alive || ns.ControlAddr == "" || ns.ProxyAddr == "" || ns.AppliedIndex == 0 {
				t.Fatalf("node entry incomplete: %+v", ns)
			}
			if strings.EqualFold(ns.RaftState, "leader") {
				leaders++
			}
		}
		if leaders != 1 {
			t.Fatalf("%d leaders in %s", leaders, payload)
		}
	}
}
