package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/raftgate/raftgate/cmd/raftgate/localcluster"
)

// proc is one child process started by the harness, in its own process
// group so a terminal's Ctrl-C reaches only the harness, which then stops
// its children itself.
type proc struct {
	name   string
	cmd    *exec.Cmd
	logf   *os.File
	exited chan struct{}
	err    error
}

// startProc starts bin with args; stdout and stderr go to logPath.
func startProc(name, logPath string, env []string, bin string, args ...string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log of %s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s (%s): %w", name, bin, err)
	}
	p := &proc{name: name, cmd: cmd, logf: logf, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL to the process and its group (nginx workers, for
// instance) and waits for it.
func (p *proc) kill() {
	if !p.alive() {
		return
	}
	_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
	<-p.exited
}

// stop asks the process to stop with SIGTERM and kills it after grace.
func (p *proc) stop(grace time.Duration) {
	if !p.alive() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		// A master that stopped may leave workers behind; the group goes too.
		_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
	case <-time.After(grace):
		p.kill()
	}
}

// peakRSS returns the sum of VmHWM (peak resident set) over the process
// and its descendants, in bytes. Summing over processes counts shared pages
// once per process, which overstates multi-process servers a little.
func peakRSS(pid int) int64 {
	var total int64
	seen := map[int]bool{}
	var walk func(pid int)
	walk = func(pid int) {
		if seen[pid] || len(seen) > 256 {
			return
		}
		seen[pid] = true
		total += statusKB(pid, "VmHWM") * 1024
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
		for _, t := range tasks {
			b, err := os.ReadFile(t)
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(b)) {
				if c, err := strconv.Atoi(f); err == nil {
					walk(c)
				}
			}
		}
	}
	walk(pid)
	return total
}

// statusKB reads one "Key: N kB" line of /proc/pid/status.
func statusKB(pid int, key string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// freePorts returns n free loopback ports below the ephemeral range, so a
// node restarted on its ports never finds one taken by an outgoing
// connection (see localcluster.FreePorts).
func freePorts(n int) ([]int, error) {
	return localcluster.FreePorts(n)
}

// waitTCP waits until addr accepts a TCP connection.
func waitTCP(ctx context.Context, addr string, limit time.Duration, p *proc) error {
	deadline := time.Now().Add(limit)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if p != nil && !p.alive() {
			return fmt.Errorf("%s exited before listening on %s (see its log)", p.name, addr)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not listening after %s: %w", addr, limit, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
