package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/chimeraforge/chimeraforge/internal/soak"
)

// cpuTime returns the user plus system CPU time a process has used so far.
func cpuTime(pid int) (time.Duration, error) {
	p, err := soak.ReadProc(pid)
	return p.CPU, err
}

// memory is what the kernel says of a process's resident memory.
type memory struct {
	RSS  int64 // VmRSS: resident now, bytes
	Peak int64 // VmHWM: the most resident at any time so far, bytes
}

func readMemory(pid int) (memory, error) {
	p, err := soak.ReadProc(pid)
	return memory{RSS: p.RSSBytes, Peak: p.PeakRSSBytes}, err
}

// machineCPU is the machine's CPU time from the first line of /proc/stat.
type machineCPU struct {
	busy, total int64 // ticks
}

func readMachineCPU() (machineCPU, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineCPU{}, fmt.Errorf("read machine CPU: %w", err)
	}
	return parseProcStat(b)
}

func parseProcStat(b []byte) (machineCPU, error) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 6 || f[0] != "cpu" {
		return machineCPU{}, fmt.Errorf("parse /proc/stat: first line %q is not the cpu total", line)
	}
	var m machineCPU
	for i, s := range f[1:] {
		if i >= 8 { // guest time is already counted in user
			break
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return machineCPU{}, fmt.Errorf("parse /proc/stat field %d: %w", i+1, err)
		}
		m.total += n
		if i != 3 && i != 4 { // idle and iowait
			m.busy += n
		}
	}
	return m, nil
}

// busyShare is the share of all CPUs busy between a and b.
func busyShare(a, b machineCPU) float64 {
	if b.total == a.total {
		return 0
	}
	return float64(b.busy-a.busy) / float64(b.total-a.total)
}
