package client

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestMaintEnterWaitsForMaintOK(t *testing.T) {
	srv := newFakeServer(t)
	acked := make(chan *fakeConn, 1)
	srv.handle(func(fc *fakeConn, line string, f []string) bool {
		if f[0] == "MAINT_ENTER" {
			fc.send("ACK")
			select {
			case acked <- fc:
			default: // a second MAINT_ENTER must not block the server
			}
			return true
		}
		return false
	})
	c := newTestClient(t, testConfig(srv.addr))
	notices := make(chan MaintNotice, 4) // room for more than expected: a full channel would block the event goroutine
	c.OnMaintenance(func(n MaintNotice) { notices <- n })

	ctx := ctxT(t)
	res := make(chan error, 1)
	go func() { res <- c.MaintEnter(ctx, TargetAll, "http://maint:80") }()
	fc := recv(t, acked, "MAINT_ENTER at the server")
	// A Ping answered after the ACK proves the ACK was read; MaintEnter
	// must still be waiting.
	if err := c.Ping(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-res:
		t.Fatalf("MaintEnter returned %v on ACK, before MAINT_OK", err)
	default:
	}
	fc.send("MAINT_OK|ALL")
	if err := recv(t, res, "MaintEnter"); err != nil {
		t.Fatalf("MaintEnter: %v", err)
	}
	if n := recv(t, notices, "OnMaintenance"); n.Target != TargetAll || n.Err != nil {
		t.Fatalf("notice = %+v", n)
	}
	want := "MAINT_ENTER|" + c.SessionID() + "|ALL|http://maint:80"
	if got := srv.receivedWith("MAINT_ENTER"); len(got) != 1 || got[0] != want {
		t.Fatalf("sent %q, want %q", got, want)
	}
}

// TestMaintOKRightBehindACK: the MAINT_OK arrives in the same packet as
// the ACK, before the caller's goroutine runs; it must not be lost.
func TestMaintOKRightBehindACK(t *testing.T) {
	srv := newFakeServer(t)
	srv.handle(func(fc *fakeConn, line string, f []string) bool {
		switch f[0] {
		case "MAINT_ENTER":
			fc.send("ACK", "MAINT_OK|"+f[2])
			return true
		case "MAINT_EXIT":
			fc.send("ACK", "MAINT_OK|"+f[2])
			return true
		}
		return false
	})
	c := newTestClient(t, testConfig(srv.addr))
	for i := range 20 {
		target := fmt.Sprintf("r%d", i)
		if err := c.MaintEnter(ctxT(t), target, ""); err != nil {
			t.Fatalf("MaintEnter %s: %v", target, err)
		}
		if err := c.MaintExit(ctxT(t), target); err != nil {
			t.Fatalf("MaintExit %s: %v", target, err)
		}
	}
}

// TestMaintTimeoutWhilePipelined: the asynchronous timeout ERROR arrives
// while a Ping waits for its response; the Ping must get PONG and the
// MaintEnter the timeout.
func TestMaintTimeoutWhilePipelined(t *testing.T) {
	srv := newFakeServer(t)
	srv.handle(func(fc *fakeConn, line string, f []string) bool {
		switch f[0] {
		case "MAINT_ENTER":
			fc.send("ACK")
			return true
		case "PING":
			fc.send("ERROR|"+maintTimeoutMsg, "PONG")
			return true
		}
		return false
	})
	c := newTestClient(t, testConfig(srv.addr))
	ctx := ctxT(t)
	res := make(chan error, 1)
	go func() { res <- c.MaintEnter(ctx, "/api", "http://down:1") }()
	srv.waitLine(t, "MAINT_ENTER|svc-1|/api|http://down:1")
	waitFor(t, "maintenance wait registered", func() bool { return maintWaits(c) == 1 })
	if err := c.Ping(ctxT(t)); err != nil {
		t.Fatalf("Ping got the async error: %v", err)
	}
	err := recv(t, res, "MaintEnter")
	if !errors.Is(err, ErrMaintenanceTimeout) {
		t.Fatalf("MaintEnter = %v, want ErrMaintenanceTimeout", err)
	}
	var se *ServerError
	if !errors.As(err, &se) || se.Msg != maintTimeoutMsg {
		t.Fatalf("MaintEnter error %v is not the server's", err)
	}
}

