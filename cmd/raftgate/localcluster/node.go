package localcluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrNotRunning is returned when a signal is meant for a node whose
// process is not running.
var ErrNotRunning = errors.New("not running")

// Node is one `raftgate serve` process slot: fixed ports, data directory
// and log file, so it can be stopped and started again in place. The
// exported fields are read by Start; set them before starting.
type Node struct {
	// ID is the node ID (--node-id).
	ID string
	Ports
	// DataDir is the node's data directory (--data-dir).
	DataDir string
	// LogPath is the file the process's stdout and stderr are appended to.
	LogPath string
	// Join are the gossip addresses passed as --join (none: no flag).
	Join []string
	// Expect is passed as --bootstrap-expect; 0 makes a node that only
	// joins and never bootstraps a cluster of its own.
	Expect int
	// KillWithParent has the kernel kill the process when the parent
	// dies (Linux only), for harnesses that must leave no orphans.
	KillWithParent bool

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	running bool
	err     error
}

// NewNode makes a node slot with its data in dir/id and its log in
// dir/id.log; it does not start anything.
func NewNode(dir, id string, ports Ports) *Node {
	return &Node{
		ID:      id,
		Ports:   ports,
		DataDir: filepath.Join(dir, id),
		LogPath: filepath.Join(dir, id+".log"),
	}
}

// Args returns the serve command line Start runs, extra flags last.
func (n *Node) Args(extra []string) []string {
	args := []string{"serve",
		"--node-id", n.ID, "--data-dir", n.DataDir,
		"--http-addr", n.Proxy, "--control-addr", n.Control, "--raft-addr", n.Raft,
		"--gossip-addr", n.Gossip, "--rpc-addr", n.RPC, "--admin-addr", n.Admin,
		// Always explicit: with --join and no --bootstrap-expect, serve
		// only joins, which is right for Expect 0 and wrong otherwise.
		"--bootstrap-expect", fmt.Sprint(n.Expect),
	}
	if len(n.Join) > 0 {
		args = append(args, "--join", strings.Join(n.Join, ","))
	}
	return append(args, extra...)
}

// Start launches `binary serve` for the node with extra flags appended;
// the node must not be running.
func (n *Node) Start(binary string, extra []string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.running {
		return fmt.Errorf("start %s: already running", n.ID)
	}
	logf, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log of %s: %w", n.ID, err)
	}
	cmd := exec.Command(binary, n.Args(extra)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = procAttr(n.KillWithParent)
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", n.ID, err)
	}
	exited := make(chan struct{})
	n.cmd, n.exited, n.running, n.err = cmd, exited, true, nil
	go func() {
		err := cmd.Wait()
		logf.Close()
		n.mu.Lock()
		// A later Start may already have replaced cmd; only the current
		// process's exit changes the node's state.
		if n.cmd == cmd {
			n.running, n.err = false, err
		}
		n.mu.Unlock()
		close(exited)
	}()
	return nil
}

// Running reports whether the process is alive (possibly stopped by
// SIGSTOP).
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.running
}

// Done returns a channel closed when the last started process exits; it
// is nil before the first Start.
func (n *Node) Done() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.exited
}

// ExitErr returns how the last process exited (nil while it runs or after
// a clean exit).
func (n *Node) ExitErr() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.err
}

// Pid returns the process ID of the last started process, or 0.
func (n *Node) Pid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.cmd.Process == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// Signal sends sig to the process if it runs.
func (n *Node) Signal(sig syscall.Signal) error {
	n.mu.Lock()
	cmd, running := n.cmd, n.running
	n.mu.Unlock()
	if !running {
		return fmt.Errorf("signal %s: %s is %w", sig, n.ID, ErrNotRunning)
	}
	if err := cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signal %s to %s: %w", sig, n.ID, err)
	}
	return nil
}

// Wait blocks until the process exits or limit passes; a node never
// started counts as exited.
func (n *Node) Wait(limit time.Duration) error {
	ch := n.Done()
	if ch == nil {
		return nil
	}
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-ch:
		return nil
	case <-t.C:
		return fmt.Errorf("%s did not exit within %s", n.ID, limit)
	}
}

// killWait bounds the wait after SIGKILL, which the kernel acts on at
// once; only an unkillable process (stuck in the kernel) outlasts it.
const killWait = 10 * time.Second

// Kill sends SIGKILL and waits for the process to go.
func (n *Node) Kill() error {
	if err := n.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	return n.Wait(killWait)
}

// quitWait is how long a process gets to write its goroutine dump after
// SIGQUIT before it is killed.
const quitWait = 3 * time.Second

// Stop stops the process gracefully with SIGTERM and waits up to limit.
// A stop that hangs is a bug worth a trace: the process then gets SIGQUIT,
// so the Go runtime dumps its goroutines into the log, and SIGKILL if that
// does not end it; Stop reports the timeout as an error. A node that is
// not running is already stopped.
func (n *Node) Stop(limit time.Duration) error {
	if !n.Running() {
		return nil
	}
	// A process stopped with SIGSTOP cannot handle SIGTERM.
	_ = n.Signal(syscall.SIGCONT)
	if err := n.Signal(syscall.SIGTERM); err != nil {
		if errors.Is(err, ErrNotRunning) {
			return nil
		}
		return err
	}
	if err := n.Wait(limit); err != nil {
		_ = n.Signal(syscall.SIGQUIT)
		if n.Wait(quitWait) != nil {
			_ = n.Kill()
		}
		return fmt.Errorf("graceful stop: %w (goroutine dump in %s)", err, n.LogPath)
	}
	return nil
}
