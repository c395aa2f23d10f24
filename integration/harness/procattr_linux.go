package harness

import "syscall"

// sysProcAttr makes the child die with the test binary, so a test that
// times out (and panics) leaves no process behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
