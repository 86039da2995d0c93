//go:build !linux

package soak

import (
	"errors"
	"syscall"
)

func sysProcAttr() *syscall.SysProcAttr { return nil }

// ReadProc needs Linux's /proc; elsewhere it fails, and callers rely on the
// process_* and go_* series alone.
func ReadProc(int) (Proc, error) { return Proc{}, errors.New("soak: /proc is Linux only") }
