// Package testtool decides what a test does when an outside tool it needs
// (promtool, prometheus, a built Ollama) is missing: it skips, so that plain
// `go test ./...` passes anywhere, or it fails when CF_TEST_REQUIRE_TOOLS is
// set (scripts/test.sh sets it), where a skip would hide a broken install
// step.
package testtool

import (
	"os"
	"os/exec"
	"testing"
)

// EnvRequire turns a missing tool from a skip into a failure. It is outside
// the CHIMERAFORGE_ prefix, which the daemon reads as configuration.
const EnvRequire = "CF_TEST_REQUIRE_TOOLS"

// Missing skips t with msg, or fails it when EnvRequire is set.
func Missing(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv(EnvRequire) != "" {
		t.Fatal(msg + " (" + EnvRequire + " is set: the suite's install step should have provided it)")
	}
	t.Skip(msg)
}

// LookPath returns the path of bin on PATH, or calls Missing with a message
// naming the Debian package that provides it.
func LookPath(t testing.TB, bin, debianPackage string) string {
	t.Helper()
	path, err := exec.LookPath(bin)
	if err != nil {
		Missing(t, bin+" not found: install the Debian package "+debianPackage+" (scripts/test.sh does)")
	}
	return path
}
