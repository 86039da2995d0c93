package deploy

// Checks of the systemd unit (systemd/chimeraforge.service): parsed here
// against the command line it runs and the hardening it promises, and, where
// systemd-analyze is installed (it is not part of the suite's install step),
// verified and scored by systemd itself. Not verified here: that the unit
// starts, and that NVML works under its sandbox on a machine with a GPU
// (DeviceAllow=char-nvidia*, MemoryDenyWriteExecute, the system call
// filter); scripts/gpu-check.sh runs the daemon on such a machine, but not
// under systemd.

import (
	"bufio"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chimeraforge/chimeraforge/config"
)

const unitFile = "systemd/chimeraforge.service"

// httpShutdownBound is how long `chimeraforge run` waits for its HTTP server
// after the workloads stopped (the 5s in cmd/chimeraforge/run.go).
const httpShutdownBound = 5 * time.Second

// systemdUnit is a unit file: section → key → every value, in order (a key
// may repeat; an empty assignment stays as "").
type systemdUnit map[string]map[string][]string

// last is the value in effect for a key that does not accumulate.
func (u systemdUnit) last(section, key string) (string, bool) {
	vs := u[section][key]
	if len(vs) == 0 {
		return "", false
	}
	return vs[len(vs)-1], true
}

func parseUnit(t *testing.T, file string) systemdUnit {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := systemdUnit{}
	section := ""
	var cont strings.Builder
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if cont.Len() == 0 && (line == "" || line[0] == '#' || line[0] == ';') {
			continue
		}
		if rest, ok := strings.CutSuffix(line, `\`); ok {
			cont.WriteString(rest + " ")
			continue
		}
		cont.WriteString(line)
		line = cont.String()
		cont.Reset()
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section == "" {
			t.Fatalf("%s:%d: %q is no key=value in a section", file, n, line)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		u[section][k] = append(u[section][k], v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// systemdSeconds parses a systemd time span as far as units use it here:
// "20", "20s", "1min 30s".
func systemdSeconds(t *testing.T, v string) time.Duration {
	t.Helper()
	if n, err := strconv.Atoi(v); err == nil {
		return time.Duration(n) * time.Second
	}
	d, err := time.ParseDuration(strings.ReplaceAll(strings.ReplaceAll(v, "min", "m"), " ", ""))
	if err != nil {
		t.Fatalf("time span %q: %v", v, err)
	}
	return d
}

func TestSystemdUnit(t *testing.T) {
	t.Parallel()
	u := parseUnit(t, unitFile)
	svc := u["Service"]
	if svc == nil || u["Unit"] == nil || u["Install"] == nil {
		t.Fatalf("sections %v: want Unit, Service and Install", slices.Sorted(maps.Keys(u)))
	}

	// The command: the binary where the image has it too, `run`, the
	// configuration where the image and the manifests read it, the default
	// port.
	execStart, _ := u.last("Service", "ExecStart")
	argv := strings.Fields(execStart)
	entrypoint, cmd := imageEntrypointCmd(t)
	if len(argv) < 2 || argv[0] != entrypoint[0] || argv[1] != "run" {
		t.Fatalf("ExecStart=%s: want %s run …", execStart, entrypoint[0])
	}
	imageCfg, _ := flagValue(cmd, "config")
	if cfg, _ := flagValue(argv, "config"); cfg != imageCfg {
		t.Errorf("ExecStart --config=%q, want %q as in the image", cfg, imageCfg)
	}
	if addr, ok := flagValue(argv, "web.listen-address"); !ok || !strings.HasSuffix(addr, ":"+cfDefaultPort(t)) {
		t.Errorf("ExecStart --web.listen-address=%q, want the default port %s", addr, cfDefaultPort(t))
	}
	// Every flag it passes exists.
	bin := cfBinary(t)
	help, err := cfCommand(t.Context(), bin, "run", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("chimeraforge run --help: %v\n%s", err, help)
	}
	for _, a := range argv[2:] {
		if !strings.HasPrefix(a, "--") {
			continue
		}
		name, _, _ := strings.Cut(a, "=")
		if !regexp.MustCompile(`(?m)^\s+(-\w, )?` + regexp.QuoteMeta(name) + `\b`).Match(help) {
			t.Errorf("ExecStart passes %s, which `chimeraforge run --help` does not list", name)
		}
	}

	for key, want := range map[string]string{
		"Type":        "simple", // no sd_notify in the daemon
		"ExecReload":  "/bin/kill -HUP $MAINPID",
		"Restart":     "on-failure",
		"DynamicUser": "yes",

		"NoNewPrivileges":         "yes",
		"CapabilityBoundingSet":   "",
		"AmbientCapabilities":     "",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"ProtectKernelTunables":   "yes",
		"ProtectKernelModules":    "yes",
		"ProtectKernelLogs":       "yes",
		"ProtectControlGroups":    "yes",
		"MemoryDenyWriteExecute":  "yes",
		"LockPersonality":         "yes",
		"RestrictSUIDSGID":        "yes",
		"RestrictNamespaces":      "yes",
		"SystemCallArchitectures": "native",
		"DevicePolicy":            "closed",
	} {
		if got, ok := u.last("Service", key); !ok || got != want {
			t.Errorf("%s=%q (set: %v), want %q", key, got, ok, want)
		}
	}
	if !slices.Contains(svc["SystemCallFilter"], "@system-service") {
		t.Errorf("SystemCallFilter=%q: want @system-service", svc["SystemCallFilter"])
	}
	if !slices.Contains(svc["DeviceAllow"], "char-nvidia* rw") {
		t.Errorf("DeviceAllow=%q: want char-nvidia* rw, for NVML", svc["DeviceAllow"])
	}
	families, _ := u.last("Service", "RestrictAddressFamilies")
	for _, f := range []string{"AF_INET", "AF_INET6", "AF_UNIX"} {
		if !slices.Contains(strings.Fields(families), f) {
			t.Errorf("RestrictAddressFamilies=%s lacks %s", families, f)
		}
	}
	// What would break NVML or the daemon's work.
	for key, bad := range map[string][]string{
		"PrivateDevices": {"yes", "true", "1"},      // hides /dev/nvidia*
		"ProcSubset":     {"pid"},                   // hides /proc/driver/nvidia and /proc/net
		"ProtectProc":    {"invisible", "noaccess"}, // hides `ollama serve` from the attribution
		"PrivateNetwork": {"yes", "true", "1"},      // no Ollama to reach
		"IPAddressDeny":  {"any", "0.0.0.0/0 ::/0"}, // the same
	} {
		if got, ok := u.last("Service", key); ok && slices.Contains(bad, got) {
			t.Errorf("%s=%s would break the daemon (see the unit's comments)", key, got)
		}
	}

	// The stop timeout outlasts the daemon's own shutdown.
	stop, ok := u.last("Service", "TimeoutStopSec")
	if !ok {
		t.Fatal("no TimeoutStopSec")
	}
	if d, floor := systemdSeconds(t, stop), config.DefaultShutdownTimeout+httpShutdownBound; d <= floor {
		t.Errorf("TimeoutStopSec=%s: want more than global.shutdown_timeout's default plus the HTTP shutdown (%s)", stop, floor)
	}

	// systemd's own verdict, where its tools are installed.
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not installed: unit not verified by systemd (Debian package systemd)")
		return
	}
	// verify needs ExecStart's binary: the one just built, in a copy.
	b, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	copyFile := filepath.Join(t.TempDir(), "chimeraforge.service")
	if err := os.WriteFile(copyFile, []byte(strings.ReplaceAll(string(b), "ExecStart="+argv[0], "ExecStart="+bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(t.Context(), analyze, "verify", "--man=no", copyFile).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		// verify exits 0 on unknown keys and bad values, saying so: any
		// output is a failure.
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err = exec.CommandContext(t.Context(), analyze, "security", "--offline=yes", "--no-pager", copyFile).CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for \S+: (\d+\.\d+)`).FindSubmatch(out)
	if err != nil || m == nil {
		t.Logf("systemd-analyze security --offline (systemd ≥ 250) gave no score: %v", err)
		return
	}
	if score, _ := strconv.ParseFloat(string(m[1]), 64); score > 2.5 {
		t.Errorf("systemd-analyze security: exposure %s, want at most 2.5 (it was 1.9)\n%s", m[1], out)
	}
}
