package config

import (
	"fmt"
	"io"
	"strings"
	"text/template"
)

// parsePrompt parses a prompt template; a key missing from a map (such as
// .Vars.nope or .Outputs.later) is an error, not "<no value>".
func parsePrompt(name, prompt string) (*template.Template, error) {
	return template.New(name).Option("missingkey=error").Parse(prompt)
}

// Render executes the step's prompt template with d. Steps from Load carry
// their parsed template; a Step built in code is parsed on each call.
func (s *Step) Render(d TemplateData) (string, error) {
	t := s.tmpl
	if t == nil {
		var err error
		if t, err = parsePrompt(s.Name, s.Prompt); err != nil {
			return "", err
		}
	}
	var b strings.Builder
	if err := t.Execute(&b, d); err != nil {
		return "", err
	}
	return b.String(), nil
}

// sampleData is what validation executes each prompt with: every step
// before this one has an output, the agent's variables are its own.
func sampleData(a *Agent, step int) TemplateData {
	d := TemplateData{
		Outputs: make(map[string]string, step),
		Vars:    a.Variables,
		Run:     1,
		Step:    a.Workflow[step].Name,
		Agent:   a.Name,
	}
	for _, prev := range a.Workflow[:step] {
		d.Previous = fmt.Sprintf("(output of step %s)", prev.Name)
		d.Outputs[prev.Name] = d.Previous
	}
	return d
}

// compile parses the prompt and executes it once against sample data, so
// that a reference to a field or key that cannot exist fails at load time.
func (s *Step) compile(c *checker, path string, a *Agent, step int) {
	t, err := parsePrompt(s.Name, s.Prompt)
	if err != nil {
		c.addf(path, "%v", err)
		return
	}
	if err := t.Execute(io.Discard, sampleData(a, step)); err != nil {
		c.addf(path, "%v", err)
		return
	}
	s.tmpl = t
}
