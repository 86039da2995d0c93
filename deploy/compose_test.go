package deploy

// Checks of the container image (../Dockerfile, ../.dockerignore) and the
// compose stack (compose/) that need no Docker: each file is parsed and
// checked against the others and against the command line they drive.
// Not verified here, for want of a Docker engine: that the image builds and
// runs (base images and tags resolve, the cgo build links, distroless finds
// the toolkit's libnvidia-ml.so.1), that `docker compose config` accepts the
// file as Compose does (merge keys, profiles, GPU reservations), and that
// `docker compose up` brings the stack to healthy. TestComposeSimStack runs
// the sim profile's processes outside containers instead.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chimeraforge/chimeraforge/internal/testtool"
	"go.yaml.in/yaml/v3"
)

const (
	composeDir  = "compose"
	composeFile = "compose/docker-compose.yaml"
	// daemonService is the daemon's service name: Prometheus scrapes it by it.
	daemonService = "chimeraforge"
)

// --- the command line, read from its source ---------------------------------

// cfDefaultPort is the port of cmd/chimeraforge's DefaultListenAddress, read
// from its source (package main cannot be imported).
func cfDefaultPort(t *testing.T) string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "../cmd/chimeraforge/main.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, s := range gd.Specs {
			vs := s.(*ast.ValueSpec)
			for i, n := range vs.Names {
				if n.Name != "DefaultListenAddress" || i >= len(vs.Values) {
					continue
				}
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					t.Fatalf("DefaultListenAddress is not a string literal")
				}
				addr, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				_, port, err := net.SplitHostPort(addr)
				if err != nil {
					t.Fatalf("DefaultListenAddress %q: %v", addr, err)
				}
				return port
			}
		}
	}
	t.Fatal("no const DefaultListenAddress in ../cmd/chimeraforge/main.go")
	return ""
}

// cfBinary builds the chimeraforge command into a temporary directory.
func cfBinary(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go not on PATH: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "chimeraforge")
	cmd := exec.CommandContext(t.Context(), goBin, "build", "-o", bin, "../cmd/chimeraforge")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// cfCommand runs the built command without the CHIMERAFORGE_ variables of the
// environment, which it would read as configuration.
func cfCommand(ctx context.Context, bin string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CHIMERAFORGE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	return cmd
}

// --- Dockerfile ---------------------------------------------------------------

type dockerInstr struct {
	cmd  string // upper case
	args string // the rest of the logical line
	line int
}

type dockerStage struct {
	name   string
	image  string // ARGs substituted
	instrs []dockerInstr
}

