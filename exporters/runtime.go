package exporters

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/collectors/version"
)

// NewBuildInfo registers chimeraforge_build_info with reg: a constant 1
// labelled by version, revision, branch, goversion, goos, goarch and tags,
// taken from github.com/prometheus/common/version (set with -ldflags -X).
func NewBuildInfo(reg prometheus.Registerer) error {
	return registerAll(reg, version.NewCollector("chimeraforge"))
}

// RegisterRuntime registers the standard client_golang Go runtime (go_*) and
// process (process_*) collectors with reg. On error nothing stays
// registered.
func RegisterRuntime(reg prometheus.Registerer) error {
	return registerAll(reg,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}
