package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"strconv"
	"time"
)

// The fast path's response parser. http.ReadResponse costs about ten
// allocations per response (Response, header map, textproto reader,
// value strings, body wrappers); here every connection owns one Response,
// one header map and the body reader, and a response costs two: the
// string holding all header bytes and the slice of values.

// h1MaxHeaderBytes bounds a response head, as the fallback transport's
// MaxResponseHeaderBytes does.
const h1MaxHeaderBytes = 1 << 20

var errH1Malformed = errors.New("malformed HTTP response from backend")

// h1Fast is the per-connection state of fast-path responses. It is used
// by one request at a time: the connection goes back to the pool only
// when the body is closed.
type h1Fast struct {
	resp    http.Response
	hdr     http.Header
	scratch []byte   // canonical keys and values of the head being read
	kv      []kvSpan // where each header line's key and value lie in scratch
	body    h1FastBody
}

type kvSpan struct{ ks, ke, vs, ve int }

// readFastResponse reads a response head from pc for a request with the
// given method, skipping 1xx answers, and frames the body.
func (c *h1Client) readFastResponse(pc *h1Conn, method string) (*http.Response, error) {
	f := &pc.fast
	var code, minor int
	for {
		line, err := pc.br.ReadSlice('\n')
		if err != nil {
			return nil, fmt.Errorf("read status line: %w", err)
		}
		code, minor, err = parseStatusLine(line)
		if err != nil {
			return nil, err
		}
		if err := f.readHeaderLines(pc.br); err != nil {
			return nil, err
		}
		if code >= 200 {
			break
		}
		if code == http.StatusSwitchingProtocols {
			// Only requests without Upgrade take this path.
			return nil, fmt.Errorf("unexpected 101 from backend: %w", errH1Malformed)
		}
	}
	// The route timeout bounds the wait for headers only. Reset before
	// the connection can go back to the pool below.
	pc.dr.hard = time.Time{}
	if f.hdr == nil {
		f.hdr = make(http.Header, 16)
	} else {
		clear(f.hdr)
	}
	f.fillHeader()
	h := f.hdr
	resp := &f.resp
	*resp = http.Response{StatusCode: code, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: minor, Header: h, ContentLength: -1}
	if minor == 0 {
		resp.Proto = "HTTP/1.0"
	}
	conn := h["Connection"]
	resp.Close = headerHasToken(conn, "close") || (minor == 0 && !headerHasToken(conn, "keep-alive"))
	if tr := h["Trailer"]; len(tr) > 0 {
		resp.Trailer = make(http.Header)
		for _, v := range tr {
			for _, name := range splitTokens(v) {
				resp.Trailer[textproto.CanonicalMIMEHeaderKey(name)] = nil
			}
		}
	}

	b := &f.body
	*b = h1FastBody{pc: pc, c: c, resp: resp}
	te, chunked := h["Transfer-Encoding"], false
	if len(te) > 0 {
		if len(te) != 1 || !asciiEqualFold(te[0], "chunked") {
			return nil, fmt.Errorf("unsupported transfer encoding %q: %w", te, errH1Malformed)
		}
		chunked = true
		delete(h, "Content-Length")
	}
	n := int64(-1)
	if cl := h["Content-Length"]; len(cl) > 0 && !chunked {
		for i, v := range cl {
			m, err := strconv.ParseInt(v, 10, 64)
			if err != nil || m < 0 || (i > 0 && m != n) {
				return nil, fmt.Errorf("bad content-length %q: %w", cl, errH1Malformed)
			}
			n = m
		}
		if len(cl) > 1 {
			h["Content-Length"] = cl[:1]
		}
	}
	noBody := method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified
	switch {
	case noBody:
		if method == http.MethodHead {
			resp.ContentLength = n
		} else {
			resp.ContentLength = 0
		}
		resp.Body = http.NoBody
		c.put(pc, !resp.Close)
		return resp, nil
	case chunked:
		b.mode = bodyChunked
	case n == 0:
		resp.ContentLength = 0
		resp.Body = http.NoBody
		c.put(pc, !resp.Close)
		return resp, nil
	case n > 0:
		resp.ContentLength = n
		b.mode = bodyLength
		b.remain = n
	default:
		// No framing: the body runs until the backend closes, so the
		// connection cannot be reused.
		b.mode = bodyUntilClose
		resp.Close = true
	}
	b.reusable = !resp.Close
	resp.Body = b
	return resp, nil
}

