package config

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

const redacted = "<secret>"

// Resolved returns the secret's value: the inline value, or what the
// environment variable or file held when the configuration was loaded.
func (s Secret) Resolved() string {
	if s.resolved == "" && s.Env == "" && s.File == "" {
		return s.Value
	}
	return s.resolved
}

// String returns "<secret>", whatever the value, so that fmt's %v and %+v
// of any structure holding a Secret never print it.
func (s Secret) String() string { return redacted }

// GoString keeps %#v from printing the value.
func (s Secret) GoString() string { return `config.Secret("<secret>")` }

// redactedForm is how a Secret is shown: the source, with an inline value
// replaced by "<secret>". Environment variable names and file paths are not
// secret and help to debug.
type redactedForm struct {
	Value string `yaml:"value,omitempty" json:"value,omitempty"`
	Env   string `yaml:"env,omitempty" json:"env,omitempty"`
	File  string `yaml:"file,omitempty" json:"file,omitempty"`
}

func (s Secret) redactedForm() redactedForm {
	f := redactedForm{Env: s.Env, File: s.File}
	if s.Value != "" || (s.Env == "" && s.File == "") {
		f.Value = redacted
	}
	return f
}

// MarshalYAML shows the secret's source with the value redacted.
func (s Secret) MarshalYAML() (any, error) { return s.redactedForm(), nil }

// MarshalJSON shows the secret's source with the value redacted.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.redactedForm()) }

// sources lists which of value, env and file are set.
func (s Secret) sources() []string {
	var out []string
	if s.Value != "" {
		out = append(out, "value")
	}
	if s.Env != "" {
		out = append(out, "env")
	}
	if s.File != "" {
		out = append(out, "file")
	}
	return out
}

// validate checks that exactly one source is set and resolves it. Problems
// name the key, the variable or the file, never the value.
func (s *Secret) validate(c *checker, path string) {
	src := s.sources()
	if len(src) != 1 {
		got := "none"
		if len(src) > 1 {
			got = strings.Join(src, ", ")
		}
		c.addf(path, "set exactly one of value, env, file (got %s)", got)
		return
	}
	switch {
	case s.Value != "":
		s.resolved = s.Value
	case s.Env != "":
		v, ok := c.lookupEnv(s.Env)
		switch {
		case !ok:
			c.addf(path+".env", "environment variable %s is not set", s.Env)
		case v == "":
			c.addf(path+".env", "environment variable %s is empty", s.Env)
		default:
			s.resolved = v
		}
	case s.File != "":
		p := s.File
		if !filepath.IsAbs(p) && c.baseDir != "" {
			p = filepath.Join(c.baseDir, p)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			// os errors carry the path and the reason, never the contents.
			c.addf(path+".file", "cannot read: %v", err)
			return
		}
		v := strings.TrimRight(string(b), "\r\n")
		if v == "" {
			c.addf(path+".file", "%s is empty", p)
			return
		}
		s.resolved = v
	}
}

var _ fmt.GoStringer = Secret{}
