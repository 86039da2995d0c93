package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/chimeraforge/chimeraforge/config"
)

// parseSets turns repeated --set key=value flags into koanf overrides.
func parseSets(sets []string) (map[string]string, error) {
	out := make(map[string]string, len(sets))
	for _, s := range sets {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--set %q: want key=value", s)
		}
		out[k] = v
	}
	return out, nil
}

// loadConfig loads file, or the built-in demo when file is "", with the
// environment and --set overrides applied.
func loadConfig(file string, sets []string) (*config.Config, error) {
	overrides, err := parseSets(sets)
	if err != nil {
		return nil, err
	}
	if file == "" {
		return config.LoadBytes("built-in demo", config.DemoYAML, overrides)
	}
	return config.Load(file, overrides)
}

func configCheck(file string, sets []string, stdout io.Writer) error {
	cfg, err := loadConfig(file, sets)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: OK (%d targets, %d agents, %d workloads, %d simulated instances)\n",
		file, len(cfg.Targets), len(cfg.Agents), len(cfg.Workloads), len(cfg.Simulation.Instances))
	return nil
}

func configShow(file string, sets []string, stdout io.Writer) error {
	cfg, err := loadConfig(file, sets)
	if err != nil {
		return err
	}
	b, err := cfg.Redacted()
	if err != nil {
		return fmt.Errorf("render config: %w", err)
	}
	_, err = stdout.Write(b)
	return err
}
