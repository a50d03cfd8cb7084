package proxy

import (
	"compress/gzip"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
)

// Hop-by-hop headers (RFC 9110 7.6.1) that apply to one connection and
// are never forwarded, plus the legacy ones proxies commonly see.
func isHop(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

// isForwardHeader names the headers a client could use to lie about where
// a request came from; only trusted proxies may pass them on.
func isForwardHeader(k string) bool {
	switch k {
	case "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded", "X-Real-Ip":
		return true
	}
	return false
}

var (
	protoHTTP   = []string{"http"}
	protoHTTPS  = []string{"https"}
	connUpgrade = []string{"Upgrade"}
	teTrailers  = []string{"trailers"}
	emptyValue  = []string{""}
	gzipValue   = []string{"gzip"}
)

// outRequest builds the request to the backend. It shares what it can
// with r (header value slices, body, context) and copies only the header
// map: the transport never modifies either.
func (p *Proxy) outRequest(r *http.Request, rc *routeCfg, tgt *target, fc *fwdCtx, upgrade bool) *http.Request {
	out := r.WithContext(r.Context())
	path, raw := r.URL.Path, r.URL.RawPath
	if rc.opts.StripPrefix && !rc.maint {
		path = strings.TrimPrefix(path, fc.pool.path)
		if raw != "" {
			if !strings.HasPrefix(raw, fc.pool.path) {
				raw = "" // the escaped form no longer lines up: let url re-escape
			} else {
				raw = strings.TrimPrefix(raw, fc.pool.path)
			}
		}
	}
	u := &url.URL{Scheme: tgt.scheme, Host: tgt.host, Path: joinPath(tgt.path, path)}
	if raw != "" {
		u.RawPath = joinPath(tgt.path, raw)
	}
	switch {
	case tgt.query == "":
		u.RawQuery = r.URL.RawQuery
	case r.URL.RawQuery == "":
		u.RawQuery = tgt.query
	default:
		u.RawQuery = tgt.query + "&" + r.URL.RawQuery
	}
	out.URL = u
	out.RequestURI = ""
	out.Close = false
	if r.ContentLength == 0 {
		out.Body = nil // lets the transport retry a request on a stale idle connection
	}

	in := r.Header
	h := make(http.Header, len(in)+4)
	for k, vv := range in {
		if isHop(k) || (!fc.trusted && isForwardHeader(k)) {
			continue
		}
		h[k] = vv
	}
	if c := in["Connection"]; len(c) > 0 {
		dropConnectionTokens(h, c)
	}
	if upgrade {
		h["Connection"] = connUpgrade
		h["Upgrade"] = in["Upgrade"]
	}
	if headerHasToken(in["Te"], "trailers") {
		h["Te"] = teTrailers
	}
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = emptyValue // stops the transport adding its own
	}
	if fc.peer.IsValid() {
		peer := fc.peer.String()
		if prior := in["X-Forwarded-For"]; fc.trusted && len(prior) > 0 {
			h["X-Forwarded-For"] = []string{strings.Join(prior, ", ") + ", " + peer}
		} else {
			h["X-Forwarded-For"] = []string{peer}
		}
	}
	if !fc.trusted || len(in["X-Forwarded-Proto"]) == 0 {
		if r.TLS != nil {
			h["X-Forwarded-Proto"] = protoHTTPS
		} else {
			h["X-Forwarded-Proto"] = protoHTTP
		}
	}
	if !fc.trusted || len(in["X-Forwarded-Host"]) == 0 {
		h["X-Forwarded-Host"] = []string{r.Host}
	}
	for _, hd := range rc.reqHdr {
		h[hd.Name] = []string{hd.Value}
	}
	out.Header = h

	switch {
	case rc.reqHost != "":
		out.Host = rc.reqHost
	case rc.opts.PreserveHost:
		out.Host = r.Host
	default:
		out.Host = ""
	}
	return out
}

// joinPath appends a request path to a backend base path (no trailing
// slash), keeping exactly one slash between them.
func joinPath(base, p string) string {
	if p == "" {
		p = "/"
	} else if p[0] != '/' {
		p = "/" + p
	}
	if base == "" {
		return p
	}
	return base + p
}

// dropConnectionTokens removes the headers a Connection header names as
// hop-by-hop for this connection.
func dropConnectionTokens(h http.Header, conn []string) {
	for _, v := range conn {
		for v != "" {
			var tok string
			tok, v, _ = strings.Cut(v, ",")
			if tok = strings.TrimSpace(tok); tok != "" {
				h.Del(tok)
			}
		}
	}
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

var gzipPool = sync.Pool{New: func() any {
	// BestSpeed: a proxy compresses on the request path, so throughput
	// matters more than the last few percent of size.
	w, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed)
	return w
}}

