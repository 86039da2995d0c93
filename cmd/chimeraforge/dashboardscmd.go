package main

import (
	"fmt"
	"io"
	"path/filepath"

	"github.com/chimeraforge/chimeraforge/dashboards"
)

// writeDashboards writes the generated Grafana dashboards and Prometheus
// rules into dir, and their Kubernetes objects into kubeDir unless it is
// empty, and lists what it wrote.
func writeDashboards(dir, kubeDir string, stdout io.Writer) error {
	names, err := dashboards.Write(dir)
	if err != nil {
		return fmt.Errorf("generate dashboards: %w", err)
	}
	for _, n := range names {
		fmt.Fprintln(stdout, filepath.Join(dir, n))
	}
	if kubeDir == "" {
		return nil
	}
	files, err := dashboards.KubernetesFiles()
	if err != nil {
		return fmt.Errorf("generate kubernetes objects: %w", err)
	}
	names, err = dashboards.WriteFiles(kubeDir, files)
	if err != nil {
		return fmt.Errorf("generate kubernetes objects: %w", err)
	}
	for _, n := range names {
		fmt.Fprintln(stdout, filepath.Join(kubeDir, n))
	}
	return nil
}
