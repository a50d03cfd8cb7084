package protocol

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
)

// tcpPair returns the two ends of a real loopback TCP connection: the
// server end (read by the LineReader) and the client end.
func tcpPair(t *testing.T) (server, client *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		c.Close()
	})
	return s.(*net.TCPConn), c.(*net.TCPConn)
}

// writeAsync writes chunks from a goroutine (a large write would block
// until the reader drains it) and returns a wait function that the test
// must call, so no goroutine outlives the test.
func writeAsync(t *testing.T, c net.Conn, chunks ...[]byte) (wait func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		for _, b := range chunks {
			if _, err := c.Write(b); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	return func() {
		t.Helper()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("write: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("writer did not finish")
		}
	}
}

func mustWrite(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if _, err := c.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}

// expectLines reads len(want) results; a want of "ERR:too-long" expects
// ErrLineTooLong.
func expectLines(t *testing.T, r *LineReader, want ...string) {
	t.Helper()
	for i, w := range want {
		got, err := r.ReadLine(5*time.Second, 5*time.Second)
		if w == "ERR:too-long" {
			if !errors.Is(err, ErrLineTooLong) {
				t.Fatalf("read %d: got %.40q, %v; want ErrLineTooLong", i, got, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("read %d: %v, want %.40q", i, err, w)
		}
		if got != w {
			t.Fatalf("read %d: got %.60q (len %d), want %.60q (len %d)", i, got, len(got), w, len(w))
		}
	}
}

func TestReadLineCRLFAndPipelining(t *testing.T) {
	s, c := tcpPair(t)
	r := NewLineReader(s)
	mustWrite(t, c, "PING\r\nREGISTER|svc||0\n\n\r\n\nROUTE_LIST|s|compressed\r\nA\r\r\nB\n")
	expectLines(t, r, "PING", "REGISTER|svc||0", "ROUTE_LIST|s|compressed", "A\r", "B")
}

func TestReadLineSplitOverManyWrites(t *testing.T) {
	s, c := tcpPair(t)
	r := NewLineReader(s)
	line := "ROUTE_ADD|my-svc-abc|example.com,www.example.com|/api|http://127.0.0.1:9000|10"
	var chunks [][]byte
	for i := 0; i < len(line); i++ {
		chunks = append(chunks, []byte{line[i]})
	}
	chunks = append(chunks, []byte("\r"), []byte("\n"), []byte("PI"), []byte("NG\n"))
	wait := writeAsync(t, c, chunks...)
	expectLines(t, r, line, "PING")
	wait()
}

func TestReadLineBinaryGarbage(t *testing.T) {
	s, c := tcpPair(t)
	r := NewLineReader(s)
	garbage := "\x00\xff\xfe|\x1b[2J\r\x00\x80"
	mustWrite(t, c, garbage+"\n\xc3\x28\r\nPING\n")
	expectLines(t, r, garbage, "\xc3\x28", "PING")
}

func TestReadLineLimit(t *testing.T) {
	s, c := tcpPair(t)
	r := NewLineReader(s)
	exact := strings.Repeat("a", MaxLineBytes)
	over := strings.Repeat("b", MaxLineBytes+1)
	wait := writeAsync(t, c,
		[]byte(exact+"\n"),
		[]byte(over+"\n"),
		[]byte(exact+"\r\n"),
		[]byte(over+"\r\n"),
		[]byte(strings.Repeat("c", MaxLineBytes+2)+"\n"),
		[]byte("PING\n"))
	expectLines(t, r, exact, "ERR:too-long", exact, "ERR:too-long", "ERR:too-long", "PING")
	wait()
	if ErrLineTooLong.Error() != "line too long (max 16384 bytes)" {
		t.Errorf("ErrLineTooLong text %q", ErrLineTooLong)
	}
}

func TestReadLineHugeLineRecovers(t *testing.T) {
	s, c := tcpPair(t)
	r := NewLineReader(s)
	huge := bytes.Repeat([]byte("X"), 1<<20)
	// Send the huge line in pieces of varying size, with its newline glued
	// to the start of the next command, as a real client stream would be.
	var chunks [][]byte
	for off, n := 0, 1; off < len(huge); off, n = off+n, n*2+7 {
		end := min(off+n, len(huge))
		chunks = append(chunks, huge[off:end])
	}
	chunks = append(chunks, []byte("\nPING|s\n"))

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	wait := writeAsync(t, c, chunks...)
	expectLines(t, r, "ERR:too-long", "PING|s")
	runtime.ReadMemStats(&after)
	wait()
	// Buffering the line would allocate at least 1 MiB; the reader must
	// stay near its fixed buffer.
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 512<<10 {
		t.Errorf("reading a 1 MiB line allocated %d bytes", grew)
	}
}

func TestReadLineIdleTimeout(t *testing.T) {
	s, c := tcpPair(t)
	r := NewLineReader(s)
	_, err := r.ReadLine(50*time.Millisecond, time.Minute)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("idle: %v, want deadline exceeded", err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("idle error %v is not a net timeout", err)
	}
	// An idle timeout consumed nothing: the connection is still usable.
	mustWrite(t, c, "PING\n")
	expectLines(t, r, "PING")
}

func TestReadLineBlankLinesDoNotResetIdle(t *testing.T) {
	s, c := tcpPair(t)
	r := NewLineReader(s)
	mustWrite(t, c, "\n\r\n\n")
	got, err := r.ReadLine(100*time.Millisecond, time.Minute)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("blank lines: got %q, %v; want deadline exceeded", got, err)
	}
}

func TestReadLineSlowLineTimeout(t *testing.T) {
	s, c := tcpPair(t)
	r := NewLineReader(s)
	mustWrite(t, c, "ROUTE_ADD|s|exa")
	start := time.Now()
	_, err := r.ReadLine(time.Minute, 200*time.Millisecond)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("slow line: %v, want deadline exceeded", err)
	}
	// The line deadline, not the one-minute idle wait, ended the read.
	if time.Since(start) > 30*time.Second {
		t.Errorf("slow line took %v", time.Since(start))
	}
	// The partial line is gone, so the reader refuses to frame the rest.
	mustWrite(t, c, "mple.com|/|http://h|0\n")
	if _, err := r.ReadLine(time.Second, time.Second); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("after a mid-line timeout: %v, want the same error again", err)
	}
}

