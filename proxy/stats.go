package proxy

import (
	"math/bits"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// The latency histogram is log-linear over microseconds: values below 8 µs
// get one bucket each, every power of two above that is split into 8 equal
// sub-buckets. A bucket is therefore at most 12.5% of its value wide, so a
// quantile read from merged histograms is within one bucket (and at most
// ~12% relative error) of the true one, and because the layout is fixed,
// histograms from different nodes merge by adding counts.
const (
	histSubBits    = 3
	histSub        = 1 << histSubBits // sub-buckets per power of two
	histMaxExp     = 36               // 2^36 µs ≈ 19 hours: larger values clamp
	histNumBuckets = histSub + (histMaxExp-histSubBits)*histSub
)

// histIndex is the bucket of a latency of us microseconds.
func histIndex(us uint64) int {
	if us < histSub {
		return int(us)
	}
	e := bits.Len64(us) // >= histSubBits+1
	if e > histMaxExp {
		return histNumBuckets - 1
	}
	mant := int(us>>(e-histSubBits-1)) & (histSub - 1)
	return histSub + (e-histSubBits-1)*histSub + mant
}

// histBounds is the half-open range [lo, hi) in microseconds of bucket i.
func histBounds(i int) (lo, hi float64) {
	if i < histSub {
		return float64(i), float64(i + 1)
	}
	shift := (i - histSub) / histSub
	mant := (i - histSub) % histSub
	return float64((histSub + mant) << shift), float64((histSub + mant + 1) << shift)
}

// Histogram is a mergeable latency histogram with fixed log-linear buckets.
// Counts[i] is the number of observations in bucket i (trailing empty
// buckets are omitted); it is the form sent between nodes.
type Histogram struct {
	Counts    []int64 `json:"counts,omitempty"`
	SumMicros int64   `json:"sum_us"`
	N         int64   `json:"count"`
}

// Count is the number of observations.
func (h Histogram) Count() int64 { return h.N }

// Mean is the average latency in milliseconds, 0 when empty.
func (h Histogram) Mean() float64 {
	if h.N == 0 {
		return 0
	}
	return float64(h.SumMicros) / float64(h.N) / 1000
}

// Merge adds the observations of o to h.
func (h *Histogram) Merge(o Histogram) {
	if len(o.Counts) > len(h.Counts) {
		c := make([]int64, len(o.Counts))
		copy(c, h.Counts)
		h.Counts = c
	}
	for i, n := range o.Counts {
		h.Counts[i] += n
	}
	h.SumMicros += o.SumMicros
	h.N += o.N
}

// Quantile is the q-quantile (0..1) of the latency in milliseconds,
// interpolated linearly inside its bucket; 0 when empty.
func (h Histogram) Quantile(q float64) float64 {
	var total int64
	for _, n := range h.Counts {
		total += n
	}
	if total == 0 {
		return 0
	}
	q = min(max(q, 0), 1)
	rank := q * float64(total)
	var seen int64
	for i, n := range h.Counts {
		if n == 0 {
			continue
		}
		if float64(seen+n) >= rank {
			lo, hi := histBounds(i)
			frac := (rank - float64(seen)) / float64(n)
			return (lo + frac*(hi-lo)) / 1000
		}
		seen += n
	}
	lo, hi := histBounds(len(h.Counts) - 1)
	return (lo + hi) / 2 / 1000
}

// liveHistogram is the lock-free form the request path writes to.
type liveHistogram struct {
	counts [histNumBuckets]atomic.Int64
	sum    atomic.Int64
	n      atomic.Int64
}

func (h *liveHistogram) observe(d time.Duration) {
	us := d.Microseconds()
	if us < 0 {
		us = 0
	}
	h.counts[histIndex(uint64(us))].Add(1)
	h.sum.Add(us)
	h.n.Add(1)
}

func (h *liveHistogram) snapshot() Histogram {
	out := Histogram{SumMicros: h.sum.Load(), N: h.n.Load()}
	last := -1
	var counts [histNumBuckets]int64
	for i := range h.counts {
		counts[i] = h.counts[i].Load()
		if counts[i] != 0 {
			last = i
		}
	}
	if last >= 0 {
		out.Counts = append([]int64(nil), counts[:last+1]...)
	}
	return out
}

// RouteStats are one node's counters for one route. Requests counts every
// request the route answered, including ones this node refused (429, 503);
// Errors counts the 5xx answers. BytesSent is response body bytes written
// to clients; BytesReceived is request body bytes read from clients.
type RouteStats struct {
	RouteID       string        `json:"route_id"`
	Requests      int64         `json:"requests"`
	Errors        int64         `json:"errors"`
	BytesSent     int64         `json:"bytes_sent"`
	BytesReceived int64         `json:"bytes_received"`
	RateLimited   int64         `json:"rate_limited"`
	StatusCodes   map[int]int64 `json:"status_codes"`
	Latency       Histogram     `json:"latency"`
}

// MergeRouteStats sums the counters of several nodes' RouteStats for the
// same route and merges their latency histograms. The result's RouteID is
// the first non-empty one.
func MergeRouteStats(parts ...RouteStats) RouteStats {
	out := RouteStats{StatusCodes: map[int]int64{}}
	for _, p := range parts {
		if out.RouteID == "" {
			out.RouteID = p.RouteID
		}
		out.Requests += p.Requests
		out.Errors += p.Errors
		out.BytesSent += p.BytesSent
		out.BytesReceived += p.BytesReceived
		out.RateLimited += p.RateLimited
		for c, n := range p.StatusCodes {
			out.StatusCodes[c] += n
		}
		out.Latency.Merge(p.Latency)
	}
	return out
}

// commonCodes get lock-free counters; anything else goes to a locked map.
var commonCodes = [...]int{200, 201, 204, 206, 301, 302, 304, 307, 308, 400, 401, 403, 404, 405,
	408, 413, 429, 499, 500, 502, 503, 504}

var codeSlot = func() (s [600]int8) {
	for i := range s {
		s[i] = -1
	}
	for i, c := range commonCodes {
		s[c] = int8(i)
	}
	return s
}()

// liveStats is one route's counters on this node, written by the request
// path with atomics only (except for unusual status codes).
type liveStats struct {
	requests    atomic.Int64
	errors      atomic.Int64
	bytesSent   atomic.Int64
	bytesRecv   atomic.Int64
	rateLimited atomic.Int64
	codes       [len(commonCodes)]atomic.Int64
	otherMu     sync.Mutex
	other       map[int]int64
	hist        liveHistogram
}

func (s *liveStats) record(status int, sent, recv int64, d time.Duration) {
	s.requests.Add(1)
	if status >= 500 {
		s.errors.Add(1)
	}
	if sent > 0 {
		s.bytesSent.Add(sent)
	}
	if recv > 0 {
		s.bytesRecv.Add(recv)
	}
	if status >= 0 && status < len(codeSlot) && codeSlot[status] >= 0 {
		s.codes[codeSlot[status]].Add(1)
	} else {
		s.otherMu.Lock()
		if s.other == nil {
			s.other = make(map[int]int64)
		}
		s.other[status]++
		s.otherMu.Unlock()
	}
	s.hist.observe(d)
}

func (s *liveStats) snapshot(routeID string) RouteStats {
	out := RouteStats{
		RouteID:       routeID,
		Requests:      s.requests.Load(),
		Errors:        s.errors.Load(),
		BytesSent:     s.bytesSent.Load(),
		BytesReceived: s.bytesRecv.Load(),
		RateLimited:   s.rateLimited.Load(),
		StatusCodes:   map[int]int64{},
		Latency:       s.hist.snapshot(),
	}
	for i := range s.codes {
		if n := s.codes[i].Load(); n != 0 {
			out.StatusCodes[commonCodes[i]] = n
		}
	}
	s.otherMu.Lock()
	for c, n := range s.other {
		out.StatusCodes[c] += n
	}
	s.otherMu.Unlock()
	return out
}

// sortedCodes lists the status codes of m in ascending order.
func sortedCodes(m map[int]int64) []int {
	codes := make([]int, 0, len(m))
	for c := range m {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	return codes
}