// parseDockerfile reads the instructions of a Dockerfile (comments dropped,
// continuation lines joined) into stages; FROM images have the global ARGs'
// defaults substituted.
func parseDockerfile(t *testing.T, file string) (stages []dockerStage, globalArgs map[string]string) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var instrs []dockerInstr
	var cur strings.Builder
	start, n := 0, 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur.Len() == 0) {
			continue
		}
		if cur.Len() == 0 {
			start = n
		}
		if rest, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(rest + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
		instrs = append(instrs, dockerInstr{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args), line: start})
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	globalArgs = map[string]string{}
	argRef := regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?`)
	for _, in := range instrs {
		switch {
		case in.cmd == "ARG" && len(stages) == 0:
			k, v, _ := strings.Cut(in.args, "=")
			globalArgs[k] = v
		case in.cmd == "FROM":
			fields := strings.Fields(in.args)
			st := dockerStage{image: argRef.ReplaceAllStringFunc(fields[0], func(ref string) string {
				return globalArgs[argRef.FindStringSubmatch(ref)[1]]
			})}
			if len(fields) == 3 && strings.EqualFold(fields[1], "AS") {
				st.name = fields[2]
			}
			stages = append(stages, st)
		case len(stages) > 0:
			stages[len(stages)-1].instrs = append(stages[len(stages)-1].instrs, in)
		}
	}
	return stages, globalArgs
}

// execForm decodes an instruction's JSON (exec) form.
func execForm(t *testing.T, in dockerInstr) []string {
	t.Helper()
	var argv []string
	if err := json.Unmarshal([]byte(in.args), &argv); err != nil || len(argv) == 0 {
		t.Fatalf("Dockerfile:%d: %s %s: want the JSON exec form: %v", in.line, in.cmd, in.args, err)
	}
	return argv
}

// lastInstr is the stage's last instruction cmd (the one in effect).
func (s dockerStage) lastInstr(cmd string) (dockerInstr, bool) {
	for i := len(s.instrs) - 1; i >= 0; i-- {
		if s.instrs[i].cmd == cmd {
			return s.instrs[i], true
		}
	}
	return dockerInstr{}, false
}

// imagePinned says what is wrong with an image reference's pin, if anything:
// a digest, or a tag that names a version (not latest).
func imagePinned(ref string) string {
	if strings.Contains(ref, "@sha256:") {
		return ""
	}
	name := ref[strings.LastIndex(ref, "/")+1:]
	_, tag, ok := strings.Cut(name, ":")
	switch {
	case !ok:
		return "no tag (latest)"
	case tag == "latest":
		return "tag latest"
	}
	return ""
}

// imageEntrypointCmd is the runtime stage's ENTRYPOINT and CMD.
func imageEntrypointCmd(t *testing.T) (entrypoint, cmd []string) {
	t.Helper()
	stages, _ := parseDockerfile(t, "../Dockerfile")
	final := stages[len(stages)-1]
	ep, ok := final.lastInstr("ENTRYPOINT")
	if !ok {
		t.Fatal("Dockerfile: no ENTRYPOINT in the final stage")
	}
	c, ok := final.lastInstr("CMD")
	if !ok {
		t.Fatal("Dockerfile: no CMD in the final stage")
	}
	return execForm(t, ep), execForm(t, c)
}

// flagValue is the value of --name=VALUE or --name VALUE in argv.
func flagValue(argv []string, name string) (string, bool) {
	for i, a := range argv {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
		if a == "--"+name && i+1 < len(argv) {
			return argv[i+1], true
		}
	}
	return "", false
}

// flagValues is every value of a repeatable --name=VALUE.
func flagValues(argv []string, name string) []string {
	var out []string
	for _, a := range argv {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			out = append(out, v)
		}
	}
	return out
}

func TestDockerfile(t *testing.T) {
	stages, globalArgs := parseDockerfile(t, "../Dockerfile")
	if len(stages) < 2 {
		t.Fatalf("%d stages, want a build stage and a runtime stage", len(stages))
	}
	port := cfDefaultPort(t)

	// Base images: pinned, and the build's Debian the runtime's (cgo links
	// glibc dynamically), with a Go no older than go.mod asks for.
	for _, s := range stages {
		if why := imagePinned(s.image); why != "" {
			t.Errorf("FROM %s: %s; pin a version tag (CI adds the digest)", s.image, why)
		}
	}
	build, final := stages[0], stages[len(stages)-1]
	if !strings.Contains(build.image, "bookworm") || !strings.Contains(final.image, "debian12") {
		t.Errorf("build on %s, run on %s: want bookworm and distroless debian12 (one glibc)", build.image, final.image)
	}
	if !strings.Contains(final.image, "distroless/base-") {
		t.Errorf("runtime %s: want distroless base (glibc for cgo), not static", final.image)
	}
	gomod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	modGo := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
	imgGo := regexp.MustCompile(`golang:(\d+\.\d+)`).FindStringSubmatch(build.image)
	if modGo == nil || imgGo == nil || versionLess(imgGo[1], string(modGo[1])) {
		t.Errorf("build image %s: want Go >= go.mod's %s", build.image, modGo)
	}
	if _, ok := globalArgs["GO_IMAGE"]; !ok {
		t.Errorf("no global ARG GO_IMAGE: CI passes digests through it")
	}

	// The build: reproducible, cgo on.
	var buildRun string
	for _, in := range build.instrs {
		if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
			buildRun = in.args
		}
		if in.cmd == "ENV" && strings.Contains(in.args, "CGO_ENABLED=0") {
			t.Errorf("Dockerfile:%d: cgo off; NVML needs it", in.line)
		}
	}
	for _, want := range []string{"-trimpath", "-buildvcs=false", "SOURCE_DATE_EPOCH", ".Version=${VERSION}", ".Revision=${REVISION}", ".BuildDate=${build_date}", "-o /out/chimeraforge ./cmd/chimeraforge"} {
		if !strings.Contains(buildRun, want) {
			t.Errorf("go build step lacks %q:\n%s", want, buildRun)
		}
	}
	if env, _ := build.lastInstr("ENV"); !strings.Contains(env.args, "CGO_ENABLED=1") {
		t.Errorf("build stage: want ENV CGO_ENABLED=1, got %q", env.args)
	}

	// COPY --from names an earlier stage.
	for i, s := range stages {
		for _, in := range s.instrs {
			if in.cmd != "COPY" {
				continue
			}
			m := regexp.MustCompile(`--from=(\S+)`).FindStringSubmatch(in.args)
			if m == nil {
				continue
			}
			found := slices.ContainsFunc(stages[:i], func(p dockerStage) bool { return p.name == m[1] })
			if idx, err := strconv.Atoi(m[1]); err == nil && idx < i {
				found = true
			}
			if !found {
				t.Errorf("Dockerfile:%d: COPY --from=%s names no earlier stage", in.line, m[1])
			}
		}
	}

	// Runtime: numeric non-root user, the binary as entrypoint, the default
	// port, a health check through the binary itself.
	user, ok := final.lastInstr("USER")
	if !ok {
		t.Fatal("final stage: no USER")
	}
	for _, id := range strings.Split(user.args, ":") {
		if n, err := strconv.Atoi(id); err != nil || n == 0 {
			t.Errorf("USER %s: want numeric and not 0 (runAsNonRoot checks numbers)", user.args)
		}
	}
	entrypoint, cmd := imageEntrypointCmd(t)
	if len(entrypoint) != 1 || entrypoint[0] != "/usr/local/bin/chimeraforge" {
		t.Errorf("ENTRYPOINT %q: want [/usr/local/bin/chimeraforge]", entrypoint)
	}
	if copyIn, _ := final.lastInstr("COPY"); !strings.HasSuffix(copyIn.args, " "+entrypoint[0]) {
		t.Errorf("final stage's COPY %q does not install %s", copyIn.args, entrypoint[0])
	}
	if cfg, ok := flagValue(cmd, "config"); len(cmd) == 0 || cmd[0] != "run" || !ok || cfg != "/etc/chimeraforge/config.yaml" {
		t.Errorf("CMD %q: want run --config=/etc/chimeraforge/config.yaml", cmd)
	}
	expose, _ := final.lastInstr("EXPOSE")
	if !slices.Contains(strings.Fields(expose.args), port) && !slices.Contains(strings.Fields(expose.args), port+"/tcp") {
		t.Errorf("EXPOSE %s: want the default port %s", expose.args, port)
	}
	hc, ok := final.lastInstr("HEALTHCHECK")
	if !ok {
		t.Fatal("final stage: no HEALTHCHECK")
	}
	opts, probe, ok := strings.Cut(hc.args, "CMD ")
	if !ok {
		t.Fatalf("HEALTHCHECK %s: want CMD [...]", hc.args)
	}
	argv := execForm(t, dockerInstr{cmd: "CMD", args: probe, line: hc.line})
	if argv[0] != entrypoint[0] || len(argv) < 2 || argv[1] != "health" {
		t.Errorf("HEALTHCHECK CMD %q: want %s health", argv, entrypoint[0])
	}
	// The probe's own --timeout (3s by default) ends before Docker's.
	probeTimeout := 3 * time.Second
	if v, ok := flagValue(argv, "timeout"); ok {
		if probeTimeout, err = time.ParseDuration(v); err != nil {
			t.Fatal(err)
		}
	}
	m := regexp.MustCompile(`--timeout=(\S+)`).FindStringSubmatch(opts)
	if m == nil {
		t.Errorf("HEALTHCHECK %s: no --timeout", opts)
	} else if d, err := time.ParseDuration(m[1]); err != nil || d <= probeTimeout {
		t.Errorf("HEALTHCHECK --timeout=%s: want more than the probe's own %s", m[1], probeTimeout)
	}
	labels := ""
	for _, in := range final.instrs {
		if in.cmd == "LABEL" {
			labels += in.args
		}
	}
	for _, l := range []string{"org.opencontainers.image.source", "org.opencontainers.image.version", "org.opencontainers.image.revision"} {
		if !strings.Contains(labels, l+"=") {
			t.Errorf("no LABEL %s", l)
		}
	}
}

// versionLess compares dotted numeric versions.
func versionLess(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		x, _ := strconv.Atoi(as[i])
		y, _ := strconv.Atoi(bs[i])
		if x != y {
			return x < y
		}
	}
	return len(as) < len(bs)
}

// dockerignoreExcludes says whether a .dockerignore pattern list excludes a
// slash-separated path of the build context: a pattern matches the path or
// one of its parent directories; "**/" matches any number of directories.
func dockerignoreExcludes(patterns []string, p string) bool {
	parts := strings.Split(p, "/")
	for i := range parts {
		prefix := strings.Join(parts[:i+1], "/")
		for _, pat := range patterns {
			if globMatch(pat, prefix) {
				return true
			}
		}
	}
	return false
}

func globMatch(pat, p string) bool {
	if rest, ok := strings.CutPrefix(pat, "**/"); ok {
		parts := strings.Split(p, "/")
		for i := range parts {
			if globMatch(rest, strings.Join(parts[i:], "/")) {
				return true
			}
		}
		return false
	}
	ok, _ := path.Match(pat, p)
	return ok
}

// The build context keeps every file `go build ./cmd/chimeraforge` reads and
// drops the repository's history and local outputs.
func TestDockerignore(t *testing.T) {
	b, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "!") {
			t.Errorf(".dockerignore: %q: no exceptions, please (this test's matcher does not follow them)", line)
		}
		patterns = append(patterns, path.Clean(strings.TrimPrefix(line, "/")))
	}
	for _, p := range []string{".git", ".git/config", "chimeraforge", "daemon.test", "cmd/chimeraforge/cover.out"} {
		if !dockerignoreExcludes(patterns, p) {
			t.Errorf(".dockerignore keeps %s", p)
		}
	}

	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go not on PATH: %v", err)
	}
	cmd := exec.CommandContext(t.Context(), goBin, "list", "-deps", "-json=Dir,Module,GoFiles,CgoFiles,CFiles,HFiles,SFiles,SysoFiles,EmbedFiles", "./cmd/chimeraforge")
	cmd.Dir = ".."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	needed := []string{"go.mod", "go.sum"}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var pkg struct {
			Dir    string
			Module *struct{ Main bool }
			GoFiles, CgoFiles, CFiles, HFiles, SFiles, SysoFiles,
			EmbedFiles []string
		}
		if err := dec.Decode(&pkg); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if pkg.Module == nil || !pkg.Module.Main {
			continue
		}
		rel, err := filepath.Rel(root, pkg.Dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, files := range [][]string{pkg.GoFiles, pkg.CgoFiles, pkg.CFiles, pkg.HFiles, pkg.SFiles, pkg.SysoFiles, pkg.EmbedFiles} {
			for _, f := range files {
				needed = append(needed, filepath.ToSlash(filepath.Join(rel, f)))
			}
		}
	}
	if len(needed) < 10 || !slices.Contains(needed, "config/examples/demo.yaml") {
		t.Fatalf("go list found %d files (%v): expected the daemon's sources and the embedded demo", len(needed), needed)
	}
	for _, f := range needed {
		if dockerignoreExcludes(patterns, f) {
			t.Errorf(".dockerignore excludes %s, which the build reads", f)
		}
	}
}

// --- compose ------------------------------------------------------------------

type composeSpec struct {
	Name     string                    `yaml:"name"`
	XImage   map[string]any            `yaml:"x-chimeraforge"`
	XOllama  map[string]any            `yaml:"x-ollama"`
	XSim     map[string]any            `yaml:"x-sim"`
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image string `yaml:"image"`
	Build *struct {
		Context    string `yaml:"context"`
		Dockerfile string `yaml:"dockerfile"`
	} `yaml:"build"`
	Profiles    []string          `yaml:"profiles"`
	Restart     string            `yaml:"restart"`
	ReadOnly    bool              `yaml:"read_only"`
	CapDrop     []string          `yaml:"cap_drop"`
	SecurityOpt []string          `yaml:"security_opt"`
	Entrypoint  []string          `yaml:"entrypoint"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []string          `yaml:"volumes"`
	Ports       []string          `yaml:"ports"`
	DependsOn   yaml.Node         `yaml:"depends_on"`
	Networks    map[string]struct {
		Aliases []string `yaml:"aliases"`
	} `yaml:"networks"`
	Healthcheck *struct {
		Test        []string `yaml:"test"`
		Interval    string   `yaml:"interval"`
		Timeout     string   `yaml:"timeout"`
		StartPeriod string   `yaml:"start_period"`
		Retries     int      `yaml:"retries"`
	} `yaml:"healthcheck"`
	Deploy struct {
		Resources struct {
			Reservations struct {
				Devices []struct {
					Driver       string   `yaml:"driver"`
					Count        any      `yaml:"count"`
					DeviceIDs    []string `yaml:"device_ids"`
					Capabilities []string `yaml:"capabilities"`
				} `yaml:"devices"`
			} `yaml:"reservations"`
		} `yaml:"resources"`
	} `yaml:"deploy"`
}

