package config

import _ "embed"

// DemoYAML is the built-in demo configuration (examples/demo.yaml): two
// simulated Ollama instances sharing one simulated GPU, two agents and a
// closed-loop workload. Do not modify it.
//
//go:embed examples/demo.yaml
var DemoYAML []byte

// Demo loads the built-in demo. Unlike LoadBytes it ignores the environment,
// so the demo is the same everywhere.
func Demo() (*Config, error) {
	return loader{}.loadBytes("built-in demo", DemoYAML, "", nil)
}
