package protocol

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/raftgate/raftgate/cluster"
	"github.com/raftgate/raftgate/fsm"
)

// logCluster is a fake cluster whose Apply really appends to an in-memory
// log and applies it to the FSM, so observers (attachments, MAINT_OK) run
// as on a real node.
func logCluster(f *fsm.FSM) *fakeCluster {
	var mu sync.Mutex
	var index uint64
	return &fakeCluster{apply: func(_ context.Context, cmd *fsm.Command) (fsm.Result, error) {
		mu.Lock()
		defer mu.Unlock()
		cmd.Node, cmd.At = "n1", time.Now().UnixNano()
		data, err := cmd.Encode()
		if err != nil {
			return fsm.Result{}, err
		}
		index++
		res, _ := f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: data}).(fsm.Result)
		return res, nil
	}}
}

// serveTCP starts s on a loopback listener and returns its address.
func serveTCP(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// client is a test's end of a control connection.
type client struct {
	t  *testing.T
	c  net.Conn
	rd *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{t: t, c: c, rd: bufio.NewReaderSize(c, 1<<20)}
}

func (c *client) write(s string) {
	c.t.Helper()
	_ = c.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c.c, s); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *client) readLine() (string, error) {
	_ = c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	l, err := c.rd.ReadString('\n')
	return strings.TrimSuffix(l, "\n"), err
}

func (c *client) expect(want string) {
	c.t.Helper()
	got, err := c.readLine()
	if err != nil || got != want {
		c.t.Fatalf("got %q, %v; want %q", got, err, want)
	}
}

func (c *client) send(line string) string {
	c.t.Helper()
	c.write(line + "\n")
	got, err := c.readLine()
	if err != nil {
		c.t.Fatalf("answer to %.60q: %v", line, err)
	}
	return got
}

// expectClosed waits for the server to close the connection.
func (c *client) expectClosed(within time.Duration) {
	c.t.Helper()
	_ = c.c.SetReadDeadline(time.Now().Add(within))
	l, err := c.rd.ReadString('\n')
	if !errors.Is(err, io.EOF) {
		c.t.Fatalf("connection still open after %v: read %q, %v", within, l, err)
	}
}

func TestIdleTimeoutClosesUnattachedConnection(t *testing.T) {
	f := fsm.New()
	s, _ := newFakeServer(t, Config{FSM: f, Cluster: logCluster(f), IdleTimeout: 300 * time.Millisecond})
	addr := serveTCP(t, s)

	idle := dial(t, addr)
	// Commands and blank lines: the blank lines must not keep it open.
	if got := idle.send("PING"); got != "PONG" {
		t.Fatalf("PING answered %q", got)
	}
	start := time.Now()
	idle.write("\n\r\n")
	idle.expectClosed(5 * time.Second)
	if el := time.Since(start); el < 250*time.Millisecond {
		t.Errorf("closed after %v, before the idle timeout", el)
	}

	// A connection with an attached session stays open past the timeout.
	attached := dial(t, addr)
	if got := attached.send("REGISTER|svc|i1|0"); !strings.HasPrefix(got, "ACK|svc-") {
		t.Fatalf("REGISTER answered %q", got)
	}
	_ = attached.c.SetReadDeadline(time.Now().Add(900 * time.Millisecond))
	if l, err := attached.rd.ReadString('\n'); !isTimeout(err) {
		t.Fatalf("attached connection: read %q, %v; want it to stay open and silent", l, err)
	}
	if got := attached.send("PING"); got != "PONG" {
		t.Fatalf("PING on the attached connection answered %q", got)
	}
}

