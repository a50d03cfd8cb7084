package localcluster

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// fakeAdmin is an admin address that records requests and answers from a
// table keyed by "METHOD /path".
type fakeAdmin struct {
	mu     sync.Mutex
	bodies map[string]string
	srv    *httptest.Server
}

func startFakeAdmin(t *testing.T, answers map[string]func(w http.ResponseWriter)) *fakeAdmin {
	t.Helper()
	f := &fakeAdmin{bodies: map[string]string{}}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Method + " " + r.URL.Path
		b, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.bodies[key] = string(b)
		f.mu.Unlock()
		answer, ok := answers[key]
		if !ok {
			http.NotFound(w, r)
			return
		}
		answer(w)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAdmin) body(key string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.bodies[key]
	return b, ok
}

func (f *fakeAdmin) node() *Node {
	return &Node{ID: "node1", Ports: Ports{Admin: strings.TrimPrefix(f.srv.URL, "http://")}}
}

func TestAdminCalls(t *testing.T) {
	ctx := context.Background()
	f := startFakeAdmin(t, map[string]func(http.ResponseWriter){
		"GET /v1/fsm": func(w http.ResponseWriter) {
			_, _ = io.WriteString(w, `{"node":"node1","applied_index":42,"sha256":"abc","sessions":3,"routes":5}`)
		},
		"POST /v1/faults": func(w http.ResponseWriter) { _, _ = io.WriteString(w, `{}`) },
		"POST /v1/leave":  func(w http.ResponseWriter) { _, _ = io.WriteString(w, "left\n") },
		"GET /readyz":     func(w http.ResponseWriter) { _, _ = io.WriteString(w, "ok") },
	})
	n := f.node()

	d, err := n.Digest(ctx)
	if err != nil {
		t.Fatalf("digest: %v", err)
	}
	if d != (Digest{Node: "node1", AppliedIndex: 42, SHA256: "abc", Sessions: 3, Routes: 5}) {
		t.Errorf("digest %+v", d)
	}

	if err := n.Partition(ctx, []string{"node2", "node3"}); err != nil {
		t.Fatalf("partition: %v", err)
	}
	var req map[string][]string
	b, _ := f.body("POST /v1/faults")
	if err := json.Unmarshal([]byte(b), &req); err != nil || strings.Join(req["partition"], ",") != "node2,node3" {
		t.Errorf("partition body %q (%v)", b, err)
	}
	// Healing sends an empty list, never null.
	if err := n.Partition(ctx, nil); err != nil {
		t.Fatalf("heal: %v", err)
	}
	if b, _ := f.body("POST /v1/faults"); b != `{"partition":[]}` {
		t.Errorf("heal body %q", b)
	}

	if err := n.Leave(ctx); err != nil {
		t.Fatalf("leave: %v", err)
	}
	if _, ok := f.body("POST /v1/leave"); !ok {
		t.Error("leave did not reach the node")
	}
	if !n.Ready(ctx) {
		t.Error("ready node reported not ready")
	}
}

func TestAdminFailures(t *testing.T) {
	ctx := context.Background()
	f := startFakeAdmin(t, map[string]func(http.ResponseWriter){
		"GET /v1/fsm": func(w http.ResponseWriter) { _, _ = io.WriteString(w, `not json`) },
		"POST /v1/faults": func(w http.ResponseWriter) {
			http.Error(w, "fault injection is off", http.StatusForbidden)
		},
		"POST /v1/leave": func(w http.ResponseWriter) {
			http.Error(w, "not a voter", http.StatusConflict)
		},
		"GET /readyz": func(w http.ResponseWriter) {
			http.Error(w, "no leader", http.StatusServiceUnavailable)
		},
	})
	n := f.node()
	if _, err := n.Digest(ctx); err == nil || !strings.Contains(err.Error(), "decode") {
		t.Errorf("bad digest: %v", err)
	}
	if err := n.Partition(ctx, nil); err == nil || !strings.Contains(err.Error(), "fault injection is off") {
		t.Errorf("refused partition: %v", err)
	}
	if err := n.Leave(ctx); err == nil || !strings.Contains(err.Error(), "leave node1") || !strings.Contains(err.Error(), "not a voter") {
		t.Errorf("refused leave: %v", err)
	}
	if n.Ready(ctx) {
		t.Error("503 counted as ready")
	}
	f.srv.Close()
	if n.Ready(ctx) {
		t.Error("closed admin address counted as ready")
	}
}