// writeResponse copies the backend's answer to the client: headers minus
// hop-by-hop ones, the route's response headers, the body through a pooled
// buffer (gzipped when the route asks and the client accepts), trailers.
// abort is set when the backend failed mid-body.
func (p *Proxy) writeResponse(w http.ResponseWriter, r *http.Request, rc *routeCfg, resp *http.Response) (sent int64, abort bool) {
	defer resp.Body.Close()
	h := w.Header()
	for k, vv := range resp.Header {
		if !isHop(k) {
			h[k] = vv
		}
	}
	if c := resp.Header["Connection"]; len(c) > 0 {
		dropConnectionTokens(h, c)
	}
	for _, hd := range rc.respHdr {
		h[hd.Name] = []string{hd.Value}
	}
	if len(resp.Trailer) > 0 {
		names := make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			names = append(names, k)
		}
		h["Trailer"] = []string{strings.Join(names, ", ")}
	}
	var dst io.Writer = w
	var gz *gzip.Writer
	var cw *countWriter
	if rc.opts.Compression && shouldGzip(r, resp) {
		delete(h, "Content-Length")
		h["Content-Encoding"] = gzipValue
		h.Add("Vary", "Accept-Encoding")
		cw = &countWriter{w: w}
		gz = gzipPool.Get().(*gzip.Writer)
		gz.Reset(cw)
		dst = gz
	}
	w.WriteHeader(resp.StatusCode)

	flush := resp.ContentLength == -1 || strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")
	flusher, _ := w.(http.Flusher)
	bp := bufPool.Get().(*[]byte)
	buf := *bp
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			m, werr := dst.Write(buf[:n])
			sent += int64(m)
			if werr != nil {
				break // the client went away; nothing left to tell it
			}
			if flush && flusher != nil {
				if gz != nil {
					_ = gz.Flush()
				}
				flusher.Flush()
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			abort = true
			p.log.Warn("backend response body failed", "route", rc.id, "err", rerr)
			break
		}
	}
	bufPool.Put(bp)
	if gz != nil {
		_ = gz.Close()
		gz.Reset(io.Discard)
		gzipPool.Put(gz)
		sent = cw.n
	}
	for k, vv := range resp.Trailer {
		h[http.TrailerPrefix+k] = vv
	}
	return sent, abort
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}

// gzipMinSize is the smallest known body worth compressing; below it the
// gzip framing outweighs the savings.
const gzipMinSize = 256

func shouldGzip(r *http.Request, resp *http.Response) bool {
	if r.Method == http.MethodHead || resp.StatusCode < 200 || resp.StatusCode == http.StatusNoContent ||
		resp.StatusCode == http.StatusPartialContent || resp.StatusCode == http.StatusNotModified {
		return false
	}
	if resp.Header.Get("Content-Encoding") != "" || resp.Header.Get("Content-Range") != "" {
		return false
	}
	if resp.ContentLength >= 0 && resp.ContentLength < gzipMinSize {
		return false
	}
	if !acceptsGzip(r.Header["Accept-Encoding"]) {
		return false
	}
	return compressible(resp.Header.Get("Content-Type"))
}

func acceptsGzip(vals []string) bool {
	for _, v := range vals {
		for v != "" {
			var part string
			part, v, _ = strings.Cut(v, ",")
			name, params, _ := strings.Cut(part, ";")
			if !strings.EqualFold(strings.TrimSpace(name), "gzip") {
				continue
			}
			q := strings.ReplaceAll(params, " ", "")
			return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
		}
	}
	return false
}

// compressible is a conservative list of types that gzip shrinks; media
// and archives are already compressed.
func compressible(ct string) bool {
	ct = strings.ToLower(ct)
	switch {
	case ct == "", strings.HasPrefix(ct, "text/"):
		return true
	case strings.HasPrefix(ct, "application/"):
		return strings.Contains(ct, "json") || strings.Contains(ct, "javascript") ||
			strings.Contains(ct, "xml") || strings.Contains(ct, "wasm") || strings.Contains(ct, "yaml")
	case strings.HasPrefix(ct, "image/svg"):
		return true
	}
	return false
}

// serveUpgrade completes a protocol switch (websocket): it hands the
// client connection and the backend connection to each other and copies
// both ways until either side closes.
func (p *Proxy) serveUpgrade(w http.ResponseWriter, r *http.Request, rc *routeCfg, resp *http.Response) result {
	back, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		_ = resp.Body.Close()
		writePlain(w, http.StatusBadGateway, msgBadGateway)
		return result{status: http.StatusBadGateway}
	}
	defer back.Close()
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		p.log.Warn("cannot take over client connection for upgrade", "route", rc.id, "err", err)
		writePlain(w, http.StatusBadGateway, msgBadGateway)
		return result{status: http.StatusBadGateway}
	}
	defer conn.Close()
	h := resp.Header.Clone()
	for _, hd := range rc.respHdr {
		h[hd.Name] = []string{hd.Value}
	}
	_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	_ = h.Write(brw)
	_, _ = brw.WriteString("\r\n")
	if err := brw.Flush(); err != nil {
		return result{status: statusClientGone}
	}
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(back, brw.Reader); done <- struct{}{} }()
	go func() { _, _ = io.Copy(conn, back); done <- struct{}{} }()
	<-done
	// One side ended: closing both ends the other copy too.
	_ = conn.Close()
	_ = back.Close()
	<-done
	return result{status: http.StatusSwitchingProtocols}
}
