package config

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/providers/rawbytes"
	"github.com/knadh/koanf/v2"
	yamlv3 "go.yaml.in/yaml/v3"
)

// EnvPrefix starts every environment variable that overrides a key. The rest
// of the name is the key path with "__" between components, for example
// CHIMERAFORGE_GLOBAL__SHUTDOWN_TIMEOUT or CHIMERAFORGE_TARGETS__0__URL.
const EnvPrefix = "CHIMERAFORGE_"

// envSep separates key path components in environment variable names.
const envSep = "__"

// Load reads the YAML file at path (none when path is ""), applies the
// CHIMERAFORGE_ environment variables and then overrides (koanf key paths
// such as "global.shutdown_timeout" or "targets.0.url", to values), sets
// defaults and validates the result. Every problem found is reported at once
// in a *ValidationError wrapped as `load config "path": ...`.
func Load(path string, overrides map[string]string) (*Config, error) {
	return loader{environ: os.Environ}.load(path, overrides)
}

// LoadBytes is Load for a configuration already in memory, such as the
// built-in demo; name stands for the file in error messages. Relative
// header secret files are resolved against the working directory.
func LoadBytes(name string, data []byte, overrides map[string]string) (*Config, error) {
	return loader{environ: os.Environ}.loadBytes(name, data, "", overrides)
}

// loader carries what Load takes from the process, so tests can replace it.
type loader struct {
	environ func() []string // KEY=value pairs, as os.Environ returns
}

func (l loader) load(path string, overrides map[string]string) (*Config, error) {
	if path == "" {
		return l.loadBytes("", nil, "", overrides)
	}
	data, err := file.Provider(path).ReadBytes()
	if err != nil {
		return nil, wrapLoad(path, err)
	}
	return l.loadBytes(path, data, filepath.Dir(path), overrides)
}

func wrapLoad(name string, err error) error {
	if name == "" {
		return fmt.Errorf("load config: %w", err)
	}
	return fmt.Errorf("load config %q: %w", name, err)
}

// loadBytes runs the whole pipeline: parse, environment, overrides, decode,
// defaults, validation (which also resolves header secrets).
func (l loader) loadBytes(name string, data []byte, baseDir string, overrides map[string]string) (*Config, error) {
	k := koanf.New(".")
	if len(data) > 0 {
		if err := k.Load(rawbytes.Provider(data), yaml.Parser()); err != nil {
			return nil, wrapLoad(name, err)
		}
	}
	raw := k.Raw()

	env := l.env()
	origins := map[string]string{}
	var problems []string
	problems = append(problems, applyEnv(raw, env, origins)...)
	problems = append(problems, applyOverrides(raw, overrides, origins)...)
	if len(problems) > 0 {
		return nil, wrapLoad(name, newValidationError(problems))
	}

	merged := koanf.New(".")
	if err := merged.Load(confmap.Provider(raw, ""), nil); err != nil {
		return nil, wrapLoad(name, err)
	}
	cfg, set, problems := decode(merged, origins)
	if len(problems) > 0 {
		return nil, wrapLoad(name, newValidationError(problems))
	}
	cfg.setDefaults(set)

	c := newChecker(cfg, func(key string) (string, bool) {
		v, ok := env[key]
		return v, ok
	}, baseDir)
	cfg.validate(c)
	if len(c.problems) > 0 {
		return nil, wrapLoad(name, newValidationError(c.problems))
	}
	return cfg, nil
}

