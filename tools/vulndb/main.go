// Command vulndb lets CI run govulncheck offline. It has two subcommands.
//
// build writes a Go vulnerability database in the v1 layout that
// govulncheck reads with -db file:///DIR, from the OSV entries of a pinned
// golang.org/x/vulndb module (its data/osv directory), which the Go module
// proxy serves, so that nothing needs vuln.go.dev:
//
//	dir=$(go mod download -json golang.org/x/vulndb@VERSION | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
//	go run ./tools/vulndb build -src "$dir/data/osv" -version VERSION -out DB
//
// The layout (https://go.dev/security/vuln/database#api):
//
//	DB/index/db.json         {"modified": T}, the newest entry's modified time
//	DB/index/modules.json    [{"path", "vulns": [{"id", "modified", "fixed"}]}], by path, then id
//	DB/index/vulns.json      [{"id", "modified", "aliases"}], by id
//	DB/ID/GO-YYYY-NNNN.json  each OSV entry
//
// The repository's OSV files carry no times of their own ("modified" is the
// zero time): vuln.go.dev sets them from the git history, which a module zip
// does not have. An entry without one gets the time of the snapshot, read
// from VERSION (a pseudo-version, v0.0.0-YYYYMMDDhhmmss-commit), and never
// earlier than its own withdrawn time. "fixed" is the newest fixed version
// of the module's SEMVER ranges unless the vulnerability was introduced
// again after it, computed as x/vuln's client does for a directory of OSV
// files. Withdrawn entries stay in the database, as on vuln.go.dev, with
// their "withdrawn" time: govulncheck skips an entry withdrawn before now.
//
// check reads govulncheck's JSON output (-format json) and fails on every
// vulnerability that the code calls (a finding whose trace reaches a
// function, what govulncheck's text output counts as affecting the code)
// unless the accept file lists it and no fixed version exists:
//
//	govulncheck -db "file://$DB" -format json ./... | go run ./tools/vulndb check -accept tools/vulndb/accepted.txt
//
// The accept file has one ID per line, then the module and the reason;
// # starts a comment. An accepted vulnerability that gains a fix fails the
// check again, so that the upgrade is not missed. Findings in imported
// packages or required modules that the code does not call are listed
// and do not fail the check.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "vulndb: %v\n", err)
		os.Exit(1)
	}
}

const usage = "usage: vulndb build -src DIR -version VERSION -out DIR | vulndb check -accept FILE [GOVULNCHECK.json]"

func run(args []string, stdin io.Reader, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "build":
		return runBuild(args[1:], stdout)
	case "check":
		return runCheck(args[1:], stdin, stdout)
	}
	return fmt.Errorf("unknown subcommand %q; %s", args[0], usage)
}

func runBuild(args []string, stdout io.Writer) error {
	flags := flag.NewFlagSet("vulndb build", flag.ContinueOnError)
	src := flags.String("src", "", "directory of OSV entries (GO-*.json): data/osv of the golang.org/x/vulndb module")
	out := flags.String("out", "", "directory to write the database into (replaced if it exists)")
	ver := flags.String("version", "", "the golang.org/x/vulndb pseudo-version the entries come from; its time stands in for entries without a modified time")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if *src == "" || *out == "" || *ver == "" {
		return errors.New("build: -src, -out and -version are required")
	}
	snapshot, err := pseudoVersionTime(*ver)
	if err != nil {
		return err
	}
	db, err := build(os.DirFS(*src), snapshot)
	if err != nil {
		return fmt.Errorf("%s: %w", *src, err)
	}
	if err := db.write(*out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "vulndb: %d entries, %d modules, modified %s, in %s\n",
		len(db.entries), len(db.modules), db.meta.Modified.Format(time.RFC3339), *out)
	return nil
}

// pseudoVersionTime reads the commit time of a pseudo-version such as
// v0.0.0-20261105234957-e22db6528018.
func pseudoVersionTime(v string) (time.Time, error) {
	parts := strings.Split(v, "-")
	if len(parts) < 3 {
		return time.Time{}, fmt.Errorf("-version %q: want a pseudo-version like v0.0.0-20261105234957-e22db6528018", v)
	}
	stamp := parts[len(parts)-2]
	if i := strings.LastIndexByte(stamp, '.'); i >= 0 { // vX.Y.Z-pre.0.yyyymmddhhmmss-abc
		stamp = stamp[i+1:]
	}
	t, err := time.Parse("20060102150405", stamp)
	if err != nil {
		return time.Time{}, fmt.Errorf("-version %q: no commit time in it: %w", v, err)
	}
	return t.UTC(), nil
}

