package proxy

import (
	"fmt"
	"net/netip"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/raftgate/raftgate/fsm"
)

func rlTable(idx uint64, rl fsm.RateLimit, backendURL string) *fsm.RoutingTable {
	return newTable(idx).add(route{id: "r1", domains: []string{"rl.test"}, backend: backendURL,
		settings: settings(func(s *fsm.RouteSettings) { s.RateLimit = &rl })}).build()
}

func TestRateLimit11thRequest(t *testing.T) {
	be := newBackend(t, "a")
	clk := newClock()
	cfg := Config{Now: clk.Now, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}
	f := newFront(t, cfg, rlTable(1, fsm.RateLimit{Requests: 10, Window: int64(time.Second)}, be.URL))
	from := func(ip string) reply {
		return f.do(t, "GET", "rl.test", "/", map[string]string{"X-Forwarded-For": ip}, nil)
	}
	for i := range 10 {
		if r := from("198.51.100.1"); r.code != 200 {
			t.Fatalf("request %d: %d", i+1, r.code)
		}
	}
	r := from("198.51.100.1")
	if r.code != 429 {
		t.Fatalf("11th: %d", r.code)
	}
	if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 1 {
		t.Fatalf("Retry-After %q", r.header.Get("Retry-After"))
	}
	if r := from("198.51.100.2"); r.code != 200 {
		t.Fatalf("second IP: %d", r.code)
	}
	clk.Add(100 * time.Millisecond) // one token back
	if r := from("198.51.100.1"); r.code != 200 {
		t.Fatalf("after refill: %d", r.code)
	}
	st := f.p.RouteStats("r1")
	if st.RateLimited != 1 || st.StatusCodes[429] != 1 || st.Requests != 13 {
		t.Fatalf("stats: %+v", st)
	}
	// An unchanged limit keeps its buckets across an update.
	f.p.Update(rlTable(2, fsm.RateLimit{Requests: 10, Window: int64(time.Second)}, be.URL))
	if r := from("198.51.100.1"); r.code != 429 {
		t.Fatalf("bucket lost on update: %d", r.code)
	}
}

func TestRateLimitClusterShare(t *testing.T) {
	budget := &ipBudget{max: 100}
	l := newLimiter(30, time.Second, budget)
	ip := netip.MustParseAddr("192.0.2.1")
	now := time.Now().UnixNano()
	allowed := 0
	for range 100 {
		if ok, _ := l.allow(ip, now, 1.0/3); ok {
			allowed++
		}
	}
	if allowed != 10 {
		t.Fatalf("a third of 30 allowed %d", allowed)
	}
	// Over one second at a steady pace, burst + rate.
	for i := range 100 {
		if ok, _ := l.allow(ip, now+int64(i)*int64(10*time.Millisecond), 1.0/3); ok {
			allowed++
		}
	}
	if allowed < 18 || allowed > 22 {
		t.Fatalf("steady share: %d", allowed)
	}
}

func TestRateLimitIPCapAndExpiry(t *testing.T) {
	budget := &ipBudget{max: 50}
	l := newLimiter(2, time.Second, budget)
	now := time.Now().UnixNano()
	for i := range 200 {
		ip := netip.MustParseAddr(fmt.Sprintf("10.1.%d.%d", i/250, i%250))
		l.allow(ip, now, 1)
	}
	if got := budget.tracked.Load(); got != 50 {
		t.Fatalf("tracked %d, cap 50", got)
	}
	if budget.capHits.Load() != 150 {
		t.Fatalf("cap hits %d", budget.capHits.Load())
	}
	// Untracked clients share one bucket of the route's limit.
	other := netip.MustParseAddr("10.9.9.9")
	if ok, _ := l.allow(other, now, 1); ok {
		t.Fatal("overflow bucket should be empty after 150 overflow requests")
	}
	l.sweep(now + int64(2*time.Second))
	if got := budget.tracked.Load(); got != 0 {
		t.Fatalf("after expiry tracked %d", got)
	}
	if ok, _ := l.allow(other, now+int64(2*time.Second), 1); !ok {
		t.Fatal("new client after expiry refused")
	}
	l.release()
	if got := budget.tracked.Load(); got != 0 {
		t.Fatalf("after release tracked %d", got)
	}
}

// BenchmarkLimiterManyIPs reports the memory the limiter holds per
// tracked client IP (1 million distinct IPs, cap raised to hold them).
func BenchmarkLimiterManyIPs(b *testing.B) {
	var perIP float64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		budget := &ipBudget{max: 2_000_000}
		l := newLimiter(10, time.Second, budget)
		now := time.Now().UnixNano()
		for i := range 1_000_000 {
			var a [4]byte
			a[0], a[1], a[2], a[3] = 10, byte(i>>16), byte(i>>8), byte(i)
			l.allow(netip.AddrFrom4(a), now, 1)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		perIP = float64(after.HeapAlloc-before.HeapAlloc) / 1e6
		runtime.KeepAlive(l)
	}
	b.ReportMetric(perIP, "heap-B/ip")
}

// BenchmarkLimiterManyIPsDefaultCap sends 1 million distinct client IPs
// through a limiter under the default node-wide cap and reports the heap
// the limiter holds: the cap, not the number of clients, bounds it.
func BenchmarkLimiterManyIPsDefaultCap(b *testing.B) {
	var heapMB float64
	var tracked, capHits int64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		budget := &ipBudget{max: DefaultMaxRateLimitIPs}
		l := newLimiter(10, time.Second, budget)
		now := time.Now().UnixNano()
		for i := range 1_000_000 {
			var a [4]byte
			a[0], a[1], a[2], a[3] = 10, byte(i>>16), byte(i>>8), byte(i)
			l.allow(netip.AddrFrom4(a), now, 1)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		heapMB = float64(after.HeapAlloc-before.HeapAlloc) / (1 << 20)
		tracked, capHits = budget.tracked.Load(), budget.capHits.Load()
		runtime.KeepAlive(l)
	}
	if tracked != DefaultMaxRateLimitIPs || capHits != 1_000_000-DefaultMaxRateLimitIPs {
		b.Fatalf("tracked %d, cap hits %d", tracked, capHits)
	}
	b.ReportMetric(heapMB, "heap-MiB")
}
