package deploy

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/chimeraforge/chimeraforge/config"
	"github.com/chimeraforge/chimeraforge/dashboards"
	"github.com/chimeraforge/chimeraforge/internal/testtool"
	"go.yaml.in/yaml/v3"
)

const kubeBase = "kubernetes/base"

// The PrometheusRule and dashboards ConfigMap in the kustomize base are
// the generated ones.
func TestKubernetesGeneratedFilesAreCurrent(t *testing.T) {
	want, err := dashboards.KubernetesFiles()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(kubeBase, "generated")
	const fix = "regenerate: go run ./cmd/chimeraforge dashboards --out dashboards/generated --kubernetes-out deploy/kubernetes/base/generated"
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if _, ok := want[e.Name()]; !ok {
			t.Errorf("%s/%s is not generated any more; delete it", dir, e.Name())
		}
	}
	for name, content := range want {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || !bytes.Equal(got, content) {
			t.Errorf("%s/%s is missing or stale (%v); %s", dir, name, err, fix)
		}
	}
}

// kustomizeBinary finds kustomize: CF_TEST_KUSTOMIZE_BIN (scripts/test.sh
// builds a pinned one), else kustomize on PATH.
func kustomizeBinary(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("CF_TEST_KUSTOMIZE_BIN"); bin != "" {
		return bin
	}
	bin, err := exec.LookPath("kustomize")
	if err != nil {
		testtool.Missing(t, "kustomize not found: set CF_TEST_KUSTOMIZE_BIN or put kustomize on PATH (scripts/test.sh builds sigs.k8s.io/kustomize/kustomize/v5)")
	}
	return bin
}

// object is one Kubernetes object of the build output, kept generic.
type object map[string]any

func (o object) kind() string { s, _ := o["kind"].(string); return s }

func (o object) name() string { return str(o, "metadata", "name") }

// get walks maps and lists (numeric keys index lists).
func get(v any, path ...string) any {
	for _, p := range path {
		switch c := v.(type) {
		case object:
			v = c[p]
		case map[string]any:
			v = c[p]
		case []any:
			i, err := strconv.Atoi(p)
			if err != nil || i >= len(c) {
				return nil
			}
			v = c[i]
		default:
			return nil
		}
	}
	return v
}

func str(v any, path ...string) string {
	s, _ := get(v, path...).(string)
	return s
}

func kustomizeBuild(t *testing.T) map[string]object {
	t.Helper()
	bin := kustomizeBinary(t)
	out, err := exec.Command(bin, "build", kubeBase).Output() //nolint:noctx // bounded by the test's timeout
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("kustomize build %s: %v\n%s", kubeBase, err, ee.Stderr)
		}
		t.Fatalf("kustomize build %s: %v", kubeBase, err)
	}
	objs := map[string]object{}
	dec := yaml.NewDecoder(bytes.NewReader(out))
	for {
		// Decoded as a plain map: yaml gives nested mappings the type of
		// the outermost one.
		var m map[string]any
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("kustomize output: %v", err)
		}
		o := object(m)
		objs[o.kind()+"/"+o.name()] = o
	}
	return objs
}

