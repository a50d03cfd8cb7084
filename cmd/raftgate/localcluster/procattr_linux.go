package localcluster

import "syscall"

// procAttr puts a node in its own process group, so a Ctrl-C to the
// terminal reaches only the parent, which then stops the nodes in order.
// With killWithParent the kernel also kills the node if the parent dies, so
// a crashed or timed-out harness leaves no orphans.
func procAttr(killWithParent bool) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Setpgid: true}
	if killWithParent {
		a.Pdeathsig = syscall.SIGKILL
	}
	return a
}
