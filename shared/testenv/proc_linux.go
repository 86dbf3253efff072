package testenv

import "syscall"

// procAttr makes the kernel kill the service if the test binary dies without
// running its cleanups (a test timeout panic, a kill -9).
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
