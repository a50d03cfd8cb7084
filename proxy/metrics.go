package proxy

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// collector exports the proxy's own per-route counters at scrape time, so
// the request path pays nothing for Prometheus and routes that leave the
// table leave the metrics with them.
type collector struct{ p *Proxy }

var (
	descRequests = prometheus.NewDesc("raftgate_proxy_requests_total",
		"Requests answered for a route on this node, by status code.", []string{"route", "code"}, nil)
	descErrors = prometheus.NewDesc("raftgate_proxy_errors_total",
		"Requests for a route answered with a 5xx status on this node.", []string{"route"}, nil)
	descLatency = prometheus.NewDesc("raftgate_proxy_request_duration_seconds",
		"Time to answer a request for a route on this node.", []string{"route"}, nil)
	descHealth = prometheus.NewDesc("raftgate_proxy_backend_healthy",
		"1 when the route's backend passes its health check on this node (1 when unchecked).", []string{"route", "backend"}, nil)
	descBreaker = prometheus.NewDesc("raftgate_proxy_breaker_state",
		"Circuit breaker state of a route on this node: 0 closed, 1 open, 2 half-open.", []string{"route"}, nil)
	descLimited = prometheus.NewDesc("raftgate_proxy_rate_limited_total",
		"Requests for a route refused with 429 on this node.", []string{"route"}, nil)
	descTrackedIPs = prometheus.NewDesc("raftgate_ratelimit_tracked_ips",
		"Client IPs currently tracked by this node's rate limiters.", nil, nil)
	descCapHits = prometheus.NewDesc("raftgate_ratelimit_ip_cap_hits_total",
		"Requests from client IPs that could not be tracked because the node's IP cap was reached; they share one bucket per route.", nil, nil)
)

// promBounds are the upper bounds, in seconds, of the exported latency
// buckets: the powers of two in microseconds, which are exact boundaries of
// the internal histogram, so the cumulative counts are exact.
var promBounds = func() (b []float64) {
	for us := 8; us <= 1<<26; us *= 2 {
		b = append(b, float64(us)/1e6)
	}
	return b
}()

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRequests, descErrors, descLatency, descHealth, descBreaker, descLimited, descTrackedIPs, descCapHits} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	p := c.p
	for id, rc := range p.table.Load().routes {
		st := p.RouteStats(id)
		for _, code := range sortedCodes(st.StatusCodes) {
			ch <- prometheus.MustNewConstMetric(descRequests, prometheus.CounterValue, float64(st.StatusCodes[code]), id, strconv.Itoa(code))
		}
		ch <- prometheus.MustNewConstMetric(descErrors, prometheus.CounterValue, float64(st.Errors), id)
		ch <- prometheus.MustNewConstMetric(descLimited, prometheus.CounterValue, float64(st.RateLimited), id)
		ch <- prometheus.MustNewConstHistogram(descLatency, uint64(st.Latency.N), float64(st.Latency.SumMicros)/1e6, cumulative(st.Latency), id)
		healthy := 1.0
		if rc.health != nil && !rc.health.healthy.Load() {
			healthy = 0
		}
		ch <- prometheus.MustNewConstMetric(descHealth, prometheus.GaugeValue, healthy, id, rc.backend)
		state := 0.0
		if rc.brk != nil {
			state = float64(rc.brk.state.Load())
		}
		ch <- prometheus.MustNewConstMetric(descBreaker, prometheus.GaugeValue, state, id)
	}
	ch <- prometheus.MustNewConstMetric(descTrackedIPs, prometheus.GaugeValue, float64(p.budget.tracked.Load()))
	ch <- prometheus.MustNewConstMetric(descCapHits, prometheus.CounterValue, float64(p.budget.capHits.Load()))
}

// cumulative converts a histogram to Prometheus cumulative bucket counts.
func cumulative(h Histogram) map[float64]uint64 {
	out := make(map[float64]uint64, len(promBounds))
	var acc uint64
	i := 0
	for _, b := range promBounds {
		limitUS := b * 1e6
		for ; i < len(h.Counts); i++ {
			if _, hi := histBounds(i); hi > limitUS {
				break
			}
			acc += uint64(h.Counts[i])
		}
		out[b] = acc
	}
	return out
}