// TestMaintTimeoutCompletesOldestWait: the timeout line names no target;
// the node times waits out in the order it acknowledged them, so the
// oldest wait is the one that timed out.
func TestMaintTimeoutCompletesOldestWait(t *testing.T) {
	srv := newFakeServer(t)
	srv.handle(script(map[string]string{"MAINT_ENTER": "ACK", "MAINT_EXIT": "ACK"}))
	c := newTestClient(t, testConfig(srv.addr))
	ctx := ctxT(t)
	exitRes, enterRes := make(chan error, 1), make(chan error, 1)
	go func() { exitRes <- c.MaintExit(ctx, "r1") }()
	waitFor(t, "exit wait", func() bool { return maintWaits(c) == 1 })
	go func() { enterRes <- c.MaintEnter(ctx, "r2", "") }()
	waitFor(t, "enter wait", func() bool { return maintWaits(c) == 2 })
	fc := srv.connections()[0]
	fc.send("ERROR|" + maintTimeoutMsg)
	if err := recv(t, exitRes, "MaintExit r1"); !errors.Is(err, ErrMaintenanceTimeout) {
		t.Fatalf("oldest wait (MaintExit r1) = %v, want timeout", err)
	}
	fc.send("MAINT_OK|r2")
	if err := recv(t, enterRes, "MaintEnter r2"); err != nil {
		t.Fatalf("MaintEnter r2 = %v", err)
	}
}

func TestMaintWaitEndsWithContext(t *testing.T) {
	srv := newFakeServer(t)
	srv.handle(script(map[string]string{"MAINT_EXIT": "ACK"}))
	c := newTestClient(t, testConfig(srv.addr))
	// The context ends once the ACK is in, while MaintExit waits for
	// MAINT_OK; a short timeout instead could end it before the command
	// was even written on a loaded machine.
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	first := make(chan error, 1)
	go func() { first <- c.MaintExit(ctx, "r1") }()
	waitFor(t, "first wait registered", func() bool { return maintWaits(c) == 1 })
	cancel()
	if err := recv(t, first, "first MaintExit"); !errors.Is(err, context.Canceled) {
		t.Fatalf("MaintExit = %v, want canceled", err)
	}
	// A second MaintExit for the same target is acknowledged; the first
	// one's late MAINT_OK must be absorbed by the abandoned wait, not
	// complete the second.
	ctx2 := ctxT(t)
	res := make(chan error, 1)
	go func() { res <- c.MaintExit(ctx2, "r1") }()
	waitFor(t, "second wait registered", func() bool { return maintWaits(c) == 2 })
	fc := srv.connections()[0]
	fc.send("MAINT_OK|r1")
	if err := c.Ping(ctxT(t)); err != nil { // orders us after the MAINT_OK
		t.Fatal(err)
	}
	select {
	case err := <-res:
		t.Fatalf("second MaintExit completed by the first one's MAINT_OK (err %v)", err)
	default:
	}
	fc.send("MAINT_OK|r1")
	if err := recv(t, res, "second MaintExit"); err != nil {
		t.Fatalf("second MaintExit: %v", err)
	}
}

// twoServers starts A and B and a client registered on A, which knows both.
func twoServers(t *testing.T) (a, b *fakeServer, c *Client) {
	t.Helper()
	a, b = newFakeServer(t), newFakeServer(t)
	c = newTestClient(t, testConfig(a.addr, b.addr))
	if c.ConnectedTo() != a.addr {
		t.Fatalf("connected to %s, want A %s", c.ConnectedTo(), a.addr)
	}
	return a, b, c
}

func TestFailoverReconnect(t *testing.T) {
	a, b, c := twoServers(t)
	a.handle(func(fc *fakeConn, line string, f []string) bool {
		if f[0] == "ROUTE_ADD" {
			fc.hangUp() // the node dies with the command in flight
			return true
		}
		return false
	})
	_, err := c.RouteAdd(ctxT(t), RouteSpec{Domains: []string{"a.com"}, Path: "/", BackendURL: "http://b"})
	if !errors.Is(err, ErrConnectionLost) {
		t.Fatalf("in-flight RouteAdd = %v, want ErrConnectionLost", err)
	}
	b.waitLine(t, "RECONNECT|svc-1")
	if err := c.Ping(ctxT(t)); err != nil {
		t.Fatalf("Ping after failover: %v", err)
	}
	if got := b.received(); len(got) != 2 || got[1] != "PING|svc-1" {
		t.Fatalf("B received %q, want RECONNECT then PING with the same session", got)
	}
	if c.SessionID() != "svc-1" || c.ConnectedTo() != b.addr {
		t.Fatalf("session %s on %s, want svc-1 on B", c.SessionID(), c.ConnectedTo())
	}
	if n := len(b.receivedWith("REGISTER")); n != 0 {
		t.Fatalf("B got %d REGISTER, want none", n)
	}
}

