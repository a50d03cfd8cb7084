package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/raftgate/raftgate/fsm"
)

// The proxy benchmarks drive real HTTP over loopback from 64 concurrent
// keep-alive clients against a backend with a 64-byte body, so their ns/op
// compare directly: BenchmarkProxy / BenchmarkDirect is the proxy's
// overhead ratio on this machine, BenchmarkHTTPUtilProxy is the
// plain-library baseline.

var benchBody = strings.Repeat("x", 64)

func benchBackend(b *testing.B) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, benchBody)
	}))
	b.Cleanup(s.Close)
	return s
}

func loadLoop(b *testing.B, url, host string) {
	tr := &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	b.SetParallelism(32) // ×GOMAXPROCS goroutines
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Host = host
		for pb.Next() {
			resp, err := c.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			n, _ := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || n != 64 {
				b.Errorf("status %d, %d bytes", resp.StatusCode, n)
				return
			}
		}
	})
}

func BenchmarkDirect(b *testing.B) {
	be := benchBackend(b)
	loadLoop(b, be.URL+"/bench", "")
}

func benchProxy(b *testing.B, st *fsm.RouteSettings, cfg Config) {
	be := benchBackend(b)
	p := New(cfg)
	defer p.Close()
	p.Update(newTable(1).add(route{id: "r1", domains: []string{"bench.test"}, backend: be.URL, settings: st}).build())
	if st != nil && st.Health != nil {
		p.RunHealthChecks(b.Context())
	}
	front := httptest.NewServer(p)
	defer front.Close()
	loadLoop(b, front.URL+"/bench", "bench.test")
}

func BenchmarkProxy(b *testing.B) { benchProxy(b, nil, Config{}) }

// BenchmarkProxyAllFeatures enables a health check, a breaker and a rate
// limit the load never reaches, to price their bookkeeping.
func BenchmarkProxyAllFeatures(b *testing.B) {
	st := settings(func(s *fsm.RouteSettings) {
		s.Health = &fsm.HealthCheck{Path: "/", Interval: int64(time.Hour), Timeout: int64(time.Second)}
		s.CircuitBreaker = &fsm.CircuitBreaker{Threshold: 5, Timeout: int64(time.Second), HalfOpenRequests: 1}
		s.RateLimit = &fsm.RateLimit{Requests: 1 << 30, Window: int64(time.Second)}
		s.ResponseHeaders = []fsm.Header{{Name: "X-Served-By", Value: "raftgate"}}
	})
	benchProxy(b, st, Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
}

// BenchmarkHTTPUtilProxy is httputil.ReverseProxy with a tuned transport.
func BenchmarkHTTPUtilProxy(b *testing.B) {
	be := benchBackend(b)
	u, _ := url.Parse(be.URL)
	tr := &http.Transport{MaxIdleConnsPerHost: 1024, DisableCompression: true}
	defer tr.CloseIdleConnections()
	rp := &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(u); pr.SetXForwarded() },
		Transport: tr,
	}
	front := httptest.NewServer(rp)
	defer front.Close()
	loadLoop(b, front.URL+"/bench", "bench.test")
}

// BenchmarkProxyFeature prices each enforcement feature on its own, to
// tell which one a BenchmarkProxyAllFeatures regression comes from.
func BenchmarkProxyFeature(b *testing.B) {
	features := []struct {
		name string
		set  func(s *fsm.RouteSettings)
	}{
		{"health", func(s *fsm.RouteSettings) {
			s.Health = &fsm.HealthCheck{Path: "/", Interval: int64(time.Hour), Timeout: int64(time.Second)}
		}},
		{"breaker", func(s *fsm.RouteSettings) {
			s.CircuitBreaker = &fsm.CircuitBreaker{Threshold: 5, Timeout: int64(time.Second), HalfOpenRequests: 1}
		}},
		{"ratelimit", func(s *fsm.RouteSettings) {
			s.RateLimit = &fsm.RateLimit{Requests: 1 << 30, Window: int64(time.Second)}
		}},
	}
	for _, f := range features {
		b.Run(f.name, func(b *testing.B) { benchProxy(b, settings(f.set), Config{}) })
	}
}

// BenchmarkProxyAllFeaturesRatio answers "is the proxy with every feature
// on within 10% of the plain proxy?" on a shared, noisy machine: it runs
// both in the same process and alternates rounds of 2,000 requests (64
// concurrent keep-alive clients) between them, so background load hits
// both alike. One iteration is one round of each; it reports ns/request of
// each and their ratio.
//
//	go test -run '^$' -bench BenchmarkProxyAllFeaturesRatio -benchtime 20x ./proxy
func BenchmarkProxyAllFeaturesRatio(b *testing.B) {
	be := benchBackend(b)
	all := settings(func(s *fsm.RouteSettings) {
		s.Health = &fsm.HealthCheck{Path: "/", Interval: int64(time.Hour), Timeout: int64(time.Second)}
		s.CircuitBreaker = &fsm.CircuitBreaker{Threshold: 5, Timeout: int64(time.Second), HalfOpenRequests: 1}
		s.RateLimit = &fsm.RateLimit{Requests: 1 << 30, Window: int64(time.Second)}
	})
	front := func(st *fsm.RouteSettings) string {
		p := New(Config{})
		b.Cleanup(p.Close)
		p.Update(newTable(1).add(route{id: "r1", domains: []string{"bench.test"}, backend: be.URL, settings: st}).build())
		p.RunHealthChecks(b.Context())
		s := httptest.NewServer(p)
		b.Cleanup(s.Close)
		return s.URL + "/bench"
	}
	plainURL, allURL := front(nil), front(all)
	tr := &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}
	b.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr}
	const perRound, clients = 2000, 64
	round := func(url string) time.Duration {
		var next atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for range clients {
			wg.Go(func() {
				req, _ := http.NewRequest(http.MethodGet, url, nil)
				req.Host = "bench.test"
				for next.Add(1) <= perRound {
					resp, err := c.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
		}
		wg.Wait()
		return time.Since(start)
	}
	round(plainURL) // warm both connection pools
	round(allURL)
	var plain, feat time.Duration
	for b.Loop() {
		plain += round(plainURL)
		feat += round(allURL)
	}
	reqs := float64(b.N * perRound)
	b.ReportMetric(float64(plain.Nanoseconds())/reqs, "plain-ns/req")
	b.ReportMetric(float64(feat.Nanoseconds())/reqs, "all-ns/req")
	b.ReportMetric(float64(feat)/float64(plain), "ratio")
}
