package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// proc is a process the harness started: the simulator, the daemon or the
// floor client. Each runs in a process group of its own and is ended with
// SIGTERM (SIGKILL after a grace period), so that nothing outlives a step.
type proc struct {
	name   string
	cmd    *exec.Cmd
	start  time.Time // just before exec
	stderr *tailBuffer
	lines  chan string // stdout, line by line
	done   chan error
}

// startProc starts bin with args. Its stdout is read line by line (see
// firstLine); the last few KiB of its stderr are kept for error messages.
func startProc(name, bin string, args ...string) (*proc, error) {
	return startProcEnv(name, nil, bin, args...)
}

// startProcEnv is startProc with env added to the harness's environment.
func startProcEnv(name string, env []string, bin string, args ...string) (*proc, error) {
	p := &proc{name: name, stderr: &tailBuffer{max: 8 << 10}, lines: make(chan string, 64), done: make(chan error, 1)}
	// Not CommandContext: stop ends the whole process group, gracefully first.
	p.cmd = exec.Command(bin, args...) //nolint:noctx // see above
	if env != nil {
		p.cmd.Env = append(os.Environ(), env...)
	}
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p.cmd.Stderr = p.stderr
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p.start = time.Now()
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case p.lines <- sc.Text():
			default: // nobody reads past the first lines
			}
		}
		p.done <- p.cmd.Wait()
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// firstLine waits for a stdout line containing marker and returns it.
func (p *proc) firstLine(marker string, timeout time.Duration) (string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case l := <-p.lines:
			if strings.Contains(l, marker) {
				return l, nil
			}
		case err := <-p.done:
			p.done <- err
			return "", fmt.Errorf("%s exited before printing %q (%w): %s", p.name, marker, exitStatus(err), p.stderr)
		case <-t.C:
			return "", fmt.Errorf("%s printed no %q within %s: %s", p.name, marker, timeout, p.stderr)
		}
	}
}

// stop ends the process group with SIGTERM and waits up to grace for it
// to exit, then kills it. It returns the exit error of a process that did
// not exit cleanly on SIGTERM.
func (p *proc) stop(grace time.Duration) error {
	_ = syscall.Kill(-p.pid(), syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			return fmt.Errorf("%s: %w: %s", p.name, err, p.stderr)
		}
		return nil
	case <-time.After(grace):
		_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
		err := <-p.done
		p.done <- err
		return fmt.Errorf("%s did not exit within %s of SIGTERM", p.name, grace)
	}
}

// exited reports whether the process has ended, and how.
func (p *proc) exited() (bool, error) {
	select {
	case err := <-p.done:
		p.done <- err
		return true, err
	default:
		return false, nil
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = t.b[len(t.b)-t.max:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return strings.TrimSpace(string(t.b)) }

// freeAddr returns a loopback address that was free a moment ago, for a
// process that takes its listen address as a flag.
func freeAddr() (string, error) {
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// buildDaemon builds ./cmd/chimeraforge of the module at root into dir.
func buildDaemon(ctx context.Context, root, dir string) (string, error) {
	bin := dir + "/chimeraforge"
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, "./cmd/chimeraforge")
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build the daemon (run the harness from the repository root): %w", err)
	}
	return bin, nil
}

// exitStatus is how a process that ended exited: its error, or a clean
// exit, which is unexpected wherever a process should still run.
func exitStatus(err error) error {
	if err == nil {
		return errors.New("exit status 0")
	}
	return err
}
