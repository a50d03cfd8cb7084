package bench

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"time"
)

// lineConn is a minimal control-protocol connection: one command, one
// response line. The benchmarks use it instead of protocol/client so that
// what they time is the server, not a client's failover machinery.
type lineConn struct {
	c net.Conn
	r *bufio.Reader
	w *bufio.Writer
}

func dialLine(ctx context.Context, addr string) (*lineConn, error) {
	d := net.Dialer{Timeout: 2 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial control %s: %w", addr, err)
	}
	return &lineConn{c: c, r: bufio.NewReaderSize(c, 64<<10), w: bufio.NewWriter(c)}, nil
}

func (l *lineConn) close() { l.c.Close() }

// do sends one command line and returns its response line, skipping
// asynchronous lines (events, MAINT_OK, SHUTDOWN).
func (l *lineConn) do(line string, timeout time.Duration) (string, error) {
	_ = l.c.SetDeadline(time.Now().Add(timeout))
	l.w.WriteString(line)
	l.w.WriteByte('\n')
	if err := l.w.Flush(); err != nil {
		return "", fmt.Errorf("send %s: %w", commandWord(line), err)
	}
	for {
		resp, err := l.r.ReadString('\n')
		if err != nil {
			return "", fmt.Errorf("read answer to %s: %w", commandWord(line), err)
		}
		resp = strings.TrimRight(resp, "\r\n")
		if strings.HasPrefix(resp, "EVENT|") || strings.HasPrefix(resp, "MAINT_OK|") || resp == "SHUTDOWN" {
			continue
		}
		return resp, nil
	}
}

// expect sends line and requires an answer starting with prefix; it
// returns the rest after the prefix.
func (l *lineConn) expect(line, prefix string, timeout time.Duration) (string, error) {
	resp, err := l.do(line, timeout)
	if err != nil {
		return "", err
	}
	rest, ok := strings.CutPrefix(resp, prefix)
	if !ok {
		return "", fmt.Errorf("%s: got %q, want %s", commandWord(line), resp, prefix)
	}
	return rest, nil
}

func commandWord(line string) string {
	w, _, _ := strings.Cut(line, "|")
	return w
}

// register opens a session and returns its ID.
func (l *lineConn) register(service, instance string) (string, error) {
	return l.expect(fmt.Sprintf("REGISTER|%s|%s|0", service, instance), "ACK|", 10*time.Second)
}

// addRoute stages and applies one route with an empty priority.
func (l *lineConn) addRoute(session, domain, path, backend string) (string, error) {
	id, err := l.expect(fmt.Sprintf("ROUTE_ADD|%s|%s|%s|%s|0", session, domain, path, backend), "ROUTE_OK|", 10*time.Second)
	if err != nil {
		return "", err
	}
	if _, err := l.expect("CONFIG_APPLY|"+session, "OK", 10*time.Second); err != nil {
		return "", err
	}
	return id, nil
}