func TestOverLongLinesKeepConnectionUsable(t *testing.T) {
	s, fc := newFakeServer(t, Config{})
	addr := serveTCP(t, s)
	c := dial(t, addr)

	c.write(strings.Repeat("A", MaxLineBytes+1) + "\nPING\n")
	c.expect("ERROR|line too long (max 16384 bytes)")
	c.expect("PONG")

	// A 1 MiB line, written while the server answers: one error, then the
	// next command.
	done := make(chan error, 1)
	go func() {
		_, err := c.c.Write([]byte("ROUTE_ADD|" + sid + "|" + strings.Repeat("x", 1<<20) + "\nPING\n"))
		done <- err
	}()
	c.expect("ERROR|line too long (max 16384 bytes)")
	c.expect("PONG")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// A line of exactly the limit is read whole (and judged as a command).
	exact := "ROUTE_REMOVE|" + sid + "|" + strings.Repeat("r", MaxLineBytes-len("ROUTE_REMOVE|"+sid+"|"))
	if got := c.send(exact + "\r"); got != "ERROR|route not found" {
		t.Fatalf("line at the limit answered %q", got)
	}
	if cmds := fc.commands(); len(cmds) != 0 {
		t.Errorf("over-long lines proposed %d commands", len(cmds))
	}
}

func TestPipelinedResponsesInOrder(t *testing.T) {
	s, _ := newFakeServer(t, Config{})
	addr := serveTCP(t, s)
	c := dial(t, addr)
	var b strings.Builder
	var want []string
	for i := 0; i < 200; i++ {
		switch i % 4 {
		case 0:
			b.WriteString("PING\r\n")
			want = append(want, "PONG")
		case 1:
			fmt.Fprintf(&b, "ROUTE_REMOVE|%s|txn-%d|r%d\n", sid, i, i)
			want = append(want, fmt.Sprintf("ROUTE_OK|txn-%d", i))
		case 2:
			b.WriteString("\n\x00\xff|\n")
			want = append(want, "ERROR|unknown command: ??")
		case 3:
			fmt.Fprintf(&b, "ROUTE_REMOVE|%s\n", sid)
			want = append(want, "ERROR|invalid format: ROUTE_REMOVE needs session_id|route_id")
		}
	}
	c.write(b.String())
	for i, w := range want {
		if got, err := c.readLine(); err != nil || got != w {
			t.Fatalf("response %d: got %q, %v; want %q", i, got, err, w)
		}
	}
}

// attachedPair registers a session on a fresh connection and returns the
// connection and the server side of it.
func attachedPair(t *testing.T, s *Server, addr string) (*client, *conn, string) {
	t.Helper()
	cl := dial(t, addr)
	ack := cl.send("REGISTER|svc|i|0")
	id, ok := strings.CutPrefix(ack, "ACK|")
	if !ok {
		t.Fatalf("REGISTER answered %q", ack)
	}
	c := s.attachedConn(id)
	if c == nil {
		t.Fatal("no attached connection after REGISTER")
	}
	return cl, c, id
}

func TestEventQueueOverflowIsReported(t *testing.T) {
	f := fsm.New()
	s, _ := newFakeServer(t, Config{FSM: f, Cluster: logCluster(f), EventQueue: 8})
	addr := serveTCP(t, s)
	cl, c, _ := attachedPair(t, s, addr)

	// Hold the flusher back as a running command would, queue more than
	// the bound, then let the lines go.
	c.mu.Lock()
	c.busy = true
	c.mu.Unlock()
	for i := 0; i < 20; i++ {
		c.sendAsync(fmt.Sprintf("EVENT|config_applied|{\"n\":%d}", i))
	}
	c.mu.Lock()
	c.busy = false
	c.kickLocked()
	c.mu.Unlock()
	for i := 0; i < 8; i++ {
		cl.expect(fmt.Sprintf("EVENT|config_applied|{\"n\":%d}", i))
	}
	cl.expect(`EVENT|overflow|{"dropped":12}`)
	if got := cl.send("PING"); got != "PONG" {
		t.Fatalf("PING after overflow answered %q", got)
	}
	c.mu.Lock()
	q := c.queue
	c.mu.Unlock()
	if q != nil {
		t.Errorf("the drained queue still holds %d slots", cap(q))
	}
}