func TestFailoverReregister(t *testing.T) {
	a, b, c := twoServers(t)
	a.handle(script(map[string]string{"MAINT_ENTER": "ACK"}))
	b.handle(func(fc *fakeConn, line string, f []string) bool {
		switch f[0] {
		case "RECONNECT":
			fc.send("REREGISTER")
			return true
		case "REGISTER":
			fc.send("ACK|svc-new")
			return true
		}
		return false
	})
	type rereg struct{ old, new string }
	hooked := make(chan rereg, 1)
	c.OnReregister(func(ctx context.Context, oldID, newID string) {
		// The hook may use the client at once, as an app re-adding routes would.
		if err := c.Ping(ctx); err != nil {
			t.Errorf("Ping in hook: %v", err)
		}
		hooked <- rereg{oldID, newID}
	})
	ctx := ctxT(t)
	maint := make(chan error, 1)
	go func() { maint <- c.MaintEnter(ctx, "ALL", "") }()
	waitFor(t, "maintenance wait registered", func() bool { return maintWaits(c) == 1 })
	a.connections()[0].hangUp()

	if got := recv(t, hooked, "OnReregister"); got != (rereg{"svc-1", "svc-new"}) {
		t.Fatalf("OnReregister(%q, %q), want svc-1 -> svc-new", got.old, got.new)
	}
	if err := recv(t, maint, "MaintEnter"); !errors.Is(err, ErrSessionLost) {
		t.Fatalf("MaintEnter across re-registration = %v, want ErrSessionLost", err)
	}
	if c.SessionID() != "svc-new" {
		t.Fatalf("SessionID = %q, want svc-new", c.SessionID())
	}
	want := []string{"RECONNECT|svc-1", "REGISTER|svc|i1|0", "PING|svc-new"}
	if got := b.received(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("B received %q, want %q", got, want)
	}
}

