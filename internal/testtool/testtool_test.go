package testtool

import (
	"runtime"
	"strings"
	"testing"
)

// fakeTB records how a helper ended the test; Skip and Fatal end the
// calling goroutine, as the real ones do.
type fakeTB struct {
	testing.TB
	skipped, fatal string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Skip(args ...any) {
	f.skipped = args[0].(string)
	runtime.Goexit()
}
func (f *fakeTB) Fatal(args ...any) {
	f.fatal = args[0].(string)
	runtime.Goexit()
}

func run(fn func(tb testing.TB)) *fakeTB {
	f := &fakeTB{}
	done := make(chan struct{})
	go func() { defer close(done); fn(f) }()
	<-done
	return f
}

func TestLookPath(t *testing.T) {
	for _, tc := range []struct {
		require    string
		wantSkip   bool
		wantFailed bool
	}{
		{"", true, false},
		{"1", false, true},
	} {
		t.Setenv(EnvRequire, tc.require)
		f := run(func(tb testing.TB) { LookPath(tb, "no-such-tool-chimeraforge", "some-package") })
		if (f.skipped != "") != tc.wantSkip || (f.fatal != "") != tc.wantFailed {
			t.Errorf("%s=%q: skipped %q, fatal %q", EnvRequire, tc.require, f.skipped, f.fatal)
		}
		if msg := f.skipped + f.fatal; !strings.Contains(msg, "no-such-tool-chimeraforge") || !strings.Contains(msg, "some-package") {
			t.Errorf("message %q does not name the tool and its package", msg)
		}
	}
	t.Setenv(EnvRequire, "1")
	if f := run(func(tb testing.TB) { LookPath(tb, "sh", "dash") }); f.skipped != "" || f.fatal != "" {
		t.Errorf("sh is on PATH, yet skipped %q fatal %q", f.skipped, f.fatal)
	}
}
