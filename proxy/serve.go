package proxy

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// ServeHTTP routes one client request: lookup, backend choice, rate limit,
// forwarding (with retries), statistics.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	now := start
	if p.clock != nil {
		now = p.clock()
	}
	pl := p.table.Load().lookup(r.Host, r.URL.Path)
	if pl == nil {
		writePlain(w, http.StatusNotFound, msgNotFound)
		return
	}
	peer, ip, trusted := p.clientAddr(r)

	rc, idx, ref := pl.pick(ip, now, 0)
	if rc == nil {
		p.refuse(w, pl.members[0], ref, start)
		return
	}
	if rc.maint && rc.maintTgt == nil {
		writeMaintenance(w)
		p.account(rc, http.StatusServiceUnavailable, 0, 0, start)
		return
	}
	if rc.lim != nil {
		if ok, retry := rc.lim.allow(ip, now.UnixNano(), p.rateShare()); !ok {
			if rc.brk != nil {
				rc.brk.release()
			}
			rc.rs.liveStats().rateLimited.Add(1)
			writeRetry(w, http.StatusTooManyRequests, retryAfterSeconds(retry), msgRateLimited)
			p.account(rc, http.StatusTooManyRequests, 0, 0, start)
			return
		}
	}
	if limit := rc.opts.MaxBodyBytes; limit > 0 && r.Body != nil && r.Body != http.NoBody {
		if r.ContentLength > limit {
			if rc.brk != nil {
				rc.brk.release()
			}
			writePlain(w, http.StatusRequestEntityTooLarge, msgTooLarge)
			p.account(rc, http.StatusRequestEntityTooLarge, 0, 0, start)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
	}

	tries := 0
	if rc.opts.Retries > 0 && replayable(r) {
		tries = min(rc.opts.Retries, 5)
	}
	fc := fwdCtx{peer: peer, trusted: trusted, pool: pl}
	var skip uint64
	for {
		rc.rs.inflight.Add(1)
		rc.sessInflight.Add(1)
		res := p.attempt(w, r, rc, &fc, tries > 0)
		rc.rs.inflight.Add(-1)
		rc.sessInflight.Add(-1)
		if !res.retry {
			p.account(rc, res.status, res.sent, res.recv, start)
			if res.abort {
				// The backend broke off mid-body: make the client see a
				// truncated response rather than a complete one.
				panic(http.ErrAbortHandler)
			}
			return
		}
		tries--
		skip |= 1 << (idx & 63)
		now = p.now()
		next, nidx, _ := pl.pick(ip, now, skip)
		if next == nil {
			next, nidx, _ = pl.pick(ip, now, 0) // a pool of one retries its only backend
		}
		if next == nil || next.maint {
			// A maintenance member was returned without breaker admission,
			// so there is nothing to release.
			writeFailure(w, res.status)
			p.account(rc, res.status, 0, 0, start)
			return
		}
		rc, idx = next, nidx
	}
}

// refuse answers a request the pool had no member for.
func (p *Proxy) refuse(w http.ResponseWriter, acct *routeCfg, ref refusal, start time.Time) {
	switch {
	case ref.breakerOpen && !ref.unhealthy && !ref.draining:
		writeRetry(w, http.StatusServiceUnavailable, retryAfterSeconds(ref.retry), msgBreakerOpen)
	case ref.draining && !ref.unhealthy:
		writeRetry(w, http.StatusServiceUnavailable, retryNoBackend, msgDraining)
	default:
		writeRetry(w, http.StatusServiceUnavailable, retryNoBackend, msgNoBackend)
	}
	p.account(acct, http.StatusServiceUnavailable, 0, 0, start)
}

func (p *Proxy) account(rc *routeCfg, status int, sent, recv int64, start time.Time) {
	rc.rs.liveStats().record(status, sent, recv, time.Since(start))
}

// fwdCtx is what every attempt of one request shares.
type fwdCtx struct {
	peer    netip.Addr
	trusted bool
	pool    *pool
}

type result struct {
	status     int
	sent, recv int64
	retry      bool // nothing was written; try another backend
	abort      bool
}