func TestShutdownFailsOverAndAnswersInFlight(t *testing.T) {
	a, b, c := twoServers(t)
	a.handle(func(fc *fakeConn, line string, f []string) bool {
		if f[0] == "ROUTE_ADD" {
			// The node announces its stop, then still answers the command
			// that was already written to it.
			fc.send("SHUTDOWN", "ROUTE_OK|r5")
			return true
		}
		return false
	})
	shut := make(chan string, 1)
	c.OnShutdown(func(addr string) { shut <- addr })
	id, err := c.RouteAdd(ctxT(t), RouteSpec{Domains: []string{"a.com"}, Path: "/", BackendURL: "http://b"})
	if err != nil || id != "r5" {
		t.Fatalf("RouteAdd across SHUTDOWN = %q, %v; want r5", id, err)
	}
	if addr := recv(t, shut, "OnShutdown"); addr != a.addr {
		t.Fatalf("OnShutdown(%s), want A %s", addr, a.addr)
	}
	b.waitLine(t, "RECONNECT|svc-1")
	// The client closes A's connection itself once nothing is pending.
	recv(t, a.connections()[0].closed, "the client to close the stopping node's connection")
	if err := c.Ping(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if n := len(b.receivedWith("PING|svc-1")); n != 1 {
		t.Fatalf("PING went to B %d times, want 1", n)
	}
	if n := len(a.receivedWith("PING")); n != 0 {
		t.Fatalf("PING went to the stopping node A")
	}
}

func TestDiscoveryLearnsFailoverTargets(t *testing.T) {
	a, b := newFakeServer(t), newFakeServer(t)
	_, bPort, _ := strings.Cut(b.addr, ":")
	a.mu.Lock()
	a.cluster = `{"leader":"n1","term":3,"nodes":[{"id":"n1","control_addr":"` + a.addr + `","alive":true},{"id":"n2","control_addr":"0.0.0.0:` + bPort + `","alive":true}]}`
	a.mu.Unlock()
	cfg := testConfig(a.addr)
	cfg.DisableDiscovery = false
	c := newTestClient(t, cfg)
	waitFor(t, "B learned", func() bool { return len(c.Addrs()) == 2 })
	if got := c.Addrs(); got[1] != b.addr {
		t.Fatalf("learned %q, want %s", got, b.addr)
	}
	if got := a.receivedWith("CLUSTER_STATUS"); len(got) != 1 || got[0] != "CLUSTER_STATUS|svc-1" {
		t.Fatalf("discovery sent %q", got)
	}
	a.connections()[0].hangUp()
	b.waitLine(t, "RECONNECT|svc-1")
	if err := c.Ping(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

func TestUnavailableWhenNoNodeAnswers(t *testing.T) {
	srv := newFakeServer(t)
	c := newTestClient(t, testConfig(srv.addr))
	srv.refuse()
	// Usually the Ping is written before the loss is noticed and ends at
	// once; the timeout only covers the case where it has to wait.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := c.Ping(ctx)
	if !errors.Is(err, ErrUnavailable) && !errors.Is(err, ErrConnectionLost) {
		t.Fatalf("Ping with every node down = %v, want ErrUnavailable", err)
	}
	// Once the connection loss was noticed, commands are not sent at all.
	waitFor(t, "disconnected", func() bool { return c.ConnectedTo() == "" })
	ctx2, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	if err := c.Ping(ctx2); !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Ping while down = %v, want ErrUnavailable wrapping the deadline", err)
	}

	// New fails within its context when no node answers.
	ctx3, cancel3 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel3()
	if _, err := New(ctx3, testConfig(srv.addr)); err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("New with no node answering = %v, want deadline exceeded", err)
	}
}

func TestShutdownEndsSession(t *testing.T) {
	srv := newFakeServer(t)
	srv.handle(func(fc *fakeConn, line string, f []string) bool {
		if f[0] == "CLIENT_SHUTDOWN" {
			fc.send("SHUTDOWN_OK")
			fc.hangUp()
			return true
		}
		return false
	})
	cfg := testConfig(srv.addr)
	c, err := New(ctxT(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Shutdown(ctxT(t)); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := c.Ping(ctxT(t)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Ping after Shutdown = %v, want ErrClosed", err)
	}
	if n := len(srv.receivedWith("RECONNECT")); n != 0 {
		t.Fatalf("client reconnected after Shutdown")
	}
	if got := srv.receivedWith("CLIENT_SHUTDOWN"); len(got) != 1 || got[0] != "CLIENT_SHUTDOWN|svc-1" {
		t.Fatalf("sent %q", got)
	}
}

// TestLostMaintOKEndsTheWait: the node acknowledged MAINT_ENTER, then the
// connection broke and the MAINT_OK went nowhere. A caller whose context
// never ends must still get an answer: an unknown outcome after the limit.
func TestLostMaintOKEndsTheWait(t *testing.T) {
	srv := newFakeServer(t)
	srv.handle(func(fc *fakeConn, line string, f []string) bool {
		if f[0] == "MAINT_ENTER" {
			fc.send("ACK")
			fc.hangUp()
			return true
		}
		return false
	})
	c := newTestClient(t, testConfig(srv.addr))
	c.maintLimit = 200 * time.Millisecond
	res := make(chan error, 1)
	go func() { res <- c.MaintEnter(context.Background(), TargetAll, "") }()
	err := recv(t, res, "MaintEnter with its MAINT_OK lost")
	if !errors.Is(err, ErrMaintenanceTimeout) || !IsUnknownOutcome(err) {
		t.Fatalf("MaintEnter = %v, want maintenance timeout with unknown outcome", err)
	}
	srv.waitLine(t, "RECONNECT|svc-1")
}

// TestAckAfterSessionReplacedFailsAtOnce: node A announces SHUTDOWN with a
// MAINT_ENTER in flight; failover finds the session expired and registers a
// new one on B; only then does A acknowledge. That MAINT_OK belongs to the
// old session and will not come, so the call ends with ErrSessionLost
// instead of waiting for it.
func TestAckAfterSessionReplacedFailsAtOnce(t *testing.T) {
	a, b, c := twoServers(t)
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	a.handle(func(fc *fakeConn, line string, f []string) bool {
		if f[0] == "MAINT_ENTER" {
			fc.send("SHUTDOWN")
			hold(release)
			fc.send("ACK")
			return true
		}
		return false
	})
	b.handle(script(map[string]string{"RECONNECT": "REREGISTER", "REGISTER": "ACK|svc-new"}))
	ctx := ctxT(t)
	res := make(chan error, 1)
	go func() { res <- c.MaintEnter(ctx, TargetAll, "") }()
	waitFor(t, "new session on B", func() bool { return c.SessionID() == "svc-new" })
	unblock()
	if err := recv(t, res, "MaintEnter acknowledged for the old session"); !errors.Is(err, ErrSessionLost) {
		t.Fatalf("MaintEnter = %v, want ErrSessionLost", err)
	}
	if n := maintWaits(c); n != 0 {
		t.Fatalf("%d maintenance waits kept, want 0", n)
	}
}
