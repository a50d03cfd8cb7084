package protocol

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

// MaxLineBytes is the longest command line the control port accepts,
// without its "\n" and optional trailing "\r".
const MaxLineBytes = 16384

// ErrLineTooLong is returned by ReadLine for a line longer than
// MaxLineBytes. Its text is the message the client gets after "ERROR|". The
// reader has already skipped the rest of that line, so the connection stays
// usable.
var ErrLineTooLong = errors.New("line too long (max 16384 bytes)")

// smallReadBytes is the buffer every connection owns. Almost every command
// fits in it; an idle connection holds nothing else.
const smallReadBytes = 512

// bigReadBytes holds one line of the maximal length plus "\r\n", so a line
// at the limit ending in CRLF is still seen whole.
const bigReadBytes = MaxLineBytes + 2

// bigBuffers lends the line-sized buffers: a connection borrows one only
// while a line longer than its small buffer is buffered, so thousands of
// idle connections share a handful.
var bigBuffers = sync.Pool{New: func() any { b := make([]byte, bigReadBytes); return &b }}

// LineReader reads the newline-framed command lines of one control
// connection with bounded memory and per-line deadlines. It is not safe for
// concurrent use; one goroutine per connection reads.
type LineReader struct {
	conn  net.Conn
	small [smallReadBytes]byte
	// buf is small[:] or a borrowed big buffer; buf[start:end] is read but
	// not yet returned.
	buf        []byte
	big        *[]byte
	start, end int
	// broken records a read error in the middle of a line: the partial line
	// was dropped, so later bytes cannot be framed reliably.
	broken error
}

// NewLineReader returns a reader of the lines arriving on conn. The caller
// keeps ownership of conn (closing, writing, keepalive).
func NewLineReader(conn net.Conn) *LineReader {
	r := &LineReader{conn: conn}
	r.buf = r.small[:]
	return r
}

// ReadLine returns the next non-empty line without its "\n" and without
// one trailing "\r".
//
// It waits up to idle for the first byte of the next line (idle <= 0: no
// limit); blank lines do not restart that wait, so they cannot keep an idle
// connection open. From the first byte of a line, the whole line must
// arrive within lineTimeout (<= 0: no limit), so a client trickling one
// byte at a time cannot hold a connection forever.
//
// A line longer than MaxLineBytes yields ErrLineTooLong once the reader has
// skipped past its newline; the next call returns the following line. A
// timeout yields an error for which errors.Is(err, os.ErrDeadlineExceeded)
// holds. At end of input a final line without "\n" is returned, then
// io.EOF. After a timeout or read error inside a line the reader keeps
// returning that error; the caller should close the connection.
func (r *LineReader) ReadLine(idle, lineTimeout time.Duration) (string, error) {
	if r.broken != nil {
		return "", r.broken
	}
	var idleDeadline time.Time
	if idle > 0 {
		idleDeadline = time.Now().Add(idle)
	}
	for {
		if r.start == r.end {
			r.reset()
			if err := r.conn.SetReadDeadline(idleDeadline); err != nil {
				return "", fmt.Errorf("set idle deadline: %w", err)
			}
			n, err := r.conn.Read(r.buf)
			r.end = n
			if n == 0 {
				if err == nil {
					continue
				}
				if errors.Is(err, io.EOF) {
					return "", io.EOF
				}
				return "", fmt.Errorf("wait for command: %w", err)
			}
		}
		// The first byte is here (or was already buffered): the rest of the
		// line gets lineTimeout from now.
		var lineDeadline time.Time
		if lineTimeout > 0 {
			lineDeadline = time.Now().Add(lineTimeout)
		}
		if err := r.conn.SetReadDeadline(lineDeadline); err != nil {
			return "", fmt.Errorf("set line deadline: %w", err)
		}
		line, err := r.readOne()
		if err != nil {
			return "", err
		}
		if line != "" {
			return line, nil
		}
	}
}

// reset empties the buffer and gives a borrowed big buffer back.
func (r *LineReader) reset() {
	r.start, r.end = 0, 0
	if r.big != nil {
		bigBuffers.Put(r.big)
		r.big = nil
		r.buf = r.small[:]
	}
}

// readOne reads one line whose first byte is buffered.
func (r *LineReader) readOne() (string, error) {
	for {
		if i := bytes.IndexByte(r.buf[r.start:r.end], '\n'); i >= 0 {
			b := r.buf[r.start : r.start+i]
			r.start += i + 1
			return finishLine(b)
		}
		if r.end-r.start >= bigReadBytes {
			// No room left for a newline within the limit.
			r.start, r.end = 0, 0
			return "", r.skipLine()
		}
		r.makeRoom()
		n, err := r.conn.Read(r.buf[r.end:])
		r.end += n
		switch {
		case n > 0 || err == nil:
			continue
		case errors.Is(err, io.EOF):
			// A client that half-closes after its last command without a
			// newline (printf 'PING' | nc) still gets an answer.
			b := r.buf[r.start:r.end]
			r.start = r.end
			if len(b) == 0 {
				return "", io.EOF
			}
			return finishLine(b)
		default:
			r.broken = fmt.Errorf("read command: %w", err)
			return "", r.broken
		}
	}
}

// finishLine drops one trailing "\r" and applies the length limit.
func finishLine(b []byte) (string, error) {
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	if len(b) > MaxLineBytes {
		return "", ErrLineTooLong
	}
	return string(b), nil
}

// makeRoom makes space after r.end: it moves the buffered bytes to the
// front, and borrows a big buffer when the small one is full.
func (r *LineReader) makeRoom() {
	if r.end < len(r.buf) {
		return
	}
	n := r.end - r.start
	if n == len(r.buf) && r.big == nil {
		r.big = bigBuffers.Get().(*[]byte)
		copy(*r.big, r.buf[r.start:r.end])
		r.buf = *r.big
	} else {
		copy(r.buf, r.buf[r.start:r.end])
	}
	r.start, r.end = 0, n
}

// skipLine discards input up to and including the next newline, reusing
// the buffer, so an over-long line costs no memory beyond it. The buffer is
// empty on entry.
func (r *LineReader) skipLine() error {
	for {
		n, err := r.conn.Read(r.buf)
		if i := bytes.IndexByte(r.buf[:n], '\n'); i >= 0 {
			r.start, r.end = i+1, n
			return ErrLineTooLong
		}
		switch {
		case n > 0 || err == nil:
			continue
		case errors.Is(err, io.EOF):
			// The over-long line was the last input; report it, then EOF.
			return ErrLineTooLong
		default:
			r.broken = fmt.Errorf("skip over-long line: %w", err)
			return r.broken
		}
	}
}

// SplitFields splits a command line on "|", with strings.Split semantics:
// "" gives one empty field and adjacent separators give empty fields.
func SplitFields(line string) []string {
	return strings.Split(line, "|")
}

// isTimeout reports whether err is a read or write deadline passing.
func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }
