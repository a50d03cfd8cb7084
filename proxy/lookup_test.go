package proxy

import (
	"fmt"
	"testing"
)

func TestLookupMatching(t *testing.T) {
	tbl := newTable(1).
		add(route{id: "r1", domains: []string{"example.com"}, path: "/", backend: "http://b1"}).
		add(route{id: "r2", domains: []string{"example.com"}, path: "/api", backend: "http://b2"}).
		add(route{id: "r3", domains: []string{"example.com"}, path: "/", priority: 5, service: "other", backend: "http://b3"}).
		add(route{id: "r4", domains: []string{"*.example.com"}, path: "/", backend: "http://b4"}).
		add(route{id: "r5", domains: []string{"*.example.com"}, path: "/v2", backend: "http://b5"}).
		add(route{id: "r6", domains: []string{"api.example.com"}, path: "/only", backend: "http://b6"}).
		add(route{id: "r7", domains: []string{"plain.test"}, path: "/api", backend: "http://b7"}).
		build()
	p := New(Config{})
	defer p.Close()
	p.Update(tbl)
	ct := p.table.Load()
	cases := []struct {
		host, path, want string
	}{
		{"example.com", "/api/x", "r3"},    // priority beats the longer path
		{"example.com:8080", "/", "r3"},    // port stripped
		{"EXAMPLE.com", "/", "r3"},         // case-insensitive
		{"example.com.", "/", "r3"},        // trailing dot
		{"a.example.com", "/", "r4"},       // wildcard
		{"a.example.com", "/v2/x", "r5"},   // wildcard, longest prefix
		{"A.Example.COM:1", "/v2", "r5"},   // wildcard with upper case and port
		{"api.example.com", "/only", "r6"}, // exact before wildcard
		{"api.example.com", "/v2", "r5"},   // exact host has no pool for the path: wildcard
		{"a.b.example.com", "/", ""},       // a wildcard matches one label only
		{"plain.test", "/apix", "r7"},      // plain string prefix
		{"plain.test", "/ap", ""},
		{"unknown.test", "/", ""},
		{"", "/", ""},
	}
	for _, c := range cases {
		pl := ct.lookup(c.host, c.path)
		got := ""
		if pl != nil {
			got = pl.members[0].id
		}
		if got != c.want {
			t.Errorf("lookup(%q, %q) = %q, want %q", c.host, c.path, got, c.want)
		}
	}
}

// bigTable is 10,000 routes over 1,000 domains: per domain one root route,
// eight path routes and one wildcard route.
func bigTable() *Proxy {
	b := newTable(1)
	n := 0
	for d := range 1000 {
		dom := fmt.Sprintf("svc%d.example.com", d)
		for k := range 9 {
			n++
			path := "/"
			if k > 0 {
				path = fmt.Sprintf("/api/v%d", k)
			}
			b.add(route{id: fmt.Sprintf("r%d", n), domains: []string{dom}, path: path, backend: "http://127.0.0.1:9"})
		}
		n++
		b.add(route{id: fmt.Sprintf("r%d", n), domains: []string{fmt.Sprintf("*.zone%d.example.com", d)}, path: "/", backend: "http://127.0.0.1:9"})
	}
	p := New(Config{})
	p.Update(b.build())
	return p
}

func TestLookupAllocatesNothing(t *testing.T) {
	p := bigTable()
	defer p.Close()
	ct := p.table.Load()
	if ct.routeMap.Len() != 10000 {
		t.Fatalf("routes = %d", ct.routeMap.Len())
	}
	hosts := []string{"svc500.example.com", "SVC7.Example.com:443", "x.zone3.example.com", "nope.test"}
	for _, h := range hosts {
		allocs := testing.AllocsPerRun(200, func() { _ = ct.lookup(h, "/api/v8/items") })
		if allocs != 0 {
			t.Errorf("lookup(%q) allocates %.1f times", h, allocs)
		}
	}
	if pl := ct.lookup("svc500.example.com", "/api/v8/items"); pl == nil || pl.path != "/api/v8" {
		t.Fatalf("wrong pool: %+v", pl)
	}
}

func BenchmarkLookup(b *testing.B) {
	p := bigTable()
	defer p.Close()
	ct := p.table.Load()
	hosts := make([]string, 1000)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("svc%d.example.com", (i*7919)%1000)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if ct.lookup(hosts[i%len(hosts)], "/api/v4/users/42") == nil {
			b.Fatal("no match")
		}
	}
}