// osvEntry is what the index needs of an OSV entry; the entry itself is
// kept as raw JSON and written back with only its modified time set.
type osvEntry struct {
	ID        string     `json:"id"`
	Modified  time.Time  `json:"modified"`
	Withdrawn *time.Time `json:"withdrawn"`
	Aliases   []string   `json:"aliases"`
	Affected  []struct {
		Package struct {
			Name string `json:"name"`
		} `json:"package"`
		Ranges []osvRange `json:"ranges"`
	} `json:"affected"`
}

type osvRange struct {
	Type   string `json:"type"`
	Events []struct {
		Introduced string `json:"introduced"`
		Fixed      string `json:"fixed"`
	} `json:"events"`
}

// dbMeta is index/db.json.
type dbMeta struct {
	Modified time.Time `json:"modified"`
}

// moduleMeta is one element of index/modules.json.
type moduleMeta struct {
	Path  string       `json:"path"`
	Vulns []moduleVuln `json:"vulns"`
}

type moduleVuln struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Fixed    string    `json:"fixed,omitempty"`
}

// vulnMeta is one element of index/vulns.json.
type vulnMeta struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Aliases  []string  `json:"aliases,omitempty"`
}

// database is the whole v1 database in memory.
type database struct {
	meta    dbMeta
	modules []moduleMeta // by path, each one's vulns by id
	vulns   []vulnMeta   // by id
	entries map[string][]byte
}

// build reads every *.json file of src (not its subdirectories) as an OSV
// entry named ID.json.
func build(src fs.FS, snapshot time.Time) (*database, error) {
	names, err := fs.ReadDir(src, ".")
	if err != nil {
		return nil, err
	}
	db := &database{entries: map[string][]byte{}}
	byPath := map[string]*moduleMeta{}
	for _, de := range names {
		name := de.Name()
		if de.IsDir() || filepath.Ext(name) != ".json" {
			continue
		}
		b, err := fs.ReadFile(src, name)
		if err != nil {
			return nil, err
		}
		e, raw, err := parseEntry(b, snapshot)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if name != e.ID+".json" {
			return nil, fmt.Errorf("%s: holds entry %q; an entry's file is named ID.json", name, e.ID)
		}
		db.entries[e.ID] = raw
		if e.Modified.After(db.meta.Modified) {
			db.meta.Modified = e.Modified
		}
		db.vulns = append(db.vulns, vulnMeta{ID: e.ID, Modified: e.Modified, Aliases: e.Aliases})
		for _, a := range e.Affected {
			m := byPath[a.Package.Name]
			if m == nil {
				m = &moduleMeta{Path: a.Package.Name, Vulns: []moduleVuln{}}
				byPath[a.Package.Name] = m
			}
			m.Vulns = append(m.Vulns, moduleVuln{ID: e.ID, Modified: e.Modified, Fixed: latestFixed(a.Ranges)})
		}
	}
	if len(db.entries) == 0 {
		return nil, errors.New("no OSV entries (*.json)")
	}
	slices.SortFunc(db.vulns, func(a, b vulnMeta) int { return strings.Compare(a.ID, b.ID) })
	for _, m := range byPath {
		slices.SortStableFunc(m.Vulns, func(a, b moduleVuln) int { return strings.Compare(a.ID, b.ID) })
		db.modules = append(db.modules, *m)
	}
	slices.SortFunc(db.modules, func(a, b moduleMeta) int { return strings.Compare(a.Path, b.Path) })
	return db, nil
}

// parseEntry decodes one OSV entry, sets its modified time when it has
// none (or one before its withdrawal) and returns it re-encoded.
func parseEntry(b []byte, snapshot time.Time) (*osvEntry, []byte, error) {
	var e osvEntry
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, nil, err
	}
	if e.ID == "" {
		return nil, nil, errors.New("no id")
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, nil, err
	}
	if e.Modified.IsZero() {
		e.Modified = snapshot
	}
	if e.Withdrawn != nil && e.Withdrawn.After(e.Modified) {
		e.Modified = *e.Withdrawn
	}
	e.Modified = e.Modified.UTC()
	m, err := json.Marshal(e.Modified.Format(time.RFC3339))
	if err != nil {
		return nil, nil, err
	}
	raw["modified"] = m
	out, err := json.Marshal(raw)
	if err != nil {
		return nil, nil, err
	}
	return &e, out, nil
}

