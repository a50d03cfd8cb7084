package chaos

import "syscall"

// procAttr puts a node in its own process group (a Ctrl-C to the harness
// must not reach the nodes before the harness stops them) and kills it if
// the harness dies, so a crashed or timed-out run leaves no orphans.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
