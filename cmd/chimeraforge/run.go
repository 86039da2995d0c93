package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"
	"go.uber.org/zap"
	"go.uber.org/zap/exp/zapslog"
	"go.uber.org/zap/zapcore"

	"github.com/chimeraforge/chimeraforge/daemon"
	"github.com/chimeraforge/chimeraforge/exporters"
)

// runOptions are the flags of `chimeraforge run`.
type runOptions struct {
	configFile      string
	sets            []string
	web             *web.FlagConfig
	enableLifecycle bool
	logLevel        string
	logFormat       string
	// requestLog is --request-log: a file that gets one JSON line per
	// request ("" for none), capped at requestLogMaxBytes (0: no cap).
	requestLog         string
	requestLogMaxBytes int64

	// For tests: serve on these listeners instead of --web.listen-address,
	// and report the started daemon.
	listeners []net.Listener
	started   func(*app)
}

// app is one running daemon with its HTTP front.
type app struct {
	opts     runOptions
	log      *zap.Logger
	reg      *prometheus.Registry
	daemon   *daemon.Daemon
	metrics  *exporters.Metrics
	reloadM  *exporters.Reload
	reloadMu sync.Mutex // one reload at a time
	quit     context.CancelFunc
}

func newLogger(level, format string, w io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil || lvl < zapcore.DebugLevel || lvl > zapcore.ErrorLevel {
		return nil, fmt.Errorf("--log.level: want debug, info, warn or error, got %q", level)
	}
	if format != "json" && format != "console" {
		return nil, fmt.Errorf("--log.format: want json or console, got %q", format)
	}
	ec := zap.NewProductionEncoderConfig()
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if format == "json" {
		enc = zapcore.NewJSONEncoder(ec)
	} else {
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), lvl)), nil
}

// runMain runs the daemon until ctx ends (SIGINT/SIGTERM) or /-/quit.
// SIGHUP reloads the configuration.
func runMain(ctx context.Context, o runOptions, stdout, stderr io.Writer) error {
	// Catch SIGHUP first: until it is caught its default action ends the
	// process, and a reload sent while the daemon starts (a config manager,
	// systemd's ExecReload) would kill it. One that comes before the
	// reloader below runs waits in the channel and reloads then.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	log, err := newLogger(o.logLevel, o.logFormat, stderr)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()

	cfg, err := loadConfig(o.configFile, o.sets)
	if err != nil {
		return err
	}
	if o.web.WebConfigFile != nil && *o.web.WebConfigFile != "" {
		if err := web.Validate(*o.web.WebConfigFile); err != nil {
			return fmt.Errorf("--web.config.file %q: %w", *o.web.WebConfigFile, err)
		}
	}

	a := &app{opts: o, log: log, reg: prometheus.NewRegistry()}
	if a.metrics, err = exporters.NewMetrics(a.reg, exporters.ClassicHistograms(cfg.Global.Metrics.ClassicHistograms)); err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	if a.reloadM, err = exporters.NewReload(a.reg); err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	if err := exporters.NewBuildInfo(a.reg); err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	if err := exporters.RegisterRuntime(a.reg); err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	a.reloadM.Observe(true, time.Now())
	sink, closeRequestLog, err := openRequestLog(ctx, o, a.reg, log, a.metrics)
	if err != nil {
		return err
	}
	// Deferred before the daemon starts, so it runs after the daemon has
	// stopped and recorded its canceled in-flight requests.
	defer closeRequestLog()
	a.daemon = daemon.New(cfg, sink, log)
	gpuCollector := newGPUCollector(cfg, a.daemon, log)
	defer gpuCollector.Close()
	if err := a.reg.Register(gpuCollector); err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}

	ctx, a.quit = context.WithCancel(ctx)
	defer a.quit()

	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				_ = a.reload()
			}
		}
	}()

	listeners, err := a.listen(stdout)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: a.routes(), ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- a.serve(srv, listeners) }()

	if o.started != nil {
		o.started(a)
	}
	what := "config " + o.configFile
	if o.configFile == "" {
		what = "built-in demo (embedded simulators; pass --config to measure real Ollama servers)"
	}
	log.Info("chimeraforge starting", zap.String("version", version.Version), zap.String("running", what))

	runErr := make(chan error, 1)
	go func() { runErr <- a.daemon.Run(ctx) }()

	select {
	case err = <-serveErr:
		// The metrics endpoint is the product: without it, stop.
		a.quit()
		if rerr := <-runErr; rerr != nil {
			log.Error("stopping after the metrics endpoint failed", zap.Error(rerr))
		}
		return fmt.Errorf("serve metrics: %w", err)
	case err = <-runErr:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	log.Info("chimeraforge stopped")
	return nil
}

