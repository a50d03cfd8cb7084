package chaos

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// lineConn is a bare control-protocol connection: one command, one answer,
// asynchronous lines skipped. The harness uses it instead of the Go client
// because it must see every failure as it happens: the client's automatic
// failover and retries would hide exactly the outcomes the checker needs to
// classify (acknowledged, failed, unknown).
type lineConn struct {
	addr string
	c    net.Conn
	r    *bufio.Reader
	// shutdown is set when the node announced a graceful stop.
	shutdown bool
}

// errConn marks a failure of the connection itself (dial, write, read,
// timeout): for a write, its outcome is unknown.
var errConn = errors.New("connection failed")

func dialLine(ctx context.Context, addr string, timeout time.Duration) (*lineConn, error) {
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%w: dial %s: %v", errConn, addr, err)
	}
	return &lineConn{addr: addr, c: c, r: bufio.NewReaderSize(c, 64<<10)}, nil
}

func (l *lineConn) close() {
	if l != nil && l.c != nil {
		l.c.Close()
	}
}

// do sends one command and returns its answer line (without the newline).
func (l *lineConn) do(line string, timeout time.Duration) (string, error) {
	answers, err := l.doMany([]string{line}, timeout)
	if err != nil {
		return "", err
	}
	return answers[0], nil
}

// doMany pipelines lines and returns their answers in order.
func (l *lineConn) doMany(lines []string, timeout time.Duration) ([]string, error) {
	_ = l.c.SetDeadline(time.Now().Add(timeout))
	defer l.c.SetDeadline(time.Time{})
	var b strings.Builder
	for _, line := range lines {
		b.WriteString(line)
		b.WriteByte('\n')
	}
	if _, err := l.c.Write([]byte(b.String())); err != nil {
		return nil, fmt.Errorf("%w: write to %s: %v", errConn, l.addr, err)
	}
	out := make([]string, 0, len(lines))
	for len(out) < len(lines) {
		s, err := l.r.ReadString('\n')
		if err != nil {
			return out, fmt.Errorf("%w: read from %s: %v", errConn, l.addr, err)
		}
		s = strings.TrimRight(s, "\r\n")
		if l.async(s) {
			continue
		}
		out = append(out, s)
	}
	return out, nil
}

// async reports (and notes) lines that are not answers.
func (l *lineConn) async(s string) bool {
	switch {
	case s == "SHUTDOWN":
		l.shutdown = true
		return true
	case strings.HasPrefix(s, "EVENT|"), strings.HasPrefix(s, "MAINT_OK|"):
		return true
	}
	return false
}

// waitClosed blocks until the connection breaks or ctx ends, skipping
// asynchronous lines; it is how an idle holder notices its node died.
func (l *lineConn) waitClosed(ctx context.Context) {
	stop := context.AfterFunc(ctx, func() { l.c.SetReadDeadline(time.Now()) })
	defer stop()
	for {
		if _, err := l.r.ReadString('\n'); err != nil {
			return
		}
	}
}