// The kustomize base builds, and its objects fit together: names, ports,
// selectors, probes, security context, the shard wiring, the configuration
// and the generated rules and dashboards.
func TestKustomizeBase(t *testing.T) {
	objs := kustomizeBuild(t)
	var keys []string
	for k := range objs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	t.Logf("kustomize build: %v", keys)

	need := func(kind, name string) object {
		t.Helper()
		if name == "" {
			for k, o := range objs {
				if strings.HasPrefix(k, kind+"/") {
					return o
				}
			}
		} else if o, ok := objs[kind+"/"+name]; ok {
			return o
		}
		t.Fatalf("no %s %q in the build (have %v)", kind, name, keys)
		return nil
	}
	sts := need("StatefulSet", "chimeraforge")
	svc := need("Service", "chimeraforge")
	sm := need("ServiceMonitor", "chimeraforge")
	np := need("NetworkPolicy", "chimeraforge")
	rule := need("PrometheusRule", "chimeraforge")
	dash := need("ConfigMap", "chimeraforge-dashboards")
	need("Namespace", "chimeraforge")

	for k, o := range objs {
		if o.kind() != "Namespace" && str(o, "metadata", "namespace") != "chimeraforge" {
			t.Errorf("%s: namespace %q, want chimeraforge", k, str(o, "metadata", "namespace"))
		}
	}

	pod := get(sts, "spec", "template")
	podLabels, _ := get(pod, "metadata", "labels").(map[string]any)
	matches := func(sel any) bool {
		m, _ := sel.(map[string]any)
		if len(m) == 0 {
			return false
		}
		for k, v := range m {
			if podLabels[k] != v {
				return false
			}
		}
		return true
	}
	if !matches(get(sts, "spec", "selector", "matchLabels")) || !matches(get(svc, "spec", "selector")) || !matches(get(np, "spec", "podSelector", "matchLabels")) {
		t.Errorf("StatefulSet, Service and NetworkPolicy selectors must all match the pod labels %v", podLabels)
	}
	svcLabels, _ := get(svc, "metadata", "labels").(map[string]any)
	for k, v := range get(sm, "spec", "selector", "matchLabels").(map[string]any) {
		if svcLabels[k] != v {
			t.Errorf("ServiceMonitor selects %s=%v; the Service has %v", k, v, svcLabels)
		}
	}
	if str(sts, "spec", "serviceName") != svc.name() || str(svc, "spec", "clusterIP") != "None" {
		t.Errorf("the StatefulSet's serviceName must be the headless Service %s", svc.name())
	}

	ctr := get(pod, "spec", "containers", "0")
	if str(ctr, "ports", "0", "name") != "metrics" || get(ctr, "ports", "0", "containerPort") != 9477 {
		t.Errorf("container port: %v, want metrics 9477 (the daemon's default listen port)", get(ctr, "ports"))
	}
	if str(svc, "spec", "ports", "0", "targetPort") != "metrics" || str(sm, "spec", "endpoints", "0", "port") != "metrics" ||
		str(np, "spec", "ingress", "0", "ports", "0", "port") != "metrics" {
		t.Error("Service targetPort, ServiceMonitor endpoint port and NetworkPolicy ingress port must all be the container port named metrics")
	}
	if str(sm, "spec", "endpoints", "0", "path") != "/metrics" {
		t.Error("ServiceMonitor path must be /metrics")
	}
	if str(ctr, "livenessProbe", "httpGet", "path") != "/healthz" || str(ctr, "readinessProbe", "httpGet", "path") != "/readyz" {
		t.Error("probes must use /healthz (liveness) and /readyz (readiness)")
	}
	args, _ := get(ctr, "args").([]any)
	if len(args) == 0 || args[0] != "run" || !slices.Contains(args, any("--web.listen-address=:9477")) {
		t.Errorf("args %v: want run … --web.listen-address=:9477", args)
	}

	// Security: non-root, read-only root, no privilege escalation, no
	// capabilities, RuntimeDefault seccomp, no service-account token.
	for _, c := range []struct {
		path []string
		want any
	}{
		{[]string{"spec", "securityContext", "runAsNonRoot"}, true},
		{[]string{"spec", "securityContext", "seccompProfile", "type"}, "RuntimeDefault"},
		{[]string{"spec", "automountServiceAccountToken"}, false},
		{[]string{"spec", "containers", "0", "securityContext", "readOnlyRootFilesystem"}, true},
		{[]string{"spec", "containers", "0", "securityContext", "allowPrivilegeEscalation"}, false},
		{[]string{"spec", "containers", "0", "securityContext", "capabilities", "drop", "0"}, "ALL"},
	} {
		if got := get(pod, c.path...); got != c.want {
			t.Errorf("pod %s = %v, want %v", strings.Join(c.path, "."), got, c.want)
		}
	}
	if uid, _ := get(pod, "spec", "securityContext", "runAsUser").(int); uid == 0 {
		t.Error("pod runAsUser must be a non-root UID")
	}

	// Scale-out: every pod is one shard; the count is the replica count.
	replicas, _ := get(sts, "spec", "replicas").(int)
	env := map[string]any{}
	for _, e := range get(ctr, "env").([]any) {
		env[str(e, "name")] = e
	}
	if got := str(env["CHIMERAFORGE_GLOBAL__SHARD__COUNT"], "value"); got != strconv.Itoa(replicas) {
		t.Errorf("CHIMERAFORGE_GLOBAL__SHARD__COUNT %q, want the StatefulSet's replicas %d", got, replicas)
	}
	if got := str(env["CHIMERAFORGE_GLOBAL__SHARD__INDEX"], "valueFrom", "fieldRef", "fieldPath"); got != "metadata.labels['apps.kubernetes.io/pod-index']" {
		t.Errorf("shard index from %q, want the pod-index label", got)
	}

	// The configuration: the mounted ConfigMap exists (with kustomize's
	// hash suffix), holds config.yaml at the path --config names, and
	// passes `chimeraforge config check` for every shard.
	cmName := str(pod, "spec", "volumes", "0", "configMap", "name")
	cm, ok := objs["ConfigMap/"+cmName]
	if !ok || !strings.HasPrefix(cmName, "chimeraforge-config-") {
		t.Fatalf("config volume refers to ConfigMap %q, which the build lacks", cmName)
	}
	if str(ctr, "volumeMounts", "0", "mountPath")+"/config.yaml" != strings.TrimPrefix(args[1].(string), "--config=") {
		t.Errorf("--config %v does not point into the mounted ConfigMap at %s", args[1], str(ctr, "volumeMounts", "0", "mountPath"))
	}
	file := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(file, []byte(str(cm, "data", "config.yaml")), 0o600); err != nil {
		t.Fatal(err)
	}
	// Egress is open to the Ollama port only: every target must use it.
	egress, _ := get(np, "spec", "egress", "1", "ports", "0", "port").(int)
	for i := range replicas {
		cfg, err := config.Load(file, map[string]string{"global.shard.index": strconv.Itoa(i), "global.shard.count": strconv.Itoa(replicas)})
		if err != nil {
			t.Fatalf("config check of shard %d: %v", i, err)
		}
		for _, tg := range cfg.Targets {
			if !strings.Contains(tg.URL, ":"+strconv.Itoa(egress)) {
				t.Errorf("target %s (%s) is not on the port the NetworkPolicy lets out (%d)", tg.Name, tg.URL, egress)
			}
		}
	}

	// Rules and dashboards: the generated ones.
	var ruleSpec, wantSpec any
	b, _ := yaml.Marshal(get(rule, "spec"))
	_ = yaml.Unmarshal(b, &ruleSpec)
	b, _ = yaml.Marshal(dashboards.Rules(dashboards.DefaultThresholds))
	_ = yaml.Unmarshal(b, &wantSpec)
	if !reflect.DeepEqual(ruleSpec, wantSpec) {
		t.Error("the PrometheusRule's groups are not dashboards.Rules(DefaultThresholds)")
	}
	files, err := dashboards.Files()
	if err != nil {
		t.Fatal(err)
	}
	if str(dash, "metadata", "labels", dashboards.GrafanaSidecarLabel) != "1" {
		t.Errorf("dashboards ConfigMap lacks the sidecar label %s=1", dashboards.GrafanaSidecarLabel)
	}
	data, _ := get(dash, "data").(map[string]any)
	n := 0
	for name, content := range files {
		if strings.HasSuffix(name, ".json") {
			n++
			if data[name] != string(content) {
				t.Errorf("dashboards ConfigMap: %s missing or different from dashboards/generated", name)
			}
		}
	}
	if n == 0 || len(data) != n {
		t.Errorf("dashboards ConfigMap holds %d files, want the %d dashboards", len(data), n)
	}
}