// attempt forwards r to rc's backend once and writes the answer, unless
// mayRetry and the attempt failed in a way worth retrying.
func (p *Proxy) attempt(w http.ResponseWriter, r *http.Request, rc *routeCfg, fc *fwdCtx, mayRetry bool) result {
	tgt, rt := &rc.target, rc.rt
	if rc.maint {
		tgt, rt = rc.maintTgt, rc.maintRT
	}
	if rt == nil {
		writePlain(w, http.StatusBadGateway, msgBadGateway)
		return result{status: http.StatusBadGateway}
	}
	upgrade := rc.websocket && isUpgrade(r)
	if upgrade {
		rt = rc.upgradeRT
	}
	recv := r.ContentLength
	var resp *http.Response
	var err error
	if h1, ok := rt.(*h1Client); ok && !upgrade && fastEligible(r) {
		// Bodiless request to a plain HTTP/1.1 backend: written straight
		// from r, no outgoing request to build.
		resp, err = h1.forward(r, &fastReq{rc: rc, tgt: tgt, fc: fc})
	} else {
		out := p.outRequest(r, rc, tgt, fc, upgrade)
		var cnt *countingReader
		if recv < 0 {
			cnt = &countingReader{r: out.Body}
			out.Body = cnt
		}
		resp, err = rt.RoundTrip(out)
		if cnt != nil {
			recv = cnt.n.Load()
		}
	}
	breakerOn := rc.brk != nil && !rc.maint
	if err != nil {
		if r.Context().Err() != nil {
			if breakerOn {
				rc.brk.release()
			}
			p.log.Info("client went away", "route", rc.id, "backend", tgt.host)
			return result{status: statusClientGone, recv: recv}
		}
		status := errorStatus(err)
		if breakerOn && status != http.StatusRequestEntityTooLarge {
			rc.brk.record(false, p.now())
		}
		if rc.passive && !rc.maint && status != http.StatusRequestEntityTooLarge {
			p.passiveResult(rc, false, func() string { return shortError(err) })
		}
		if mayRetry && status != http.StatusRequestEntityTooLarge {
			return result{status: status, retry: true}
		}
		p.log.Warn("backend request failed", "route", rc.id, "backend", tgt.host, "status", status, "err", err)
		writeFailure(w, status)
		return result{status: status, recv: recv}
	}
	if breakerOn {
		rc.brk.record(resp.StatusCode < 500, p.now())
	}
	if rc.passive && !rc.maint {
		code := resp.StatusCode
		p.passiveResult(rc, code < 500, func() string { return "status " + strconv.Itoa(code) })
	}
	if resp.StatusCode >= 500 && mayRetry {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		_ = resp.Body.Close()
		return result{status: resp.StatusCode, retry: true}
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return p.serveUpgrade(w, r, rc, resp)
	}
	sent, abort := p.writeResponse(w, r, rc, resp)
	return result{status: resp.StatusCode, sent: sent, recv: recv, abort: abort}
}

// statusClientGone is nginx's code for a client that closed the connection
// before the answer; it is recorded, never sent.
const statusClientGone = 499

func errorStatus(err error) int {
	var mb *http.MaxBytesError
	if errors.As(err, &mb) {
		return http.StatusRequestEntityTooLarge
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

func writeFailure(w http.ResponseWriter, status int) {
	switch status {
	case http.StatusGatewayTimeout:
		writePlain(w, status, msgTimeout)
	case http.StatusRequestEntityTooLarge:
		writePlain(w, status, msgTooLarge)
	default:
		writePlain(w, http.StatusBadGateway, msgBadGateway)
	}
}

// replayable reports whether r may be sent again after a failure:
// idempotent method and no body that the first attempt may have consumed.
func replayable(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
	default:
		return false
	}
	return r.ContentLength == 0 && (r.Body == nil || r.Body == http.NoBody) && !isUpgrade(r)
}

func isUpgrade(r *http.Request) bool {
	return r.Header.Get("Upgrade") != "" && headerHasToken(r.Header["Connection"], "upgrade")
}

// headerHasToken reports whether a comma-separated header holds token
// (case-insensitive).
func headerHasToken(vals []string, token string) bool {
	for _, v := range vals {
		for v != "" {
			var part string
			part, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(strings.TrimSpace(part), token) {
				return true
			}
		}
	}
	return false
}

// clientAddr is the TCP peer, the client IP that rate limits and ip_hash
// use, and whether the peer is a trusted proxy. From a trusted peer the
// client is the right-most X-Forwarded-For entry that is not itself
// trusted.
func (p *Proxy) clientAddr(r *http.Request) (peer, client netip.Addr, trusted bool) {
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		peer = ap.Addr().Unmap()
	}
	client = peer
	if len(p.cfg.TrustedProxies) == 0 || !p.isTrusted(peer) {
		return peer, client, false
	}
	xff := r.Header["X-Forwarded-For"]
	for i := len(xff) - 1; i >= 0; i-- {
		v := xff[i]
		for v != "" {
			var part string
			if j := strings.LastIndexByte(v, ','); j >= 0 {
				part, v = v[j+1:], v[:j]
			} else {
				part, v = v, ""
			}
			a, err := netip.ParseAddr(strings.TrimSpace(part))
			if err != nil {
				return peer, client, true
			}
			client = a.Unmap()
			if !p.isTrusted(client) {
				return peer, client, true
			}
		}
	}
	return peer, client, true
}

func (p *Proxy) isTrusted(a netip.Addr) bool {
	for _, pfx := range p.cfg.TrustedProxies {
		if pfx.Contains(a) {
			return true
		}
	}
	return false
}

// countingReader counts a chunked request body. The transport may still
// be reading it after RoundTrip returns, hence the atomic.
type countingReader struct {
	r io.ReadCloser
	n atomic.Int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n.Add(int64(n))
	return n, err
}

func (c *countingReader) Close() error { return c.r.Close() }