// parseStatusLine parses "HTTP/1.x NNN reason".
func parseStatusLine(line []byte) (code, minor int, err error) {
	line = bytes.TrimRight(line, "\r\n")
	if len(line) < 12 || string(line[:7]) != "HTTP/1." || line[8] != ' ' || (len(line) > 12 && line[12] != ' ') {
		return 0, 0, fmt.Errorf("status line %q: %w", line, errH1Malformed)
	}
	switch line[7] {
	case '0':
	case '1':
		minor = 1
	default:
		return 0, 0, fmt.Errorf("status line %q: %w", line, errH1Malformed)
	}
	for _, ch := range line[9:12] {
		if ch < '0' || ch > '9' {
			return 0, 0, fmt.Errorf("status line %q: %w", line, errH1Malformed)
		}
		code = code*10 + int(ch-'0')
	}
	if code < 100 {
		return 0, 0, fmt.Errorf("status line %q: %w", line, errH1Malformed)
	}
	return code, minor, nil
}

// readHeaderLines reads header lines up to the empty line into scratch,
// canonicalizing keys in place.
func (f *h1Fast) readHeaderLines(br *bufio.Reader) error {
	f.scratch = f.scratch[:0]
	f.kv = f.kv[:0]
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("read response header: %w", err)
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			return nil
		}
		if len(f.scratch)+len(line) > h1MaxHeaderBytes {
			return fmt.Errorf("response header over %d bytes: %w", h1MaxHeaderBytes, errH1Malformed)
		}
		if line[0] == ' ' || line[0] == '\t' {
			// Obsolete line folding: the continuation joins the previous
			// value with one space.
			if len(f.kv) == 0 {
				return fmt.Errorf("header continuation first: %w", errH1Malformed)
			}
			f.scratch = append(f.scratch, ' ')
			f.scratch = append(f.scratch, bytes.TrimSpace(line)...)
			f.kv[len(f.kv)-1].ve = len(f.scratch)
			continue
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return fmt.Errorf("header line %q: %w", line, errH1Malformed)
		}
		key := line[:colon]
		ks := len(f.scratch)
		for _, ch := range key {
			if !isTokenByte(ch) {
				return fmt.Errorf("header name %q: %w", key, errH1Malformed)
			}
		}
		f.scratch = appendCanonicalKey(f.scratch, key)
		ke := len(f.scratch)
		f.scratch = append(f.scratch, bytes.TrimSpace(line[colon+1:])...)
		f.kv = append(f.kv, kvSpan{ks: ks, ke: ke, vs: ke, ve: len(f.scratch)})
	}
}

// fillHeader turns scratch into the header map: one string for all of it,
// one slice for all values, common keys interned.
func (f *h1Fast) fillHeader() {
	if len(f.kv) == 0 {
		return
	}
	s := string(f.scratch)
	vals := make([]string, len(f.kv))
	for i, sp := range f.kv {
		key, ok := commonHeaderKeys[string(f.scratch[sp.ks:sp.ke])]
		if !ok {
			key = s[sp.ks:sp.ke]
		}
		v := s[sp.vs:sp.ve]
		if prev, dup := f.hdr[key]; dup {
			f.hdr[key] = append(prev, v)
			continue
		}
		vals[i] = v
		f.hdr[key] = vals[i : i+1 : i+1]
	}
}

var commonHeaderKeys = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"Accept-Ranges", "Access-Control-Allow-Origin", "Age", "Cache-Control", "Connection",
		"Content-Encoding", "Content-Language", "Content-Length", "Content-Range", "Content-Type", "Date", "Etag",
		"Expires", "Keep-Alive", "Last-Modified", "Location", "Server", "Set-Cookie", "Trailer", "Transfer-Encoding",
		"Vary", "Via", "X-Content-Type-Options", "X-Frame-Options", "Strict-Transport-Security",
		// and the common request headers, for the front loop
		"Host", "User-Agent", "Accept", "Accept-Encoding", "Accept-Language", "Authorization", "Cookie",
		"Referer", "Origin", "If-None-Match", "If-Modified-Since", "Pragma", "Upgrade", "Te", "Expect",
		"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Real-Ip", "X-Request-Id", "Forwarded"} {
		m[k] = k
	}
	return m
}()

func isTokenByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// appendCanonicalKey appends key in textproto's canonical form: upper
// case after the start and after each '-', lower case elsewhere.
func appendCanonicalKey(dst, key []byte) []byte {
	upper := true
	for _, c := range key {
		switch {
		case upper && 'a' <= c && c <= 'z':
			c -= 'a' - 'A'
		case !upper && 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		dst = append(dst, c)
		upper = c == '-'
	}
	return dst
}

func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func splitTokens(v string) []string {
	var out []string
	for _, f := range bytes.Split([]byte(v), []byte(",")) {
		if t := bytes.TrimSpace(f); len(t) > 0 {
			out = append(out, string(t))
		}
	}
	return out
}

const (
	bodyLength = iota + 1
	bodyChunked
	bodyUntilClose
)

// h1FastBody reads a fast-path response body from its connection and
// gives the connection back to the pool when closed after the end was
// reached; closing it earlier closes the connection (the rest of the body
// would otherwise be read as the next response).
type h1FastBody struct {
	pc       *h1Conn
	c        *h1Client
	resp     *http.Response
	mode     int
	remain   int64 // bodyLength: bytes left; bodyChunked: bytes left in this chunk
	needCRLF bool  // bodyChunked: the CRLF after a chunk's data is unread
	reusable bool
	err      error // sticky: io.EOF once complete, or the failure
	closed   bool
}

func (b *h1FastBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	br := b.pc.br
	switch b.mode {
	case bodyLength:
		if int64(len(p)) > b.remain {
			p = p[:b.remain]
		}
		n, err := br.Read(p)
		b.remain -= int64(n)
		if b.remain == 0 {
			b.err = io.EOF
			return n, io.EOF
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			b.err = err
		}
		return n, err
	case bodyUntilClose:
		n, err := br.Read(p)
		if err != nil {
			b.err = err
		}
		return n, err
	}
	if b.remain == 0 {
		if err := b.nextChunk(); err != nil {
			b.err = err
			return 0, err
		}
	}
	if int64(len(p)) > b.remain {
		p = p[:b.remain]
	}
	n, err := br.Read(p)
	b.remain -= int64(n)
	if b.remain == 0 {
		b.needCRLF = true
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		b.err = err
	}
	return n, err
}

// nextChunk reads up to the next chunk's data; at the last chunk it reads
// the trailers and returns io.EOF.
func (b *h1FastBody) nextChunk() error {
	br := b.pc.br
	if b.needCRLF {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return noEOF(err)
		}
		if len(bytes.TrimRight(line, "\r\n")) != 0 {
			return fmt.Errorf("chunk not followed by CRLF: %w", errH1Malformed)
		}
		b.needCRLF = false
	}
	line, err := br.ReadSlice('\n')
	if err != nil {
		return noEOF(err)
	}
	line = bytes.TrimRight(line, "\r\n")
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = line[:i] // chunk extensions carry nothing a proxy needs
	}
	size, err := strconv.ParseUint(string(bytes.TrimSpace(line)), 16, 62)
	if err != nil {
		return fmt.Errorf("chunk size %q: %w", line, errH1Malformed)
	}
	if size > 0 {
		b.remain = int64(size)
		return nil
	}
	f := &b.pc.fast
	if err := f.readHeaderLines(br); err != nil {
		return noEOF(err)
	}
	if len(f.kv) > 0 {
		if b.resp.Trailer == nil {
			b.resp.Trailer = make(http.Header, len(f.kv))
		}
		for _, sp := range f.kv {
			k := string(f.scratch[sp.ks:sp.ke])
			b.resp.Trailer[k] = append(b.resp.Trailer[k], string(f.scratch[sp.vs:sp.ve]))
		}
	}
	return io.EOF
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func (b *h1FastBody) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	if b.err == io.EOF && b.reusable {
		b.c.put(b.pc, true)
	} else {
		_ = b.pc.nc.Close()
	}
	return nil
}
