package hostile

import (
	"context"
	"net"
	"syscall"
	"testing"
	"time"
)

// Backlogged returns the address of a loopback port whose TCP connects hang
// until the client's connect timeout: it listens with a backlog of 0 and
// its accept queue is already full, so the kernel drops new SYNs. Nothing
// else can reach a loopback port without answering. Closed when the test
// ends.
func Backlogged(tb testing.TB) string {
	tb.Helper()
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("hostile: %v", err)
	}
	tb.Cleanup(func() { _ = l.Close() })
	rc, err := l.(*net.TCPListener).SyscallConn()
	if err != nil {
		tb.Fatalf("hostile: %v", err)
	}
	var lerr error
	if err := rc.Control(func(fd uintptr) { lerr = syscall.Listen(int(fd), 0) }); err != nil || lerr != nil {
		tb.Fatalf("hostile: shrink the backlog: %v %v", err, lerr)
	}
	addr := l.Addr().String()
	// Fill the queue until a connect no longer completes.
	d := net.Dialer{Timeout: 100 * time.Millisecond}
	for range 8 {
		c, err := d.DialContext(context.Background(), "tcp", addr)
		if err != nil {
			return addr
		}
		tb.Cleanup(func() { _ = c.Close() })
	}
	tb.Skip("hostile: this kernel keeps accepting connections with a backlog of 0")
	return ""
}
