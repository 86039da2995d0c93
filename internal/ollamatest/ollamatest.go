// Package ollamatest runs real `ollama serve` processes on loopback for the
// real-Ollama test suite, and a recording proxy that sums what the server
// itself reported, so tests can compare the daemon's counters with an
// independent record.
//
// The Ollama binary and the tiny model come from
// scripts/ollama-test-server.sh build, which prints CF_TEST_OLLAMA_BIN and
// CF_TEST_OLLAMA_MODEL; scripts/test.sh exports them. Without them the suite
// skips with a message, so plain `go test ./...` passes anywhere.
package ollamatest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/chimeraforge/chimeraforge/internal/testtool"
)

// Model is the name the tiny test model is created under.
const Model = "tiny"

// Env names the variables that point the suite at a built Ollama. They are
// outside the CHIMERAFORGE_ prefix, which is read as configuration.
const (
	EnvBin   = "CF_TEST_OLLAMA_BIN"
	EnvModel = "CF_TEST_OLLAMA_MODEL"
)

// Require returns the Ollama binary and the model directory (holding
// tiny.gguf and Modelfile), or skips the test saying how to get them. With
// CF_TEST_REQUIRE_TOOLS set (scripts/test.sh) it fails instead: a skip
// there would hide a broken build step.
func Require(t testing.TB) (bin, modelDir string) {
	t.Helper()
	bin, modelDir = os.Getenv(EnvBin), os.Getenv(EnvModel)
	if bin == "" || modelDir == "" {
		msg := "real-Ollama suite skipped: " + EnvBin + " and " + EnvModel + " are not set; " +
			"`eval \"$(scripts/ollama-test-server.sh build)\"` builds Ollama and the tiny model and sets them (scripts/test.sh does)"
		testtool.Missing(t, msg)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s: %v", EnvBin, err)
	}
	if _, err := os.Stat(filepath.Join(modelDir, "Modelfile")); err != nil {
		t.Fatalf("%s: %v", EnvModel, err)
	}
	return bin, modelDir
}

// Server is one `ollama serve` process on 127.0.0.1.
type Server struct {
	t           testing.TB
	bin, model  string
	Port        int
	NumParallel int
	dir         string
	cmd         *exec.Cmd
	exited      chan struct{}
}

// Start runs `ollama serve` on a free loopback port with its own models
// directory and HOME, waits for /api/version, and creates the tiny model.
// The server is killed when the test ends.
func Start(t testing.TB, numParallel int) *Server {
	t.Helper()
	bin, model := Require(t)
	s := &Server{t: t, bin: bin, model: model, Port: freePort(t), NumParallel: numParallel, dir: t.TempDir()}
	s.start()
	t.Cleanup(s.Kill)
	return s
}

// URL is the server's base URL.
func (s *Server) URL() string { return "http://" + s.Addr() }

// Addr is host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)) }

func (s *Server) env() []string {
	return append(os.Environ(),
		"OLLAMA_HOST="+s.Addr(),
		"OLLAMA_MODELS="+filepath.Join(s.dir, "models"),
		"HOME="+s.dir,
		"OLLAMA_NUM_PARALLEL="+strconv.Itoa(s.NumParallel),
		"OLLAMA_MAX_LOADED_MODELS=1",
		"OLLAMA_KEEP_ALIVE=10m",
		"OLLAMA_NOPRUNE=1",
	)
}

func (s *Server) start() {
	s.t.Helper()
	log, err := os.OpenFile(filepath.Join(s.dir, "serve.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		s.t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command(s.bin, "serve") //nolint:noctx // lives until Kill, not a context
	cmd.Env = s.env()
	cmd.Stdout, cmd.Stderr = log, log
	// Its own process group, so Kill also ends the runner it spawns.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start ollama serve: %v", err)
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(s.exited) }()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL()+"/api/version", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-s.exited:
			s.t.Fatalf("ollama serve exited at start; log:\n%s", s.Log())
		case <-ctx.Done():
			s.t.Fatalf("ollama serve on %s did not answer /api/version within 30s; log:\n%s", s.Addr(), s.Log())
		case <-time.After(50 * time.Millisecond):
		}
	}
	create := exec.CommandContext(ctx, s.bin, "create", Model, "-f", filepath.Join(s.model, "Modelfile"))
	create.Dir = s.model
	create.Env = s.env()
	if out, err := create.CombinedOutput(); err != nil {
		s.t.Fatalf("ollama create %s: %v\n%s", Model, err, out)
	}
}

// Kill ends the server and its runner at once (SIGKILL to the group), as
// a crash or an OOM kill would.
func (s *Server) Kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.exited:
		return
	default:
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		s.t.Errorf("ollama serve (pid %d) did not exit within 10s of SIGKILL", s.cmd.Process.Pid)
	}
}

// Restart starts the server again on the same port with the same models.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	s.start()
}

// Log returns what the server wrote so far.
func (s *Server) Log() string {
	b, err := os.ReadFile(filepath.Join(s.dir, "serve.log"))
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(b)
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
