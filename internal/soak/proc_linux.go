package soak

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// sysProcAttr has the kernel kill the daemon if the test binary dies
// without running cleanups (a -timeout panic, a crash), so no orphan keeps
// running and loading the machine.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// ReadProc reads what the kernel says process pid holds: its open file
// descriptors, resident memory (now and at its peak), OS threads and the
// CPU time it used. It is the outside view of
// what process_open_fds, process_resident_memory_bytes and go_threads
// report from inside, and it works while the process does not answer.
func ReadProc(pid int) (Proc, error) {
	var p Proc
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return p, fmt.Errorf("read fds of %d: %w", pid, err)
	}
	p.FDs = len(fds)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return p, fmt.Errorf("read status of %d: %w", pid, err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "VmRSS":
			p.RSSBytes = n << 10 // kB
		case "VmHWM":
			p.PeakRSSBytes = n << 10
		case "Threads":
			p.Threads = int(n)
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return p, fmt.Errorf("read stat of %d: %w", pid, err)
	}
	if p.CPU, err = parseStatCPU(stat); err != nil {
		return p, fmt.Errorf("read stat of %d: %w", pid, err)
	}
	return p, nil
}