func TestReadLineSlowOverLongLineTimesOut(t *testing.T) {
	s, c := tcpPair(t)
	r := NewLineReader(s)
	wait := writeAsync(t, c, bytes.Repeat([]byte("Z"), 3*MaxLineBytes))
	_, err := r.ReadLine(time.Minute, 200*time.Millisecond)
	wait()
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("over-long line without newline: %v, want deadline exceeded", err)
	}
}

func TestReadLineEOF(t *testing.T) {
	s, c := tcpPair(t)
	r := NewLineReader(s)
	mustWrite(t, c, "PING\nCLIENT_SHUTDOWN|s")
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	expectLines(t, r, "PING", "CLIENT_SHUTDOWN|s")
	if _, err := r.ReadLine(time.Second, time.Second); !errors.Is(err, io.EOF) {
		t.Fatalf("after last line: %v, want EOF", err)
	}
}

func TestReadLineOverLongAtEOF(t *testing.T) {
	s, c := tcpPair(t)
	r := NewLineReader(s)
	wait := writeAsync(t, c, bytes.Repeat([]byte("Y"), 2*MaxLineBytes))
	wait()
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	expectLines(t, r, "ERR:too-long")
	if _, err := r.ReadLine(time.Second, time.Second); !errors.Is(err, io.EOF) {
		t.Fatalf("after over-long last line: %v, want EOF", err)
	}
}

func TestSplitFields(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", []string{""}},
		{"PING", []string{"PING"}},
		{"REGISTER|svc||0", []string{"REGISTER", "svc", "", "0"}},
		{"A|", []string{"A", ""}},
		{"|", []string{"", ""}},
		{"ROUTE_ADD_BULK|s|[{\"a\":1}]", []string{"ROUTE_ADD_BULK", "s", "[{\"a\":1}]"}},
	}
	for _, tc := range tests {
		if got := SplitFields(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("SplitFields(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// memConn is an in-memory net.Conn that hands out its data in chunks of a
// fixed size, then io.EOF. Deadlines are accepted and ignored.
type memConn struct {
	data  []byte
	chunk int
}

func (m *memConn) Read(p []byte) (int, error) {
	if len(m.data) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), m.chunk, len(m.data))
	copy(p, m.data[:n])
	m.data = m.data[n:]
	return n, nil
}

func (m *memConn) Write(p []byte) (int, error)      { return len(p), nil }
func (m *memConn) Close() error                     { return nil }
func (m *memConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (m *memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (m *memConn) SetDeadline(time.Time) error      { return nil }
func (m *memConn) SetReadDeadline(time.Time) error  { return nil }
func (m *memConn) SetWriteDeadline(time.Time) error { return nil }

const tooLong = "\x00too-long"

// modelLines is the framing rule written plainly: split on "\n", drop one
// trailing "\r", skip empty lines, and mark lines over the limit.
func modelLines(data []byte) []string {
	var out []string
	for _, seg := range bytes.Split(data, []byte("\n")) {
		seg = bytes.TrimSuffix(seg, []byte("\r"))
		switch {
		case len(seg) > MaxLineBytes:
			out = append(out, tooLong)
		case len(seg) > 0:
			out = append(out, string(seg))
		}
	}
	return out
}

func FuzzLineReader(f *testing.F) {
	f.Add([]byte("PING\r\nA|b\n\nC"), uint16(1))
	f.Add([]byte("\x00\xff\r\r\n\n"), uint16(3))
	f.Add(append(bytes.Repeat([]byte("x"), MaxLineBytes+1), "\nOK\n"...), uint16(4096))
	f.Add(append(bytes.Repeat([]byte("y"), MaxLineBytes), "\r\n"...), uint16(65535))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint16) {
		r := NewLineReader(&memConn{data: data, chunk: int(chunk)%(2*MaxLineBytes) + 1})
		var got []string
		// Every call consumes at least one byte or ends the input, so the
		// loop is bounded by the input length.
		for range len(data) + 2 {
			line, err := r.ReadLine(0, 0)
			if errors.Is(err, io.EOF) {
				break
			}
			if errors.Is(err, ErrLineTooLong) {
				got = append(got, tooLong)
				continue
			}
			if err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if line == "" || len(line) > MaxLineBytes || strings.Contains(line, "\n") {
				t.Fatalf("bad line of %d bytes: %.60q", len(line), line)
			}
			got = append(got, line)
		}
		if want := modelLines(data); !reflect.DeepEqual(got, want) {
			t.Fatalf("framing differs from the model:\n got %d lines %.200q\nwant %d lines %.200q", len(got), got, len(want), want)
		}
	})
}