// dependsOn lists the services s depends on (short or long syntax).
func (s composeService) dependsOn(t *testing.T) []string {
	t.Helper()
	var out []string
	switch s.DependsOn.Kind {
	case 0:
	case yaml.SequenceNode:
		if err := s.DependsOn.Decode(&out); err != nil {
			t.Fatal(err)
		}
	case yaml.MappingNode:
		for i := 0; i < len(s.DependsOn.Content); i += 2 {
			out = append(out, s.DependsOn.Content[i].Value)
		}
	default:
		t.Fatalf("depends_on: unexpected YAML")
	}
	return out
}

// activeIn says whether the service runs under profile (always, without
// profiles).
func (s composeService) activeIn(profile string) bool {
	return len(s.Profiles) == 0 || slices.Contains(s.Profiles, profile)
}

// names is every name the service answers to on the default network.
func (s composeService) names(service string) []string {
	return append([]string{service}, s.Networks["default"].Aliases...)
}

type composeMount struct{ source, target string }

// binds is the service's bind mounts, by container path; named volumes are
// checked against the top-level volumes.
func (s composeService) binds(t *testing.T, spec composeSpec) map[string]composeMount {
	t.Helper()
	out := map[string]composeMount{}
	for _, v := range s.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 || len(parts) > 3 {
			t.Errorf("volume %q: want SOURCE:TARGET[:MODE]", v)
			continue
		}
		if !strings.HasPrefix(parts[0], ".") && !strings.HasPrefix(parts[0], "/") {
			if _, ok := spec.Volumes[parts[0]]; !ok {
				t.Errorf("volume %q: named volume %s not declared under volumes:", v, parts[0])
			}
			continue
		}
		if len(parts) != 3 || parts[2] != "ro" {
			t.Errorf("bind mount %q: want read-only (:ro)", v)
		}
		out[parts[1]] = composeMount{source: parts[0], target: parts[1]}
	}
	return out
}

// containerPorts is the container side of the service's published ports.
func (s composeService) containerPorts() []string {
	var out []string
	for _, p := range s.Ports {
		i := strings.LastIndex(p, ":")
		out = append(out, strings.TrimSuffix(p[i+1:], "/tcp"))
	}
	return out
}

func readCompose(t *testing.T) composeSpec {
	t.Helper()
	var spec composeSpec
	readYAML(t, composeFile, &spec)
	if len(spec.Services) == 0 {
		t.Fatal("no services")
	}
	return spec
}

// composeDaemonConfig is what the stack's daemon configuration says about
// its targets and models.
type composeDaemonConfig struct {
	hosts       map[string]string // host → port of every target URL
	numParallel []int
	models      []string
}

func readComposeDaemonConfig(t *testing.T) composeDaemonConfig {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(composeDir, "chimeraforge.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Targets []struct {
			URL         string `yaml:"url"`
			NumParallel int    `yaml:"num_parallel"`
		} `yaml:"targets"`
		Agents []struct {
			Model string `yaml:"model"`
		} `yaml:"agents"`
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	out := composeDaemonConfig{hosts: map[string]string{}}
	for _, tg := range cfg.Targets {
		host, port, err := net.SplitHostPort(strings.TrimPrefix(strings.TrimRight(tg.URL, "/"), "http://"))
		if err != nil {
			t.Fatalf("target URL %q: want http://HOST:PORT: %v", tg.URL, err)
		}
		out.hosts[host] = port
		out.numParallel = append(out.numParallel, tg.NumParallel)
	}
	for _, a := range cfg.Agents {
		if !slices.Contains(out.models, a.Model) {
			out.models = append(out.models, a.Model)
		}
	}
	if len(out.hosts) != 2 || len(out.models) == 0 {
		t.Fatalf("chimeraforge.yaml: targets %v, models %v: want two targets and some models", out.hosts, out.models)
	}
	return out
}

