package client

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"
)

// maxResponseLine bounds one response line. The protocol promises at most
// 64 KiB, or 1 MiB for a compressed payload; the margin keeps a slightly
// generous server working while a broken one cannot exhaust our memory.
const maxResponseLine = 1<<20 + 64<<10

// response is what a waiter receives: the line, or the reason none came.
type response struct {
	line string
	err  error
}

// waiter stands for one command written to a connection and not yet
// answered. ch has room for exactly one response, so the reader never
// blocks on a caller that gave up.
type waiter struct {
	ch chan response
	// onResponse, when set, runs on the reader goroutine before the next
	// line is read. MAINT_ENTER/MAINT_EXIT use it to start waiting for
	// MAINT_OK before that line can possibly be processed.
	onResponse func(line string)
}

// conn is one TCP connection to one node. Commands are matched to responses
// by order: the protocol answers every command exactly once, in order, so a
// FIFO of waiters is the whole correlation scheme.
type conn struct {
	nc   net.Conn
	addr string
	br   *bufio.Reader
	log  *slog.Logger

	// async consumes asynchronous lines (EVENT, MAINT_OK, SHUTDOWN, the
	// maintenance timeout); it runs on the reader goroutine.
	async func(cn *conn, line string) bool
	// closed is called once, by whichever goroutine killed the connection,
	// after every waiter was failed.
	closed func(cn *conn, err error)

	// writeMu serializes writes, and with them the order of the queue.
	writeMu sync.Mutex

	mu       sync.Mutex
	queue    []*waiter
	err      error // non-nil once the connection is dead
	retiring bool  // close as soon as the queue is empty (after SHUTDOWN)
	done     chan struct{}
}

// dialConn opens a connection; start must follow.
func dialConn(ctx context.Context, addr string, timeout time.Duration, log *slog.Logger,
	async func(*conn, string) bool, closed func(*conn, error)) (*conn, error) {
	d := net.Dialer{
		Timeout: timeout,
		// Short keepalive probes notice a node that vanished without a FIN
		// well within the session grace period, so failover starts in time.
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 10 * time.Second, Interval: 5 * time.Second, Count: 3},
	}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	cn := &conn{
		nc:     nc,
		addr:   addr,
		br:     bufio.NewReaderSize(nc, 64<<10),
		log:    log.With("addr", addr),
		async:  async,
		closed: closed,
		done:   make(chan struct{}),
	}
	return cn, nil
}

// start runs the reader goroutine, tracked by wg.
func (cn *conn) start(wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		cn.readLoop()
	}()
}

// errNotSent marks a command that ended before any byte of it was written:
// the connection is still in step and the command is safe to retry.
var errNotSent = errors.New("not sent")

// send writes one line and queues its waiter. The waiter is queued before
// the write so that the response can never arrive ahead of it. A write that
// failed after part of the line went out kills the connection, because a
// partial line would desynchronize framing; one that wrote nothing because
// the caller's deadline had passed only withdraws its own command, with an
// error wrapping errNotSent.
func (cn *conn) send(ctx context.Context, line string, onResponse func(string)) (*waiter, error) {
	w := &waiter{ch: make(chan response, 1), onResponse: onResponse}
	buf := make([]byte, 0, len(line)+1)
	buf = append(append(buf, line...), '\n')

	cn.writeMu.Lock()
	defer cn.writeMu.Unlock()
	// The wait for writeMu may have outlasted the caller.
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", errNotSent, err)
	}
	cn.mu.Lock()
	if cn.err != nil || cn.retiring {
		err := cn.err
		cn.mu.Unlock()
		if err == nil {
			err = errors.New("node is shutting down")
		}
		// Nothing was written: the caller may pick another connection.
		return nil, err
	}
	cn.queue = append(cn.queue, w)
	cn.mu.Unlock()

	deadline, _ := ctx.Deadline()
	_ = cn.nc.SetWriteDeadline(deadline) // zero deadline = none
	n, err := cn.nc.Write(buf)
	if err == nil {
		return w, nil
	}
	// Under load the caller's deadline can pass between its own check and
	// the write. Killing the connection for that would fail every command
	// pipelined on it and report a command that never left as lost.
	if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) && cn.withdraw(w) {
		return nil, fmt.Errorf("%w: %w", errNotSent, context.DeadlineExceeded)
	}
	cn.fail(fmt.Errorf("write: %w", err))
	return w, nil
}

