//go:build !linux

package chaos

import "syscall"

// procAttr puts a node in its own process group, so a Ctrl-C to the
// harness does not reach the nodes before the harness stops them.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