// Every bind-mounted file or directory exists where the compose file says,
// and the build context holds the Dockerfile.
func TestComposePaths(t *testing.T) {
	spec := readCompose(t)
	for name, s := range spec.Services {
		for _, m := range s.binds(t, spec) {
			if _, err := os.Stat(filepath.Join(composeDir, m.source)); err != nil {
				t.Errorf("%s: bind mount %s → %s: %v", name, m.source, m.target, err)
			}
		}
		if s.Build != nil {
			df := filepath.Join(composeDir, s.Build.Context, s.Build.Dockerfile)
			if _, err := os.Stat(df); err != nil {
				t.Errorf("%s: build %s: %v", name, df, err)
			}
			if _, err := os.Stat(filepath.Join(composeDir, s.Build.Context, "go.mod")); err != nil {
				t.Errorf("%s: build context %s is not the repository root", name, s.Build.Context)
			}
		}
		for _, d := range s.dependsOn(t) {
			if _, ok := spec.Services[d]; !ok {
				t.Errorf("%s depends on %s, which is no service", name, d)
			}
		}
	}
}

// Images: pinned, and Ollama at the version the test suite builds.
func TestComposeImages(t *testing.T) {
	spec := readCompose(t)
	script, err := os.ReadFile("../scripts/ollama-test-server.sh")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^OLLAMA_VERSION=v?(\S+)$`).FindSubmatch(script)
	if m == nil {
		t.Fatal("scripts/ollama-test-server.sh: no OLLAMA_VERSION=")
	}
	ollamaImage := "ollama/ollama:" + string(m[1])
	for name, s := range spec.Services {
		switch {
		case s.Image == "":
			t.Errorf("%s: no image", name)
		case s.Build != nil:
			// Built here: the Dockerfile's own pins apply.
		case strings.HasPrefix(s.Image, "ollama/ollama"):
			if s.Image != ollamaImage {
				t.Errorf("%s: image %s, want %s (OLLAMA_VERSION in scripts/ollama-test-server.sh)", name, s.Image, ollamaImage)
			}
		default:
			if why := imagePinned(s.Image); why != "" {
				t.Errorf("%s: image %s: %s", name, s.Image, why)
			}
		}
	}
}

// The daemon: built from the Dockerfile, its configuration mounted where the
// image's CMD reads it, its default port published, the image's health check.
func TestComposeDaemon(t *testing.T) {
	spec := readCompose(t)
	d, ok := spec.Services[daemonService]
	if !ok {
		t.Fatalf("no service %s", daemonService)
	}
	if d.Build == nil || len(d.Profiles) != 0 {
		t.Errorf("%s: build %v, profiles %v: want built here and in every profile", daemonService, d.Build, d.Profiles)
	}
	entrypoint, cmd := imageEntrypointCmd(t)
	if d.Command != nil {
		cmd = d.Command
	}
	if d.Entrypoint != nil {
		t.Errorf("%s: entrypoint %q overrides the image's %q", daemonService, d.Entrypoint, entrypoint)
	}
	cfgPath, _ := flagValue(cmd, "config")
	mount, ok := d.binds(t, spec)[cfgPath]
	if !ok || filepath.Clean(mount.source) != "chimeraforge.yaml" {
		t.Errorf("%s: --config=%s (from %q) is not the bind mount of ./chimeraforge.yaml (mounts %v)", daemonService, cfgPath, cmd, d.Volumes)
	}
	port := cfDefaultPort(t)
	if addr, ok := flagValue(cmd, "web.listen-address"); ok && !strings.HasSuffix(addr, ":"+port) {
		t.Errorf("%s: --web.listen-address=%s, want port %s", daemonService, addr, port)
	}
	if !slices.Contains(d.containerPorts(), port) {
		t.Errorf("%s: ports %v do not publish the daemon's port %s", daemonService, d.Ports, port)
	}
	if d.Healthcheck != nil {
		t.Errorf("%s: a healthcheck of its own; the image's (chimeraforge health) should apply", daemonService)
	}
	if !d.ReadOnly || !slices.Contains(d.CapDrop, "ALL") {
		t.Errorf("%s: read_only %v, cap_drop %v: want a read-only root and no capabilities", daemonService, d.ReadOnly, d.CapDrop)
	}
	for _, p := range spec.Services {
		for _, hp := range p.Ports {
			if !strings.HasPrefix(hp, "127.0.0.1:") {
				t.Errorf("port %q is published beyond loopback", hp)
			}
		}
	}
}

// Prometheus scrapes the daemon by its service name and port every 15s, the
// Grafana datasource's timeInterval, and loads the generated rules, mounted
// where prometheus.yml looks for them; promtool checks the result laid out
// as in the container.
func TestComposePrometheus(t *testing.T) {
	spec := readCompose(t)
	p, ok := spec.Services["prometheus"]
	if !ok {
		t.Fatal("no service prometheus")
	}
	cfgPath, _ := flagValue(p.Command, "config.file")
	binds := p.binds(t, spec)
	cfgMount, ok := binds[cfgPath]
	if !ok || filepath.Clean(cfgMount.source) != "prometheus.yml" {
		t.Fatalf("prometheus: --config.file=%q is not the bind mount of ./prometheus.yml", cfgPath)
	}
	var prom struct {
		Global struct {
			ScrapeInterval     string `yaml:"scrape_interval"`
			EvaluationInterval string `yaml:"evaluation_interval"`
		} `yaml:"global"`
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	readYAML(t, filepath.Join(composeDir, "prometheus.yml"), &prom)

	var ds struct {
		Datasources []struct {
			URL      string `yaml:"url"`
			JSONData struct {
				TimeInterval string `yaml:"timeInterval"`
			} `yaml:"jsonData"`
		} `yaml:"datasources"`
	}
	b, err := os.ReadFile("grafana/provisioning/datasources/chimeraforge.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &ds); err != nil || len(ds.Datasources) != 1 {
		t.Fatalf("datasources: %v", err)
	}
	if ti := ds.Datasources[0].JSONData.TimeInterval; prom.Global.ScrapeInterval != ti || ti != "15s" {
		t.Errorf("scrape_interval %q, datasource timeInterval %q: want both 15s", prom.Global.ScrapeInterval, ti)
	}
	if prom.Global.EvaluationInterval != prom.Global.ScrapeInterval {
		t.Errorf("evaluation_interval %q, want the scrape interval", prom.Global.EvaluationInterval)
	}

	want := net.JoinHostPort(daemonService, cfDefaultPort(t))
	var scraped bool
	for _, sc := range prom.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			scraped = scraped || slices.Contains(st.Targets, want)
		}
	}
	if !scraped {
		t.Errorf("prometheus.yml scrapes no %s: %+v", want, prom.ScrapeConfigs)
	}

	// Rule files are relative to the configuration file; each is a mount of
	// the generated rules.
	if len(prom.RuleFiles) != 1 {
		t.Fatalf("rule_files %v: want the generated rules, once", prom.RuleFiles)
	}
	for _, rf := range prom.RuleFiles {
		if filepath.IsAbs(rf) {
			t.Errorf("rule_files %s: want it relative to prometheus.yml, so promtool checks it offline", rf)
		}
		m, ok := binds[path.Join(path.Dir(cfgPath), rf)]
		if !ok || filepath.Clean(filepath.Join(composeDir, m.source)) != filepath.Clean("../dashboards/generated/chimeraforge.rules.yml") {
			t.Errorf("rule file %s: not a mount of dashboards/generated/chimeraforge.rules.yml (mounts %v)", rf, p.Volumes)
		}
	}

	// The Grafana datasource reaches this service on its port.
	u := strings.TrimPrefix(ds.Datasources[0].URL, "http://")
	if host, port, err := net.SplitHostPort(u); err != nil || host != "prometheus" || !slices.Contains(p.containerPorts(), port) {
		t.Errorf("datasource URL %s: want http://prometheus:PORT with the port the service publishes (%v)", ds.Datasources[0].URL, p.Ports)
	}

	// promtool, on the files laid out as the container sees them.
	promtool := testtool.LookPath(t, "promtool", "prometheus")
	dir := t.TempDir()
	for target, m := range binds {
		rel, err := filepath.Rel(path.Dir(cfgPath), target)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(composeDir, m.source))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(rel)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, rel), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.CommandContext(t.Context(), promtool, "check", "config", filepath.Join(dir, path.Base(cfgPath))).CombinedOutput()
	if err != nil {
		t.Errorf("promtool check config: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "rule files found") {
		t.Errorf("promtool check config found no rule files:\n%s", out)
	}
}

// Grafana: the provisioning directories where Grafana reads them, and the
// generated dashboards where the file provider looks.
func TestComposeGrafana(t *testing.T) {
	spec := readCompose(t)
	g, ok := spec.Services["grafana"]
	if !ok {
		t.Fatal("no service grafana")
	}
	var prov struct {
		Providers []struct {
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	b, err := os.ReadFile("grafana/provisioning/dashboards/chimeraforge.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &prov); err != nil || len(prov.Providers) != 1 {
		t.Fatalf("dashboard provider: %v", err)
	}
	binds := g.binds(t, spec)
	for target, source := range map[string]string{
		"/etc/grafana/provisioning/datasources": "grafana/provisioning/datasources",
		"/etc/grafana/provisioning/dashboards":  "grafana/provisioning/dashboards",
		prov.Providers[0].Options.Path:          "../dashboards/generated",
	} {
		m, ok := binds[target]
		if !ok {
			t.Errorf("grafana: nothing mounted at %s", target)
			continue
		}
		if got := filepath.Clean(filepath.Join(composeDir, m.source)); got != filepath.Clean(source) {
			t.Errorf("grafana: %s mounts %s, want %s", target, got, source)
		}
	}
	if !slices.Contains(g.containerPorts(), "3000") {
		t.Errorf("grafana: ports %v, want 3000", g.Ports)
	}
}

// gpu-metrics.yaml only adds a GPU to the daemon, for NVML.
func TestComposeGPUMetricsOverride(t *testing.T) {
	var override composeSpec
	readYAML(t, filepath.Join(composeDir, "gpu-metrics.yaml"), &override)
	if len(override.Services) != 1 {
		t.Fatalf("services %v: want the daemon only", override.Services)
	}
	d, ok := override.Services[daemonService]
	if !ok {
		t.Fatalf("no service %s", daemonService)
	}
	devs := d.Deploy.Resources.Reservations.Devices
	if len(devs) != 1 || devs[0].Driver != "nvidia" || !slices.Contains(devs[0].Capabilities, "gpu") {
		t.Errorf("device reservations %+v, want one nvidia gpu", devs)
	}
	d.Deploy = composeService{}.Deploy
	if d.Image != "" || d.Build != nil || d.Command != nil || d.Volumes != nil || d.Ports != nil || d.Environment != nil {
		t.Errorf("%s: the override changes more than the device reservation: %+v", daemonService, d)
	}
}

// Each profile serves every target of the daemon's configuration under its
// host name and port, with the models the configuration asks for; nothing
// that runs always depends on what runs in one profile only.
func TestComposeProfiles(t *testing.T) {
	spec := readCompose(t)
	cfg := readComposeDaemonConfig(t)
	for _, profile := range []string{"gpu", "sim"} {
		t.Run(profile, func(t *testing.T) {
			providers := map[string]string{} // host → service
			hostPorts := map[string]string{}
			for name, s := range spec.Services {
				if !s.activeIn(profile) {
					continue
				}
				for _, hp := range s.Ports {
					if other, dup := hostPorts[hp[:strings.LastIndex(hp, ":")]]; dup {
						t.Errorf("%s and %s publish the same host port (%s)", name, other, hp)
					}
					hostPorts[hp[:strings.LastIndex(hp, ":")]] = name
				}
				for _, n := range s.names(name) {
					if _, ok := cfg.hosts[n]; ok {
						if other, dup := providers[n]; dup {
							t.Errorf("%s and %s both answer to %s", name, other, n)
						}
						providers[n] = name
					}
				}
				if len(s.Profiles) == 0 {
					for _, d := range s.dependsOn(t) {
						if len(spec.Services[d].Profiles) != 0 {
							t.Errorf("%s runs in every profile but depends on %s, which does not", name, d)
						}
					}
				}
			}
			for host, port := range cfg.hosts {
				name, ok := providers[host]
				if !ok {
					t.Errorf("no service answers to %s", host)
					continue
				}
				s := spec.Services[name]
				switch {
				case strings.HasPrefix(s.Image, "ollama/ollama"):
					checkOllamaService(t, name, s, port, cfg)
				case len(s.Command) > 0 && s.Command[0] == "sim":
					checkSimService(t, name, s, port, cfg)
				default:
					t.Errorf("%s answers to %s but is neither Ollama nor `chimeraforge sim`", name, host)
				}
			}
		})
	}

	// The gpu profile's one-shot pull: every model into every server.
	pull, ok := spec.Services["ollama-pull"]
	if !ok {
		t.Fatal("no service ollama-pull")
	}
	hosts, models := strings.Fields(pull.Environment["PULL_HOSTS"]), strings.Fields(pull.Environment["PULL_MODELS"])
	for host := range cfg.hosts {
		if !slices.Contains(hosts, host) || !slices.Contains(pull.dependsOn(t), host) {
			t.Errorf("ollama-pull: PULL_HOSTS %v, depends_on %v: want %s in both", hosts, pull.dependsOn(t), host)
		}
	}
	for _, m := range cfg.models {
		if !slices.Contains(models, m) {
			t.Errorf("ollama-pull: PULL_MODELS %v lacks %s, which chimeraforge.yaml uses", models, m)
		}
	}
	if !slices.Equal(pull.Profiles, []string{"gpu"}) || !strings.HasPrefix(pull.Image, "ollama/ollama:") {
		t.Errorf("ollama-pull: profiles %v, image %s: want the gpu profile's Ollama image", pull.Profiles, pull.Image)
	}
}

func checkOllamaService(t *testing.T, name string, s composeService, port string, cfg composeDaemonConfig) {
	t.Helper()
	if h := s.Environment["OLLAMA_HOST"]; !strings.HasSuffix(h, ":"+port) || !strings.HasPrefix(h, "0.0.0.0:") {
		t.Errorf("%s: OLLAMA_HOST %q, want 0.0.0.0:%s", name, h, port)
	}
	if n, err := strconv.Atoi(s.Environment["OLLAMA_NUM_PARALLEL"]); err != nil || !slices.Contains(cfg.numParallel, n) {
		t.Errorf("%s: OLLAMA_NUM_PARALLEL %q, want the targets' num_parallel %v", name, s.Environment["OLLAMA_NUM_PARALLEL"], cfg.numParallel)
	}
	devs := s.Deploy.Resources.Reservations.Devices
	if len(devs) != 1 || devs[0].Driver != "nvidia" || !slices.Contains(devs[0].Capabilities, "gpu") {
		t.Errorf("%s: device reservations %+v, want one nvidia gpu", name, devs)
	}
	if !slices.Contains(s.Profiles, "gpu") {
		t.Errorf("%s: profiles %v, want gpu", name, s.Profiles)
	}
	if s.Healthcheck == nil {
		t.Errorf("%s: no healthcheck (ollama-pull waits for it)", name)
	}
}

func checkSimService(t *testing.T, name string, s composeService, port string, cfg composeDaemonConfig) {
	t.Helper()
	if s.Build == nil || s.Deploy.Resources.Reservations.Devices != nil {
		t.Errorf("%s: want the image built here, no GPU", name)
	}
	if addr, _ := flagValue(s.Command, "listen-address"); addr != "0.0.0.0:"+port {
		t.Errorf("%s: --listen-address %q, want 0.0.0.0:%s", name, addr, port)
	}
	served := flagValues(s.Command, "model")
	for _, m := range cfg.models {
		if !slices.Contains(served, m) {
			t.Errorf("%s: --model %v lacks %s, which chimeraforge.yaml uses", name, served, m)
		}
	}
	if v, _ := flagValue(s.Command, "num-parallel"); !slices.Contains(cfg.numParallel, atoi(v)) {
		t.Errorf("%s: --num-parallel %q, want the targets' num_parallel %v", name, v, cfg.numParallel)
	}
	// The image's HEALTHCHECK probes the daemon's port; a simulator's must
	// probe its own.
	hc := s.Healthcheck
	if hc == nil || len(hc.Test) < 3 || hc.Test[0] != "CMD" || hc.Test[2] != "health" {
		t.Fatalf("%s: healthcheck %+v, want CMD chimeraforge health --url=…", name, hc)
	}
	if u, _ := flagValue(hc.Test[2:], "url"); u != "http://127.0.0.1:"+port+"/api/version" {
		t.Errorf("%s: healthcheck --url %q, want http://127.0.0.1:%s/api/version", name, u, port)
	}
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return n
}

// The stack's daemon configuration is valid.
func TestComposeDaemonConfigChecks(t *testing.T) {
	t.Parallel()
	bin := cfBinary(t)
	out, err := cfCommand(t.Context(), bin, "config", "check", filepath.Join(composeDir, "chimeraforge.yaml")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "OK") {
		t.Errorf("chimeraforge config check: %v\n%s", err, out)
	}
}

// The sim profile without Docker: the simulators as the compose file runs
// them (on loopback ports instead of their network names, and faster), the
// daemon with the stack's configuration pointed at them. Each target serves
// successful requests for every model, and `chimeraforge health` sees the
// daemon ready.
func TestComposeSimStack(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts three processes for a few seconds")
	}
	spec := readCompose(t)
	cfg := readComposeDaemonConfig(t)
	bin := cfBinary(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	start := func(name string, args ...string) {
		cmd := cfCommand(ctx, bin, args...)
		logf, err := os.Create(filepath.Join(t.TempDir(), name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
		cmd.WaitDelay = 10 * time.Second
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Signal(os.Interrupt)
			_ = cmd.Wait()
			_ = logf.Close()
			if t.Failed() {
				b, _ := os.ReadFile(logf.Name())
				t.Logf("%s log:\n%s", name, b)
			}
		})
	}

	// The targets, in chimeraforge.yaml's order, served by the sim profile.
	var raw struct {
		Targets []struct {
			URL string `yaml:"url"`
		} `yaml:"targets"`
	}
	b, err := os.ReadFile(filepath.Join(composeDir, "chimeraforge.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	daemonArgs := []string{"run", "--config=" + filepath.Join(composeDir, "chimeraforge.yaml"),
		"--set", "workloads.0.calibration.at_start=false"}
	for i, tg := range raw.Targets {
		host, _, _ := net.SplitHostPort(strings.TrimPrefix(tg.URL, "http://"))
		var sim []string
		for name, s := range spec.Services {
			if s.activeIn("sim") && slices.Contains(s.names(name), host) {
				sim = s.Command
			}
		}
		if sim == nil {
			t.Fatalf("no sim service answers to %s", host)
		}
		addr := freeLoopbackAddr(t)
		args := []string{}
		for _, a := range sim {
			if strings.HasPrefix(a, "--listen-address=") {
				a = "--listen-address=" + addr
			}
			args = append(args, a)
		}
		start("sim-"+host, append(args, "--decode-rate=2000", "--load-delay=0s")...)
		daemonArgs = append(daemonArgs, "--set", fmt.Sprintf("targets.%d.url=http://%s", i, addr))
		// Healthy, by the compose healthcheck's probe.
		waitHealthy(t, ctx, bin, "http://"+addr+"/api/version")
	}
	daemonAddr := freeLoopbackAddr(t)
	start(daemonService, append(daemonArgs, "--web.listen-address="+daemonAddr)...)
	waitHealthy(t, ctx, bin, "http://"+daemonAddr+"/readyz")
	deadline := time.Now().Add(20 * time.Second)

	// Successful requests on every target, for every model.
	re := regexp.MustCompile(`(?m)^chimeraforge_requests_total\{([^}]*)\} (\S+)$`)
	label := func(labels, name string) string {
		m := regexp.MustCompile(name + `="([^"]*)"`).FindStringSubmatch(labels)
		if m == nil {
			return ""
		}
		return m[1]
	}
	var missing []string
	for time.Now().Before(deadline) {
		body := scrapeText(t, "http://"+daemonAddr+"/metrics")
		ok := map[string]bool{}
		for _, m := range re.FindAllStringSubmatch(body, -1) {
			if label(m[1], "outcome") == "success" && m[2] != "0" {
				ok["target "+label(m[1], "target")] = true
				ok["model "+label(m[1], "model")] = true
			}
			if label(m[1], "outcome") == "error" && m[2] != "0" {
				t.Fatalf("errors against the simulators: %s", m[0])
			}
		}
		missing = missing[:0]
		for host := range cfg.hosts {
			if !ok["target "+host] {
				missing = append(missing, "target "+host)
			}
		}
		for _, m := range cfg.models {
			if !ok["model "+m] {
				missing = append(missing, "model "+m)
			}
		}
		if len(missing) == 0 {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Errorf("no successful request for %v", missing)
}

// waitHealthy runs `chimeraforge health --url=URL` until it succeeds.
func waitHealthy(t *testing.T, ctx context.Context, bin, url string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := cfCommand(ctx, bin, "health", "--url="+url).CombinedOutput()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not healthy within 20s: %s", url, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

func scrapeText(t *testing.T, url string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
