package protocol

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
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

// LineReader reads the newline-framed command lines of one control
// connection with bounded memory and per-line deadlines. It is not safe for
// concurrent use; one goroutine per connection reads.
type LineReader struct {
	conn net.Conn
	// br holds at most one whole line of the maximal length plus "\r\n", so
	// a line at the limit ending in CRLF is still seen whole; anything
	// longer overflows the buffer and is discarded chunk by chunk.
	br *bufio.Reader
	// broken records a read error in the middle of a line: the partial line
	// was dropped, so later bytes cannot be framed reliably.
	broken error
}

// NewLineReader returns a reader of the lines arriving on conn. The caller
// keeps ownership of conn (closing, writing, keepalive).
func NewLineReader(conn net.Conn) *LineReader {
	return &LineReader{conn: conn, br: bufio.NewReaderSize(conn, MaxLineBytes+2)}
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
		if r.br.Buffered() == 0 {
			if err := r.conn.SetReadDeadline(idleDeadline); err != nil {
				return "", fmt.Errorf("set idle deadline: %w", err)
			}
			if _, err := r.br.Peek(1); err != nil {
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

// readOne reads one line whose first byte is available.
func (r *LineReader) readOne() (string, error) {
	b, err := r.br.ReadSlice('\n')
	switch {
	case err == nil:
		b = b[:len(b)-1]
		if n := len(b); n > 0 && b[n-1] == '\r' {
			b = b[:n-1]
		}
		if len(b) > MaxLineBytes {
			return "", ErrLineTooLong
		}
		return string(b), nil
	case errors.Is(err, bufio.ErrBufferFull):
		return "", r.skipLine()
	case errors.Is(err, io.EOF) && len(b) > 0:
		// A client that half-closes after its last command without a
		// newline (printf 'PING' | nc) still gets an answer.
		if n := len(b); b[n-1] == '\r' {
			b = b[:n-1]
		}
		if len(b) > MaxLineBytes {
			return "", ErrLineTooLong
		}
		return string(b), nil
	case errors.Is(err, io.EOF):
		return "", io.EOF
	default:
		r.broken = fmt.Errorf("read command: %w", err)
		return "", r.broken
	}
}

// skipLine discards input up to and including the next newline, reusing
// the reader's buffer, so an over-long line costs no memory beyond it.
func (r *LineReader) skipLine() error {
	for {
		_, err := r.br.ReadSlice('\n')
		switch {
		case err == nil:
			return ErrLineTooLong
		case errors.Is(err, bufio.ErrBufferFull):
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
