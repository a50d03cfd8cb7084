//go:build !linux

package localcluster

import "syscall"

// procAttr puts a node in its own process group, so a Ctrl-C to the
// terminal reaches only the parent, which then stops the nodes in order.
// Only Linux can have a child killed with its parent; elsewhere
// killWithParent has no effect.
func procAttr(killWithParent bool) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