func TestSlowSubscriberNeverBlocksSenders(t *testing.T) {
	f := fsm.New()
	s, _ := newFakeServer(t, Config{FSM: f, Cluster: logCluster(f), EventQueue: 64})
	addr := serveTCP(t, s)
	cl, c, _ := attachedPair(t, s, addr)

	// The client reads nothing: the socket buffers fill and the flusher
	// blocks in write; senders must not.
	line := "EVENT|backend_health_changed|" + strings.Repeat("x", 8<<10)
	start := time.Now()
	for i := 0; i < 5000; i++ {
		c.sendAsync(line)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("5000 sends to a client that does not read took %v", el)
	}
	c.mu.Lock()
	queued := len(c.queue)
	c.mu.Unlock()
	if queued > 64 {
		t.Errorf("queue holds %d lines, bound 64", queued)
	}
	// When the client reads again it gets whole lines and the overflow
	// report, with no line torn.
	sawOverflow := false
	for i := 0; i < 5000 && !sawOverflow; i++ {
		l, err := cl.readLine()
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		switch {
		case strings.HasPrefix(l, "EVENT|overflow|{\"dropped\":"):
			sawOverflow = true
		case l != line:
			t.Fatalf("torn or unexpected line of %d bytes: %.60q", len(l), l)
		}
	}
	if !sawOverflow {
		t.Fatal("no EVENT|overflow line")
	}
}

func TestMaintOKFollowsItsACK(t *testing.T) {
	f := fsm.New()
	s, _ := newFakeServer(t, Config{FSM: f, Cluster: logCluster(f)})
	addr := serveTCP(t, s)
	cl, _, id := attachedPair(t, s, addr)
	if got := cl.send("ROUTE_ADD|" + id + "|m.example.com|/|http://127.0.0.1:9|0"); got != "ROUTE_OK|r1" {
		t.Fatalf("ROUTE_ADD answered %q", got)
	}
	if got := cl.send("CONFIG_APPLY|" + id); got != "OK" {
		t.Fatalf("CONFIG_APPLY answered %q", got)
	}
	// With no maintenance backend MAINT_OK is queued at once, while the
	// command still runs: it must still come after the ACK.
	for i := 0; i < 20; i++ {
		cl.write("MAINT_ENTER|" + id + "|ALL|\nMAINT_STATUS|" + id + "\n")
		cl.expect("ACK")
		next, err := cl.readLine()
		if err != nil {
			t.Fatal(err)
		}
		status := next
		if next == "MAINT_OK|ALL" {
			status, err = cl.readLine()
			if err != nil {
				t.Fatal(err)
			}
		} else {
			cl.expect("MAINT_OK|ALL")
		}
		if !strings.HasPrefix(status, "MAINT_STATUS_OK|") {
			t.Fatalf("round %d: MAINT_STATUS answered %q", i, status)
		}
	}
}

func TestShutdownSendsSHUTDOWN(t *testing.T) {
	s, _ := newFakeServer(t, Config{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	var clients []*client
	for i := 0; i < 5; i++ {
		c := dial(t, ln.Addr().String())
		if got := c.send("PING"); got != "PONG" {
			t.Fatalf("PING answered %q", got)
		}
		clients = append(clients, c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("serve: %v", err)
	}
	for _, c := range clients {
		c.expect("SHUTDOWN")
		c.expectClosed(5 * time.Second)
	}
}

func TestHandlerPanicKeepsServerUp(t *testing.T) {
	fc := &fakeCluster{status: func(context.Context) cluster.Status { panic("boom") }}
	s, _ := newFakeServer(t, Config{Cluster: fc})
	addr := serveTCP(t, s)
	c := dial(t, addr)
	if got := c.send("CLUSTER_STATUS"); got != "ERROR|internal error" {
		t.Fatalf("panicking command answered %q", got)
	}
	c.expectClosed(5 * time.Second)
	if got := dial(t, addr).send("PING"); got != "PONG" {
		t.Fatalf("PING after a panic answered %q", got)
	}
}