// write replaces dir with the database: it writes a sibling directory and
// renames it into place, so an interrupted run leaves no half database.
func (db *database) write(dir string) error {
	tmp := dir + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	files := map[string]any{
		"index/db.json":      db.meta,
		"index/modules.json": db.modules,
		"index/vulns.json":   db.vulns,
	}
	for name, v := range files {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if err := writeFile(filepath.Join(tmp, name), b); err != nil {
			return err
		}
	}
	for id, b := range db.entries {
		if err := writeFile(filepath.Join(tmp, "ID", id+".json"), b); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return os.Rename(tmp, dir)
}

func writeFile(name string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return err
	}
	return os.WriteFile(name, b, 0o644)
}

// latestFixed is the newest fixed version of the SEMVER ranges, or "" when
// the vulnerability was introduced again after it (every version from then
// on may be affected). It mirrors NonSupersededFix of x/vuln's client.
func latestFixed(ranges []osvRange) string {
	var fixed string
	for _, r := range ranges {
		if r.Type != "SEMVER" {
			continue
		}
		for _, e := range r.Events {
			if e.Fixed != "" && semverLess(fixed, e.Fixed) {
				fixed = e.Fixed
			}
		}
		for _, e := range r.Events {
			if e.Introduced != "" && e.Introduced != "0" && semverLess(fixed, e.Introduced) {
				fixed = ""
				break
			}
		}
	}
	return fixed
}

// semverLess reports v1 < v2 for versions written with a "v", a "go" or no
// prefix, as golang.org/x/mod/semver.Compare orders them: an invalid
// version is less than every valid one, and equal to other invalid ones.
func semverLess(v1, v2 string) bool {
	a, okA := parseSemver(v1)
	b, okB := parseSemver(v2)
	if !okA || !okB {
		return !okA && okB
	}
	for i := range 3 {
		if c := compareNum(a.num[i], b.num[i]); c != 0 {
			return c < 0
		}
	}
	return comparePrerelease(a.pre, b.pre) < 0
}

type semver struct {
	num [3]string // major, minor, patch: decimal, no leading zeros
	pre string    // without the "-"; "" for a release
}

// parseSemver accepts MAJOR[.MINOR[.PATCH[-PRERELEASE]]][+BUILD] after an
// optional "v" or "go", the forms golang.org/x/mod/semver accepts.
func parseSemver(v string) (semver, bool) {
	v = strings.TrimPrefix(v, "v")
	v = strings.TrimPrefix(v, "go")
	var s semver
	build := false
	if i := strings.IndexByte(v, '+'); i >= 0 {
		if !validIdents(v[i+1:], false) {
			return s, false
		}
		v, build = v[:i], true
	}
	core := v
	if i := strings.IndexByte(v, '-'); i >= 0 {
		core, s.pre = v[:i], v[i+1:]
		if !validIdents(s.pre, true) {
			return s, false
		}
	}
	parts := strings.Split(core, ".")
	// A prerelease or build needs all three numbers ("v1.2-pre" is invalid).
	if len(parts) > 3 || ((s.pre != "" || build) && len(parts) != 3) {
		return s, false
	}
	s.num = [3]string{"0", "0", "0"}
	for i, p := range parts {
		if !isNum(p) {
			return s, false
		}
		s.num[i] = p
	}
	return s, true
}

// isNum: decimal digits without a leading zero (except "0" itself).
func isNum(p string) bool {
	if p == "" || (len(p) > 1 && p[0] == '0') {
		return false
	}
	for i := range len(p) {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
	}
	return true
}

// validIdents checks dot-separated identifiers of [0-9A-Za-z-]; in a
// prerelease, numeric ones have no leading zero.
func validIdents(s string, pre bool) bool {
	if s == "" {
		return false
	}
	for _, id := range strings.Split(s, ".") {
		if id == "" {
			return false
		}
		digits := true
		for i := range len(id) {
			c := id[i]
			switch {
			case c >= '0' && c <= '9':
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '-':
				digits = false
			default:
				return false
			}
		}
		if pre && digits && len(id) > 1 && id[0] == '0' {
			return false
		}
	}
	return true
}

func compareNum(a, b string) int {
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	return strings.Compare(a, b)
}

// comparePrerelease orders prereleases by semver 2.0.0: a release is
// greater than any prerelease; identifiers compare numerically when both
// are numbers, numbers before words, words by ASCII; a prefix comes first.
func comparePrerelease(a, b string) int {
	switch {
	case a == b:
		return 0
	case a == "":
		return 1
	case b == "":
		return -1
	}
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		x, y := as[i], bs[i]
		if x == y {
			continue
		}
		xn, yn := isNum(x), isNum(y)
		switch {
		case xn && yn:
			return compareNum(x, y)
		case xn:
			return -1
		case yn:
			return 1
		default:
			return strings.Compare(x, y)
		}
	}
	return len(as) - len(bs)
}
