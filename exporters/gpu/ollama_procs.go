package gpu

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Bounds on OllamaProcesses' work.
const (
	procRefresh  = 10 * time.Second // how long a port→PID mapping and the answers built on it are kept
	procMaxDepth = 64               // parent links followed from a PID before giving up
)

// OllamaProcesses returns an Options.Processes for local Ollama servers:
// targets maps a target name to the loopback TCP port its server listens on.
// A PID belongs to a target if it is the process listening on that port or a
// descendant of it (Ollama runs its model runners as children of `ollama
// serve`).
//
// It reads Linux's /proc: listening sockets in /proc/net/tcp and tcp6, their
// owners through the socket:[inode] links under /proc/*/fd, and parents in
// /proc/PID/stat. The listeners and the answers are kept for 10 s. It never
// fails: whatever it cannot read (another user's process, another network
// namespace, another OS) answers ok=false. It is safe for concurrent use.
func OllamaProcesses(targets map[string]int) func(pid uint32) (string, bool) {
	m := &procMapper{proc: "/proc", ports: map[int]string{}, now: time.Now}
	names := make([]string, 0, len(targets))
	for name := range targets {
		names = append(names, name)
	}
	sort.Strings(names) // the first name wins a port that two targets share
	for _, name := range names {
		if port := targets[name]; port > 0 && port < 1<<16 {
			if _, taken := m.ports[port]; !taken {
				m.ports[port] = name
			}
		}
	}
	return m.lookup
}

type procMapper struct {
	proc  string         // /proc
	ports map[int]string // port → target
	now   func() time.Time

	mu        sync.Mutex
	refreshed time.Time
	owners    map[uint32]string // PID listening on a target's port → target
	answers   map[uint32]string // PID → target ("" for none), since refreshed
}

func (m *procMapper) lookup(pid uint32) (string, bool) {
	if len(m.ports) == 0 {
		return "", false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if now := m.now(); m.owners == nil || now.Sub(m.refreshed) >= procRefresh || now.Before(m.refreshed) {
		m.owners = m.listeners()
		m.answers = map[uint32]string{}
		m.refreshed = now
	}
	if t, ok := m.answers[pid]; ok {
		return t, t != ""
	}
	t := m.ancestorTarget(pid)
	m.answers[pid] = t
	return t, t != ""
}

// ancestorTarget follows parent links from pid to a listening owner; "" if
// none is met.
func (m *procMapper) ancestorTarget(pid uint32) string {
	if len(m.owners) == 0 {
		return ""
	}
	for range procMaxDepth {
		if t, ok := m.owners[pid]; ok {
			return t
		}
		if pid <= 1 {
			return ""
		}
		ppid, ok := m.parent(pid)
		if !ok || ppid == pid {
			return ""
		}
		pid = ppid
	}
	return ""
}

// parent reads the parent PID from /proc/PID/stat: "pid (comm) state ppid …",
// where comm may hold spaces and parentheses.
func (m *procMapper) parent(pid uint32) (uint32, bool) {
	b, err := os.ReadFile(filepath.Join(m.proc, strconv.FormatUint(uint64(pid), 10), "stat"))
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0, false
	}
	ppid, err := strconv.ParseUint(f[1], 10, 32)
	if err != nil {
		return 0, false
	}
	return uint32(ppid), true
}

// listeners maps the PIDs that hold a listening socket on a target's port to
// that target.
func (m *procMapper) listeners() map[uint32]string {
	inodes := map[string]string{} // "socket:[inode]" → target
	for _, file := range []string{"net/tcp", "net/tcp6"} {
		m.listeningInodes(filepath.Join(m.proc, file), inodes)
	}
	owners := map[uint32]string{}
	if len(inodes) == 0 {
		return owners
	}
	dirs, err := os.ReadDir(m.proc)
	if err != nil {
		return owners
	}
	for _, d := range dirs {
		pid, err := strconv.ParseUint(d.Name(), 10, 32)
		if err != nil {
			continue
		}
		fdDir := filepath.Join(m.proc, d.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue // gone, or another user's
		}
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err != nil {
				continue
			}
			if t, ok := inodes[link]; ok {
				owners[uint32(pid)] = t
				break
			}
		}
	}
	return owners
}

// listeningInodes adds to inodes the sockets in a /proc/net/tcp{,6} table
// that listen on a target's port, on any local address.
func (m *procMapper) listeningInodes(file string, inodes map[string]string) {
	f, err := os.Open(file)
	if err != nil {
		return
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	s.Scan() // header
	for s.Scan() {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode …
		fields := strings.Fields(s.Text())
		if len(fields) < 10 || fields[3] != "0A" { // 0A: TCP_LISTEN
			continue
		}
		_, hexPort, ok := strings.Cut(fields[1], ":")
		if !ok {
			continue
		}
		port, err := strconv.ParseUint(hexPort, 16, 16)
		if err != nil {
			continue
		}
		if t, ok := m.ports[int(port)]; ok && fields[9] != "0" {
			inodes["socket:["+fields[9]+"]"] = t
		}
	}
}