// withdraw removes w, whose line was not written, from the queue. Callers
// hold writeMu, so w is the newest waiter unless the connection failed
// meanwhile; then withdraw returns false and w already has its error.
func (cn *conn) withdraw(w *waiter) bool {
	cn.mu.Lock()
	last := len(cn.queue) - 1
	if cn.err != nil || last < 0 || cn.queue[last] != w {
		cn.mu.Unlock()
		return false
	}
	cn.queue[last] = nil
	cn.queue = cn.queue[:last]
	// A SHUTDOWN that came during the write found w queued and left the
	// closing to the last answer, which will now never come.
	retire := cn.retiring && len(cn.queue) == 0
	cn.mu.Unlock()
	if retire {
		cn.fail(errors.New("retired after SHUTDOWN"))
	}
	return true
}

// wait returns the response for w, or the context's error. A waiter that
// gives up stays queued; its response is read and dropped when it comes,
// which keeps every later response matched to the right command.
func (cn *conn) wait(ctx context.Context, w *waiter) (string, error) {
	select {
	case r := <-w.ch:
		return r.line, r.err
	case <-ctx.Done():
		// An answer that raced with the deadline still tells the caller
		// what happened, which beats an unknown outcome.
		select {
		case r := <-w.ch:
			return r.line, r.err
		default:
			return "", ctx.Err()
		}
	}
}

// readLoop reads lines until the connection fails.
func (cn *conn) readLoop() {
	for {
		line, err := cn.readLine()
		if err != nil {
			cn.fail(err)
			return
		}
		if line == "" {
			continue
		}
		if cn.async != nil && cn.async(cn, line) {
			continue
		}
		cn.deliver(line)
	}
}

// deliver hands a response line to the oldest waiter.
func (cn *conn) deliver(line string) {
	cn.mu.Lock()
	if len(cn.queue) == 0 {
		cn.mu.Unlock()
		cn.log.Warn("raftgate client: response with no command waiting, dropped", "line", truncate(line, 200))
		return
	}
	w := cn.queue[0]
	cn.queue[0] = nil
	cn.queue = cn.queue[1:]
	retire := cn.retiring && len(cn.queue) == 0
	cn.mu.Unlock()
	if w.onResponse != nil {
		w.onResponse(line)
	}
	w.ch <- response{line: line}
	if retire {
		cn.fail(errors.New("retired after SHUTDOWN"))
	}
}

// readLine returns the next line without its "\n" or a trailing "\r".
func (cn *conn) readLine() (string, error) {
	var long []byte
	for {
		frag, err := cn.br.ReadSlice('\n')
		if len(long)+len(frag) > maxResponseLine+1 { // +1: the '\n'
			return "", fmt.Errorf("%w: response line longer than %d bytes", ErrProtocol, maxResponseLine)
		}
		if err == nil {
			if long != nil {
				frag = append(long, frag...)
			}
			frag = bytes.TrimSuffix(frag[:len(frag)-1], []byte{'\r'})
			return string(frag), nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			if errors.Is(err, io.EOF) {
				return "", fmt.Errorf("closed by server: %w", err)
			}
			return "", fmt.Errorf("read: %w", err)
		}
		long = append(long, frag...)
	}
}

// retire stops new commands on the connection and closes it once every
// command already written has been answered.
func (cn *conn) retire() {
	cn.mu.Lock()
	cn.retiring = true
	idle := len(cn.queue) == 0
	cn.mu.Unlock()
	if idle {
		cn.fail(errors.New("retired after SHUTDOWN"))
	}
}

// fail kills the connection once: it closes the socket and fails every
// queued waiter with an error wrapping ErrConnectionLost.
func (cn *conn) fail(cause error) {
	cn.mu.Lock()
	if cn.err != nil {
		cn.mu.Unlock()
		return
	}
	cn.err = fmt.Errorf("%w (%s: %w)", ErrConnectionLost, cn.addr, cause)
	queue := cn.queue
	cn.queue = nil
	cn.mu.Unlock()

	_ = cn.nc.Close()
	for _, w := range queue {
		w.ch <- response{err: cn.err}
	}
	close(cn.done)
	if cn.closed != nil {
		cn.closed(cn, cause)
	}
}

// dead reports whether the connection can no longer take commands.
func (cn *conn) dead() bool {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cn.err != nil || cn.retiring
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
