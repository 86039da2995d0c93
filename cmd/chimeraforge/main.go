// Command chimeraforge drives LLM agent workloads against Ollama servers and
// exposes what it measures as Prometheus metrics.
//
//	chimeraforge run [--config FILE]   the daemon (no --config: the built-in demo)
//	chimeraforge sim                   the Ollama simulator alone
//	chimeraforge config check FILE     validate a configuration
//	chimeraforge dashboards --out DIR  write the Grafana dashboards and Prometheus rules
//	  [--kubernetes-out DIR]          and their Kubernetes wrappers
//	chimeraforge health [--url URL]    probe a daemon's /healthz (container health checks)
//	chimeraforge version
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"
)

// DefaultListenAddress is where /metrics is served unless told otherwise.
const DefaultListenAddress = ":9477"

func main() {
	if version.Version == "" {
		// Set by -ldflags in release builds; name plain `go build`s honestly.
		version.Version = "dev"
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(cli(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// cli parses args and runs one subcommand; it returns the exit code.
func cli(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	app := kingpin.New("chimeraforge", "Drives LLM agent workloads against Ollama servers and exports what it measures as Prometheus metrics.")
	app.UsageWriter(stdout)
	app.ErrorWriter(stderr)
	app.Version(version.Print("chimeraforge"))
	app.HelpFlag.Short('h')
	exited := false
	app.Terminate(func(int) { exited = true })

	runCmd := app.Command("run", "Run the daemon (the built-in demo against embedded simulators when --config is not given).").Default()
	ro := runOptions{}
	runCmd.Flag("config", "Configuration file (YAML). Without it the built-in demo runs.").StringVar(&ro.configFile)
	runCmd.Flag("set", "Override one configuration key, e.g. --set global.shutdown_timeout=5s (repeatable; wins over file and environment).").StringsVar(&ro.sets)
	ro.web = kingpinflag.AddFlags(runCmd, DefaultListenAddress)
	runCmd.Flag("web.enable-lifecycle", "Enable POST /-/reload, /-/calibrate and /-/quit.").BoolVar(&ro.enableLifecycle)
	runCmd.Flag("log.level", "Log level: debug, info, warn, error.").Default("info").HintOptions("debug", "info", "warn", "error").StringVar(&ro.logLevel)
	runCmd.Flag("log.format", "Log format: json or console.").Default("console").HintOptions("json", "console").StringVar(&ro.logFormat)
	runCmd.Flag("request-log", "Also append one JSON line per request that ended to this file (created with mode 0640); off when empty. docs/metrics.md lists the fields.").PlaceHolder("PATH").StringVar(&ro.requestLog)
	requestLogMax := runCmd.Flag("request-log.max-bytes", "Stop writing --request-log after this many bytes (0: no cap); the lines not written are counted in chimeraforge_request_log_dropped_lines_total.").Default("1GiB").Bytes()

	simCmd := app.Command("sim", "Run the Ollama simulator alone (a test double and demo, never a measurement of Ollama).")
	so := registerSimFlags(simCmd)

	cfgCmd := app.Command("config", "Work with configuration files.")
	checkCmd := cfgCmd.Command("check", "Validate a configuration file; exit 1 listing every problem.")
	checkFile := checkCmd.Arg("file", "Configuration file.").Required().String()
	checkSets := checkCmd.Flag("set", "Override one configuration key (repeatable).").Strings()
	showCmd := cfgCmd.Command("show", "Print the effective configuration (defaults applied, secrets redacted).")
	showFile := showCmd.Arg("file", "Configuration file.").Required().String()
	showSets := showCmd.Flag("set", "Override one configuration key (repeatable).").Strings()

	dashCmd := app.Command("dashboards", "Write the Grafana dashboards (JSON) and the Prometheus recording and alerting rules (YAML) into a directory.")
	dashOut := dashCmd.Flag("out", "Directory to write into (created if missing).").Required().String()
	dashKube := dashCmd.Flag("kubernetes-out", "Also write the rules as a Prometheus Operator PrometheusRule and the dashboards as a ConfigMap for Grafana's sidecar into this directory.").String()

	healthCmd := app.Command("health", "GET a daemon's /healthz (or --url) once: exit 0 on 200 OK, else 1 with the reason on stderr. For container health checks: the image has no shell or curl.")
	ho := registerHealthFlags(healthCmd)

	versionCmd := app.Command("version", "Print the version.")

	cmd, err := app.Parse(args)
	if exited {
		return 0 // --help or --version
	}
	if err != nil {
		fmt.Fprintf(stderr, "chimeraforge: %v (see --help)\n", err)
		return 2
	}
	switch cmd {
	case runCmd.FullCommand():
		ro.requestLogMaxBytes = int64(*requestLogMax)
		err = runMain(ctx, ro, stdout, stderr)
	case simCmd.FullCommand():
		err = runSim(ctx, so, stdout, stderr)
	case checkCmd.FullCommand():
		err = configCheck(*checkFile, *checkSets, stdout)
	case showCmd.FullCommand():
		err = configShow(*showFile, *showSets, stdout)
	case dashCmd.FullCommand():
		err = writeDashboards(*dashOut, *dashKube, stdout)
	case healthCmd.FullCommand():
		err = runHealth(ctx, ho)
	case versionCmd.FullCommand():
		fmt.Fprintln(stdout, version.Print("chimeraforge"))
	}
	if err != nil {
		fmt.Fprintf(stderr, "chimeraforge: %v\n", err)
		return 1
	}
	return 0
}
