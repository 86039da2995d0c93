//go:build unix

package exporters

import (
	"syscall"
	"time"
)

// cpuTime is the CPU time, user and system, this process has used: it
// tells a benchmark's cost apart from the time other processes take from
// it on a busy machine.
func cpuTime() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
