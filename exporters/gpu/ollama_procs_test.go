package gpu

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// TestOllamaProcessesLive maps the test process's own listener: the process
// itself and a child it starts belong to the target; others do not.
func TestOllamaProcessesLive(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads Linux /proc")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	idle, err := net.Listen("tcp", "127.0.0.1:0") // a port nobody listens on once closed
	if err != nil {
		t.Fatal(err)
	}
	idlePort := idle.Addr().(*net.TCPAddr).Port
	idle.Close()

	child := exec.CommandContext(t.Context(), "sleep", "5")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = child.Process.Kill()
		_ = child.Wait()
	}()

	self := uint32(os.Getpid())
	lookup := OllamaProcesses(map[string]int{"local": port, "gone": idlePort, "bad": 0})
	for _, tc := range []struct {
		name   string
		pid    uint32
		target string
	}{
		{"listener", self, "local"},
		{"child of listener", uint32(child.Process.Pid), "local"},
		{"parent of listener", uint32(os.Getppid()), ""},
		{"init", 1, ""},
		{"no such process", 1<<22 + 7, ""},
		{"listener again (cached)", self, "local"},
	} {
		got, ok := lookup(tc.pid)
		if got != tc.target || ok != (tc.target != "") {
			t.Errorf("%s (pid %d): %q, %v; want %q", tc.name, tc.pid, got, ok, tc.target)
		}
	}

	if got, ok := OllamaProcesses(nil)(self); ok || got != "" {
		t.Errorf("no targets: %q, %v", got, ok)
	}
	if got, ok := OllamaProcesses(map[string]int{"gone": idlePort})(self); ok || got != "" {
		t.Errorf("port without listener: %q, %v", got, ok)
	}
}

// procFixture writes a fake /proc: a server (pid 10) listening on port
// 11434 over IPv6 (socket inode 5555), its runner (pid 11), a grandchild
// whose comm holds ") (" (pid 12), and an unrelated process (pid 20).
func procFixture(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	write := func(name, body string) {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	// IPv4: port 11434 (0x2CAA) established, not listening; 8080 listening.
	write("net/tcp", header+
		"   0: 0100007F:2CAA 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000  1000        0 4444 1 0000000000000000 20 4 30 10 -1\n"+
		"   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 6666 1 0000000000000000 100 0 0 10 0\n")
	write("net/tcp6", header+
		"   0: 00000000000000000000000001000000:2CAA 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 5555 1 0000000000000000 100 0 0 10 0\n")
	write("10/stat", "10 (ollama) S 1 10 10 0 -1 4194560 0 0 0 0\n")
	write("11/stat", "11 (ollama) S 10 10 10 0 -1 4194560 0 0 0 0\n")
	write("12/stat", "12 (odd) (name) S 11 10 10 0 -1 4194560 0 0 0 0\n")
	write("20/stat", "20 (bash) S 1 20 20 0 -1 4194560 0 0 0 0\n")
	write("30/stat", "30 (http) S 1 30 30 0 -1 4194560 0 0 0 0\n")
	for pid, links := range map[string][]string{
		"10": {"/dev/null", "socket:[4444]", "socket:[5555]"},
		"11": {"/dev/null"},
		"20": {"socket:[4444]"},
		"30": {"socket:[6666]"},
	} {
		if err := os.MkdirAll(filepath.Join(dir, pid, "fd"), 0o755); err != nil {
			t.Fatal(err)
		}
		for i, l := range links {
			if err := os.Symlink(l, filepath.Join(dir, pid, "fd", strconv.Itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dir
}

func TestOllamaProcessesFixture(t *testing.T) {
	dir := procFixture(t)
	now := time.Unix(1000, 0)
	m := &procMapper{proc: dir, ports: map[int]string{11434: "gpu-box", 8080: "other"}, now: func() time.Time { return now }}
	for _, tc := range []struct {
		pid    uint32
		target string
	}{
		{10, "gpu-box"}, // listens on [::]:11434
		{11, "gpu-box"}, // child
		{12, "gpu-box"}, // grandchild, comm with parentheses and a space
		{20, ""},        // holds an established socket on 11434, not a listener
		{30, "other"},
		{99, ""}, // no such process
		{1, ""},
	} {
		got, ok := m.lookup(tc.pid)
		if got != tc.target || ok != (tc.target != "") {
			t.Errorf("pid %d: %q, %v; want %q", tc.pid, got, ok, tc.target)
		}
	}

	// A new server's listener is seen only once the cache has expired.
	if err := os.Remove(filepath.Join(dir, "30", "fd", "0")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("socket:[6666]", filepath.Join(dir, "20", "fd", "1")); err != nil {
		t.Fatal(err)
	}
	if got, _ := m.lookup(20); got != "" {
		t.Errorf("pid 20 before the refresh: %q", got)
	}
	now = now.Add(procRefresh)
	if got, _ := m.lookup(20); got != "other" {
		t.Errorf("pid 20 after the refresh: %q, want other", got)
	}
	if got, ok := m.lookup(30); ok {
		t.Errorf("pid 30 after the refresh: %q", got)
	}
}

// TestOllamaProcessesCycle guards the parent walk against a loop in
// /proc (a PID reused while walking) and a missing /proc.
func TestOllamaProcessesCycle(t *testing.T) {
	dir := procFixture(t)
	for pid, ppid := range map[string]string{"40": "41", "41": "40"} {
		if err := os.MkdirAll(filepath.Join(dir, pid), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, pid, "stat"), []byte(pid+" (x) S "+ppid+" 0\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m := &procMapper{proc: dir, ports: map[int]string{11434: "gpu-box"}, now: time.Now}
	if got, ok := m.lookup(40); ok {
		t.Errorf("cycle: %q", got)
	}
	m = &procMapper{proc: filepath.Join(dir, "absent"), ports: map[int]string{11434: "gpu-box"}, now: time.Now}
	if got, ok := m.lookup(10); ok {
		t.Errorf("no /proc: %q", got)
	}
}
