//go:build !linux

package hostile

import "testing"

// Backlogged skips the test: only Linux is known to drop the SYNs of a
// full backlog on loopback.
func Backlogged(tb testing.TB) string {
	tb.Helper()
	tb.Skip("hostile: connect timeouts on loopback need Linux")
	return ""
}
