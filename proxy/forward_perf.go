package proxy

import (
	"bufio"
	"net/http"
	"net/url"
	"strings"
)

// fastReq is what writeOutHead needs besides the client's request: the
// route, the target chosen for this attempt, and the shared client facts.
type fastReq struct {
	rc  *routeCfg
	tgt *target
	fc  *fwdCtx
}

// writeOutHead writes the request line and headers for the backend
// straight from the client's request into bw and flushes them in one
// write. It applies the same rules as outRequest (hop-by-hop and
// Connection-named headers dropped, X-Forwarded-* replaced unless the peer
// is trusted, route headers override) without building an outgoing
// *http.Request, a URL or a header map.
func writeOutHead(bw *bufio.Writer, r *http.Request, fr *fastReq) error {
	rc, tgt, fc := fr.rc, fr.tgt, fr.fc
	_, _ = bw.WriteString(r.Method)
	_ = bw.WriteByte(' ')
	writeOutPath(bw, r, rc, tgt, fc)
	_, _ = bw.WriteString(" HTTP/1.1\r\nHost: ")
	switch {
	case rc.reqHost != "":
		_, _ = bw.WriteString(rc.reqHost)
	case rc.opts.PreserveHost:
		_, _ = bw.WriteString(r.Host)
	default:
		_, _ = bw.WriteString(tgt.host)
	}
	_, _ = bw.WriteString("\r\n")

	in := r.Header
	conn := in["Connection"]
	for k, vv := range in {
		switch {
		case isHop(k), k == "Host", k == "Content-Length",
			k == "X-Forwarded-For", k == "X-Forwarded-Proto", k == "X-Forwarded-Host":
			continue
		case !fc.trusted && isForwardHeader(k):
			continue
		case len(conn) > 0 && headerHasToken(conn, k):
			continue
		case routeSetsHeader(rc, k):
			continue
		}
		for _, v := range vv {
			if v == "" && k == "User-Agent" || hasLineBreak(v) {
				continue
			}
			writeHeaderLine(bw, k, v)
		}
	}
	if headerHasToken(in["Te"], "trailers") && !routeSetsHeader(rc, "Te") {
		writeHeaderLine(bw, "Te", "trailers")
	}
	if fc.peer.IsValid() && !routeSetsHeader(rc, "X-Forwarded-For") {
		_, _ = bw.WriteString("X-Forwarded-For: ")
		if prior := in["X-Forwarded-For"]; fc.trusted && len(prior) > 0 {
			for _, v := range prior {
				if !hasLineBreak(v) {
					_, _ = bw.WriteString(v)
					_, _ = bw.WriteString(", ")
				}
			}
		}
		_, _ = bw.Write(fc.peer.AppendTo(bw.AvailableBuffer()))
		_, _ = bw.WriteString("\r\n")
	}
	if !routeSetsHeader(rc, "X-Forwarded-Proto") {
		if prior := in["X-Forwarded-Proto"]; fc.trusted && len(prior) > 0 {
			if !connNames(conn, "X-Forwarded-Proto") {
				writeValues(bw, "X-Forwarded-Proto", prior)
			}
		} else if r.TLS != nil {
			writeHeaderLine(bw, "X-Forwarded-Proto", "https")
		} else {
			writeHeaderLine(bw, "X-Forwarded-Proto", "http")
		}
	}
	if !routeSetsHeader(rc, "X-Forwarded-Host") {
		if prior := in["X-Forwarded-Host"]; fc.trusted && len(prior) > 0 {
			if !connNames(conn, "X-Forwarded-Host") {
				writeValues(bw, "X-Forwarded-Host", prior)
			}
		} else if !hasLineBreak(r.Host) {
			writeHeaderLine(bw, "X-Forwarded-Host", r.Host)
		}
	}
	for _, hd := range rc.reqHdr {
		if hd.Name == "Host" || hd.Name == "Content-Length" || hasLineBreak(hd.Value) {
			continue
		}
		writeHeaderLine(bw, hd.Name, hd.Value)
	}
	_, _ = bw.WriteString("\r\n")
	return bw.Flush()
}

// writeOutPath writes the request target: the backend's base path joined
// with the (optionally prefix-stripped) client path, then the query. The
// common case (nothing that needs escaping) is written as it is; anything
// else goes through url.URL.EscapedPath as outRequest does.
func writeOutPath(bw *bufio.Writer, r *http.Request, rc *routeCfg, tgt *target, fc *fwdCtx) {
	path, raw := r.URL.Path, r.URL.RawPath
	if rc.opts.StripPrefix && !rc.maint {
		path = strings.TrimPrefix(path, fc.pool.path)
		if raw != "" {
			if !strings.HasPrefix(raw, fc.pool.path) {
				raw = ""
			} else {
				raw = strings.TrimPrefix(raw, fc.pool.path)
			}
		}
	}
	if raw == "" && pathNeedsNoEscape(tgt.path) && pathNeedsNoEscape(path) {
		_, _ = bw.WriteString(tgt.path)
		if path == "" || path[0] != '/' {
			_ = bw.WriteByte('/')
		}
		_, _ = bw.WriteString(path)
	} else {
		u := url.URL{Path: joinPath(tgt.path, path)}
		if raw != "" {
			u.RawPath = joinPath(tgt.path, raw)
		}
		_, _ = bw.WriteString(u.EscapedPath())
	}
	q := r.URL.RawQuery
	switch {
	case tgt.query == "" && q == "":
	case tgt.query == "":
		_ = bw.WriteByte('?')
		_, _ = bw.WriteString(q)
	case q == "":
		_ = bw.WriteByte('?')
		_, _ = bw.WriteString(tgt.query)
	default:
		_ = bw.WriteByte('?')
		_, _ = bw.WriteString(tgt.query)
		_ = bw.WriteByte('&')
		_, _ = bw.WriteString(q)
	}
}

// pathNeedsNoEscape reports whether url's path escaping would leave s as
// it is: unreserved characters and the sub-delimiters it keeps in paths.
func pathNeedsNoEscape(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-', c == '_', c == '.', c == '~', c == '/',
			c == '$', c == '&', c == '+', c == ',', c == ':', c == ';', c == '=', c == '@':
		default:
			return false
		}
	}
	return true
}

// routeSetsHeader reports whether the route's request headers replace k.
func routeSetsHeader(rc *routeCfg, k string) bool {
	for i := range rc.reqHdr {
		if rc.reqHdr[i].Name == k {
			return true
		}
	}
	return false
}

// connNames reports whether the client's Connection header names k as
// hop-by-hop.
func connNames(conn []string, k string) bool {
	return len(conn) > 0 && headerHasToken(conn, k)
}

func hasLineBreak(v string) bool {
	return strings.IndexByte(v, '\n') >= 0 || strings.IndexByte(v, '\r') >= 0
}

func writeHeaderLine(bw *bufio.Writer, k, v string) {
	_, _ = bw.WriteString(k)
	_, _ = bw.WriteString(": ")
	_, _ = bw.WriteString(v)
	_, _ = bw.WriteString("\r\n")
}

func writeValues(bw *bufio.Writer, k string, vv []string) {
	for _, v := range vv {
		if !hasLineBreak(v) {
			writeHeaderLine(bw, k, v)
		}
	}
}