// env returns the environment as a map; later duplicates win.
func (l loader) env() map[string]string {
	m := map[string]string{}
	if l.environ == nil {
		return m
	}
	for _, kv := range l.environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// textValue is a value that arrived as text (environment, flags). The decode
// hook converts it to the type of the field it lands in, so "4" can set an
// int while a value from YAML must already have the right type.
type textValue string

// applyEnv sets the raw keys named by CHIMERAFORGE_ variables. Variables set
// to the empty string are ignored.
func applyEnv(raw map[string]any, env map[string]string, origins map[string]string) []string {
	names := make([]string, 0)
	for k := range env {
		if strings.HasPrefix(k, EnvPrefix) && len(k) > len(EnvPrefix) {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	var problems []string
	for _, n := range names {
		if env[n] == "" {
			continue
		}
		keys := strings.Split(strings.ToLower(strings.TrimPrefix(n, EnvPrefix)), envSep)
		disp, err := setPath(raw, keys, textValue(env[n]), true)
		if err != nil {
			// The value may be a secret: name the variable, never the value.
			problems = append(problems, fmt.Sprintf("environment variable %s: %v", n, err))
			continue
		}
		origins[disp] = "environment variable " + n
	}
	return problems
}

// applyOverrides sets the raw keys of overrides (koanf key paths, "." between
// components, list indexes as numbers).
func applyOverrides(raw map[string]any, overrides map[string]string, origins map[string]string) []string {
	keys := make([]string, 0, len(overrides))
	for k := range overrides {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var problems []string
	for _, k := range keys {
		disp, err := setPath(raw, strings.Split(k, "."), textValue(overrides[k]), false)
		if err != nil {
			problems = append(problems, fmt.Sprintf("override %s: %v", k, err))
			continue
		}
		origins[disp] = "override " + k
	}
	return problems
}

// setPath sets keys in root to val, creating maps on the way. A numeric
// component indexes a list, which must already hold that entry: koanf does
// not flatten lists, so they are walked here. fold matches map keys case
// insensitively (environment variable names are upper case). It returns the
// key path as problems print it, e.g. "targets[0].url".
func setPath(root map[string]any, keys []string, val any, fold bool) (string, error) {
	var cur any = root
	disp := ""
	for i, key := range keys {
		if key == "" {
			return disp, fmt.Errorf("empty key path component")
		}
		last := i == len(keys)-1
		switch c := cur.(type) {
		case map[string]any:
			if _, ok := c[key]; !ok && fold {
				for k := range c {
					if strings.EqualFold(k, key) {
						key = k
						break
					}
				}
			}
			disp = joinPath(disp, key)
			if last {
				c[key] = val
				return disp, nil
			}
			next := c[key]
			if next == nil {
				if isIndex(keys[i+1]) {
					return disp, fmt.Errorf("%s[%s] does not exist: the config file has no list %s", disp, keys[i+1], disp)
				}
				next = map[string]any{}
				c[key] = next
			}
			cur = next
		case []any:
			idx, err := strconv.Atoi(key)
			if err != nil || idx < 0 {
				return disp, fmt.Errorf("%s is a list; %q is not an index", disp, key)
			}
			if idx >= len(c) {
				return disp, fmt.Errorf("%s[%d] does not exist: the config file has %d entries in %s", disp, idx, len(c), disp)
			}
			disp = fmt.Sprintf("%s[%d]", disp, idx)
			if last {
				c[idx] = val
				return disp, nil
			}
			if c[idx] == nil {
				c[idx] = map[string]any{}
			}
			cur = c[idx]
		default:
			return disp, fmt.Errorf("%s is a single value, not a map or list, so %s cannot be set", disp, strings.Join(keys, "."))
		}
	}
	return disp, nil
}

func isIndex(s string) bool {
	_, err := strconv.Atoi(s)
	return err == nil
}

func joinPath(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	secretType   = reflect.TypeFor[Secret]()
	configType   = reflect.TypeFor[Config]()
)

// decode unmarshals the merged configuration strictly: no weak typing, no
// case-insensitive key matching, every unknown key reported with its path.
// It returns the set of key paths that were present, for defaults.
func decode(k *koanf.Koanf, origins map[string]string) (*Config, map[string]bool, []string) {
	var (
		cfg Config
		md  mapstructure.Metadata
	)
	err := k.UnmarshalWithConf("", &cfg, koanf.UnmarshalConf{
		Tag: "koanf",
		DecoderConfig: &mapstructure.DecoderConfig{
			DecodeHook: mapstructure.ComposeDecodeHookFunc(
				textHook, secretHook, durationHook, integerHook,
			),
			Metadata:         &md,
			WeaklyTypedInput: false,
			MatchName:        func(mapKey, fieldName string) bool { return mapKey == fieldName },
			TagName:          "koanf",
		},
	})
	var problems []string
	if err != nil {
		problems = flattenDecodeError(err, origins, problems)
	}
	unused := slices.Clone(md.Unused)
	slices.Sort(unused)
	for _, key := range unused {
		msg := key + ": unknown key"
		if allowed := allowedKeys(key); allowed != "" {
			msg += " (allowed: " + allowed + ")"
		}
		problems = append(problems, msg+from(origins, key))
	}
	set := make(map[string]bool, len(md.Keys))
	for _, key := range md.Keys {
		set[key] = true
	}
	return &cfg, set, problems
}

// from says where a key came from when it was not the file.
func from(origins map[string]string, key string) string {
	if o, ok := origins[key]; ok {
		return " (set by " + o + ")"
	}
	return ""
}

// flattenDecodeError turns mapstructure's joined errors into one problem
// line per field. Values are never printed: one may be a secret.
func flattenDecodeError(err error, origins map[string]string, out []string) []string {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		children := j.Unwrap()
		chunks := make([][]string, len(children))
		for i, e := range children {
			chunks[i] = flattenDecodeError(e, origins, nil)
		}
		if isMapJoin(children) {
			// mapstructure visits a map's entries in Go's random map
			// order: sort them, so the same file gives the same report.
			slices.SortStableFunc(chunks, slices.Compare)
		}
		for _, c := range chunks {
			out = append(out, c...)
		}
		return out
	}
	// A direct assertion on purpose: errors.As would dig through a joined
	// error and stop at its first field, losing the others.
	de, ok := err.(*mapstructure.DecodeError) //nolint:errorlint // see above
	if !ok {
		if inner := errors.Unwrap(err); inner != nil {
			// mapstructure wraps the joined field errors in a summary line.
			return flattenDecodeError(inner, origins, out)
		}
		return append(out, err.Error())
	}
	if j, ok := de.Unwrap().(interface{ Unwrap() []error }); ok {
		return flattenDecodeError(j.(error), origins, out)
	}
	name := de.Name()
	if name == "" {
		name = "(top level)"
	}
	return append(out, name+": "+describeDecodeError(de.Unwrap())+from(origins, name))
}

// isMapJoin reports whether errs are the errors of one map's entries: all
// their key paths start with the path of a map field followed by "[". Map
// fields are reached through struct fields and list indexes only, so that
// path holds no map key of its own and typeAt reads it reliably.
func isMapJoin(errs []error) bool {
	if len(errs) < 2 {
		return false
	}
	prefix, ok := firstDecodeName(errs[0])
	if !ok {
		return false
	}
	for _, e := range errs[1:] {
		name, ok := firstDecodeName(e)
		if !ok {
			return false
		}
		n := 0
		for n < len(prefix) && n < len(name) && prefix[n] == name[n] {
			n++
		}
		prefix = prefix[:n]
	}
	for i := range len(prefix) {
		if prefix[i] == '[' {
			if t := typeAt(prefix[:i]); t != nil && t.Kind() == reflect.Map {
				return true
			}
		}
	}
	return false
}

// firstDecodeName is the key path of the first field error in err.
func firstDecodeName(err error) (string, bool) {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			if name, ok := firstDecodeName(e); ok {
				return name, true
			}
		}
		return "", false
	}
	de, ok := err.(*mapstructure.DecodeError) //nolint:errorlint // the field error itself, not one it wraps
	if !ok {
		if inner := errors.Unwrap(err); inner != nil {
			return firstDecodeName(inner)
		}
		return "", false
	}
	if j, ok := de.Unwrap().(interface{ Unwrap() []error }); ok {
		return firstDecodeName(j.(error))
	}
	return de.Name(), true
}

// newValidationError keeps each problem on one line: a key from the file
// may hold a newline or another control character, which is written as
// an escape (\n) instead.
func newValidationError(problems []string) *ValidationError {
	for i, p := range problems {
		problems[i] = escapeControl(p)
	}
	return &ValidationError{Problems: problems}
}

// escapeControl writes control characters as Go escapes (\n, \x00).
func escapeControl(s string) string {
	if !strings.ContainsFunc(s, unicode.IsControl) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if unicode.IsControl(r) {
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func describeDecodeError(err error) string {
	var ut *mapstructure.UnconvertibleTypeError
	if errors.As(err, &ut) {
		return fmt.Sprintf("expected %s, got %s", typeWords(ut.Expected.Type()), valueWords(ut.Value))
	}
	var pe *mapstructure.ParseError
	if errors.As(err, &pe) {
		return fmt.Sprintf("expected %s: %v", typeWords(pe.Expected.Type()), pe.Err)
	}
	if rest, ok := strings.CutPrefix(err.Error(), "source data must be an array or slice, got "); ok {
		return "expected a list, got a " + rest
	}
	if rest, ok := strings.CutPrefix(err.Error(), "expected a map or struct, got "); ok {
		return "expected a map, got a value of kind " + strings.Trim(rest, `"`)
	}
	return err.Error()
}

// typeWords names a Go type the way a YAML author thinks of it.
func typeWords(t reflect.Type) string {
	if t == durationType {
		return `a duration like "2s"`
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a map"
	case reflect.Pointer:
		return typeWords(t.Elem())
	}
	return t.String()
}

func valueWords(v any) string {
	if v == nil {
		return "nothing"
	}
	return typeWords(reflect.TypeOf(v))
}

// allowedKeys lists the keys of the struct that holds the unknown key.
func allowedKeys(key string) string {
	i := strings.LastIndexByte(key, '.')
	parent := ""
	if i >= 0 {
		parent = key[:i]
	}
	t := typeAt(parent)
	if t == nil || t.Kind() != reflect.Struct {
		return ""
	}
	var names []string
	for i := range t.NumField() {
		f := t.Field(i)
		if tag := f.Tag.Get("koanf"); f.IsExported() && tag != "" {
			names = append(names, tag)
		}
	}
	return strings.Join(names, ", ")
}

// typeAt walks a decoder key path such as "targets[0].headers[X]" from
// Config and returns the type there, or nil.
func typeAt(path string) reflect.Type {
	t := configType
	for path != "" {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		switch path[0] {
		case '.':
			path = path[1:]
		case '[':
			end := strings.IndexByte(path, ']')
			if end < 0 || (t.Kind() != reflect.Slice && t.Kind() != reflect.Map) {
				return nil
			}
			path, t = path[end+1:], t.Elem()
		default:
			end := strings.IndexAny(path, ".[")
			if end < 0 {
				end = len(path)
			}
			name := path[:end]
			path = path[end:]
			if t.Kind() != reflect.Struct {
				return nil
			}
			var found reflect.Type
			for i := range t.NumField() {
				if f := t.Field(i); f.Tag.Get("koanf") == name {
					found = f.Type
				}
			}
			if found == nil {
				return nil
			}
			t = found
		}
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// textHook converts a textValue to the kind of its destination.
func textHook(_ reflect.Type, to reflect.Type, data any) (any, error) {
	tv, ok := data.(textValue)
	if !ok {
		return data, nil
	}
	s := string(tv)
	if to == durationType || to == secretType {
		return s, nil
	}
	switch to.Kind() {
	case reflect.Pointer:
		return data, nil // the element is decoded, and hooked, next
	case reflect.String, reflect.Interface:
		return s, nil
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not true or false", s)
		}
		return b, nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		i, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not an integer", s)
		}
		return i, nil
	case reflect.Float32, reflect.Float64:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number", s)
		}
		return f, nil
	default: // lists and maps are written as YAML, e.g. "[a, b]"
		var v any
		if err := yamlv3.Unmarshal([]byte(s), &v); err != nil {
			return nil, fmt.Errorf("expected %s written as YAML: %w", typeWords(to), err)
		}
		return v, nil
	}
}

// secretHook accepts a plain string as shorthand for {value: STRING}.
func secretHook(_ reflect.Type, to reflect.Type, data any) (any, error) {
	if to != secretType {
		return data, nil
	}
	switch v := data.(type) {
	case string:
		return map[string]any{"value": v}, nil
	case map[string]any, nil:
		return data, nil
	default:
		return nil, fmt.Errorf("expected a string or a map with one of value, env, file, got %s", valueWords(v))
	}
}

const durationHint = `write a duration with a unit, like "2s", "500ms" or "1m30s"`

// durationHook parses Go durations ("2s") and rejects bare numbers, whose
// unit would be a guess. Zero needs no unit.
func durationHook(_ reflect.Type, to reflect.Type, data any) (any, error) {
	if to != durationType {
		return data, nil
	}
	switch v := data.(type) {
	case string:
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err == nil {
			return d, nil
		}
		if _, nerr := strconv.ParseFloat(strings.TrimSpace(v), 64); nerr == nil {
			return nil, fmt.Errorf("%q is a bare number; %s", v, durationHint)
		}
		return nil, fmt.Errorf("%q is not a duration; %s", v, durationHint)
	case int, int64, uint64, float64:
		if reflect.ValueOf(v).IsZero() {
			return time.Duration(0), nil
		}
		return nil, fmt.Errorf("%v is a bare number; %s", v, durationHint)
	}
	return data, nil
}

// integerHook refuses to truncate a fraction into an integer field.
func integerHook(from reflect.Type, to reflect.Type, data any) (any, error) {
	switch to.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
	default:
		return data, nil
	}
	if f, ok := data.(float64); ok && (f != math.Trunc(f) || math.IsInf(f, 0)) {
		return nil, fmt.Errorf("expected an integer, got %v", f)
	}
	return data, nil
}
