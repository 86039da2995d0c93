package promtest

import "syscall"

// sysProcAttr has the kernel kill Prometheus if the test binary dies
// without running cleanups (a -timeout panic, a crash), so no orphan keeps
// a port and a temporary directory.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