// listen binds the listen addresses itself, before anything else starts,
// so that a port in use fails the start and the URL printed is the one
// bound, even for port 0. With --web.systemd-socket, exporter-toolkit takes
// the sockets from systemd instead.
func (a *app) listen(stdout io.Writer) ([]net.Listener, error) {
	if a.opts.web.WebSystemdSocket != nil && *a.opts.web.WebSystemdSocket {
		return nil, nil
	}
	listeners := a.opts.listeners
	if listeners == nil {
		for _, addr := range *a.opts.web.WebListenAddresses {
			l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", addr)
			if err != nil {
				for _, l := range listeners {
					_ = l.Close()
				}
				return nil, fmt.Errorf("listen on %s: %w", addr, err)
			}
			listeners = append(listeners, l)
		}
	}
	scheme := "http"
	if a.opts.web.WebConfigFile != nil && *a.opts.web.WebConfigFile != "" {
		scheme = "https or http, per --web.config.file"
	}
	for _, l := range listeners {
		fmt.Fprintf(stdout, "chimeraforge: metrics at %s\n", metricsURL(l.Addr(), scheme))
	}
	return listeners, nil
}

// serve hands the listeners to exporter-toolkit, which adds TLS and basic
// auth from --web.config.file.
func (a *app) serve(srv *http.Server, listeners []net.Listener) error {
	slogger := slog.New(zapslog.NewHandler(a.log.Core()))
	var err error
	if listeners == nil {
		err = web.ListenAndServe(srv, a.opts.web, slogger)
	} else {
		err = web.ServeMultiple(listeners, srv, a.opts.web, slogger)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// metricsURL names a bound address the way a person would type it.
func metricsURL(addr net.Addr, scheme string) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String() + "/metrics"
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "localhost"
	}
	if scheme != "http" {
		return fmt.Sprintf("%s/metrics (%s)", net.JoinHostPort(host, port), scheme)
	}
	return fmt.Sprintf("http://%s/metrics", net.JoinHostPort(host, port))
}

func (a *app) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", exporters.Handler(a.reg, promhttp.HandlerOpts{
		Registry:          a.reg,
		EnableOpenMetrics: true,
		ErrorLog:          zap.NewStdLog(a.log),
	}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "healthy\n")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !a.daemon.Ready() {
			http.Error(w, "not ready: waiting for targets to answer /api/version or workloads to start", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	})
	lifecycle := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if !a.opts.enableLifecycle {
				http.Error(w, "lifecycle endpoints are disabled; start with --web.enable-lifecycle", http.StatusForbidden)
				return
			}
			if r.Method != http.MethodPost && r.Method != http.MethodPut {
				http.Error(w, "use POST", http.StatusMethodNotAllowed)
				return
			}
			h(w, r)
		}
	}
	mux.HandleFunc("/-/reload", lifecycle(func(w http.ResponseWriter, _ *http.Request) {
		if err := a.reload(); err != nil {
			http.Error(w, "reload failed, the previous configuration keeps running:\n"+err.Error(), http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(w, "reloaded\n")
	}))
	mux.HandleFunc("/-/calibrate", lifecycle(func(w http.ResponseWriter, r *http.Request) {
		if err := a.daemon.Calibrate(r.URL.Query().Get("workload")); err != nil {
			http.Error(w, "calibrate: "+err.Error(), http.StatusNotFound)
			return
		}
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, "calibration requested; chimeraforge_calibrating shows it running\n")
	}))
	mux.HandleFunc("/-/quit", lifecycle(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "stopping\n")
		a.quit()
	}))
	landing, err := web.NewLandingPage(web.LandingConfig{
		Name:        "Chimeraforge",
		Description: "LLM agent workload generator for Ollama, Prometheus-native",
		Version:     version.Info(),
		Links: []web.LandingLinks{
			{Address: "/metrics", Text: "Metrics"},
			{Address: "/healthz", Text: "Health"},
			{Address: "/readyz", Text: "Readiness"},
		},
	})
	if err == nil {
		mux.Handle("/", landing)
	}
	return mux
}

// reload reads the configuration again and swaps it in. A configuration
// that does not load keeps the old one running; either way the outcome is
// exported like Prometheus' own.
func (a *app) reload() error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	cfg, err := loadConfig(a.opts.configFile, a.opts.sets)
	if err == nil {
		err = a.metrics.CheckOptions(exporters.ClassicHistograms(cfg.Global.Metrics.ClassicHistograms))
	}
	if err == nil {
		err = a.daemon.Reload(cfg)
	}
	if err != nil {
		a.reloadM.Observe(false, time.Now())
		a.log.Error("reload failed; the previous configuration keeps running", zap.Error(err))
		return err
	}
	a.reloadM.Observe(true, time.Now())
	a.log.Info("configuration reloaded", zap.String("config", cmp.Or(a.opts.configFile, "built-in demo")))
	return nil
}
