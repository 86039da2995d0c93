package main

import (
	"fmt"
	"io"
	"path/filepath"

	"github.com/chimeraforge/chimeraforge/dashboards"
)

// writeDashboards writes the generated Grafana dashboards and Prometheus
// rules into dir and lists what it wrote.
func writeDashboards(dir string, stdout io.Writer) error {
	names, err := dashboards.Write(dir)
	if err != nil {
		return fmt.Errorf("generate dashboards: %w", err)
	}
	for _, n := range names {
		fmt.Fprintln(stdout, filepath.Join(dir, n))
	}
	return nil
}
