package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// message is one object of govulncheck's JSON stream (-format json); only
// what the check reads.
type message struct {
	Config *struct {
		DB             string `json:"db"`
		DBLastModified string `json:"db_last_modified"`
		GoVersion      string `json:"go_version"`
		ScanLevel      string `json:"scan_level"`
	} `json:"config"`
	OSV *struct {
		ID      string `json:"id"`
		Summary string `json:"summary"`
	} `json:"osv"`
	Finding *struct {
		OSV          string `json:"osv"`
		FixedVersion string `json:"fixed_version"`
		Trace        []struct {
			Module   string `json:"module"`
			Version  string `json:"version"`
			Package  string `json:"package"`
			Function string `json:"function"`
		} `json:"trace"`
	} `json:"finding"`
}

// level is how close a finding came to the code: its module is required,
// its package imported, or its symbol called.
type level int

const (
	levelModule level = iota
	levelPackage
	levelSymbol
)

func (l level) String() string {
	return [...]string{"required module", "imported package", "called"}[l]
}

// vuln is one vulnerability as govulncheck reported it, at the closest
// level any of its findings reached.
type vuln struct {
	id, summary     string
	module, version string
	fixed           string
	level           level
}

func runCheck(args []string, stdin io.Reader, stdout io.Writer) error {
	flags := flag.NewFlagSet("vulndb check", flag.ContinueOnError)
	acceptFile := flags.String("accept", "", "file of accepted vulnerability IDs (one per line, then the module and the reason)")
	if err := flags.Parse(args); err != nil {
		return err
	}
	in := stdin
	if flags.NArg() > 0 {
		f, err := os.Open(flags.Arg(0))
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	accepted := map[string]acceptance{}
	if *acceptFile != "" {
		b, err := os.ReadFile(*acceptFile)
		if err != nil {
			return err
		}
		if accepted, err = parseAccepted(string(b)); err != nil {
			return fmt.Errorf("%s: %w", *acceptFile, err)
		}
	}
	vulns, header, err := readFindings(in)
	if err != nil {
		return fmt.Errorf("read govulncheck output: %w", err)
	}
	fmt.Fprintln(stdout, header)
	return judge(vulns, accepted, stdout)
}

// acceptance is one line of the accept file.
type acceptance struct {
	module, reason string
}

// parseAccepted reads "ID MODULE REASON..." lines; # starts a comment.
func parseAccepted(text string) (map[string]acceptance, error) {
	out := map[string]acceptance{}
	for i, line := range strings.Split(text, "\n") {
		line, _, _ = strings.Cut(line, "#")
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) < 3 || !strings.HasPrefix(f[0], "GO-") {
			return nil, fmt.Errorf("line %d: want ID MODULE REASON, got %q", i+1, strings.TrimSpace(line))
		}
		if _, dup := out[f[0]]; dup {
			return nil, fmt.Errorf("line %d: %s is listed twice", i+1, f[0])
		}
		out[f[0]] = acceptance{module: f[1], reason: strings.Join(f[2:], " ")}
	}
	return out, nil
}

// readFindings collects the vulnerabilities of a govulncheck JSON stream
// and a line describing the scan.
func readFindings(r io.Reader) ([]vuln, string, error) {
	dec := json.NewDecoder(bufio.NewReader(r))
	byID := map[string]*vuln{}
	summaries := map[string]string{}
	header := ""
	for {
		var m message
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, "", err
		}
		switch {
		case m.Config != nil:
			c := m.Config
			header = fmt.Sprintf("govulncheck: %s, db %s (modified %s), scan level %s", c.GoVersion, c.DB, c.DBLastModified, c.ScanLevel)
		case m.OSV != nil:
			summaries[m.OSV.ID] = m.OSV.Summary
		case m.Finding != nil && len(m.Finding.Trace) > 0:
			f := m.Finding
			top := f.Trace[0]
			l := levelModule
			switch {
			case top.Function != "":
				l = levelSymbol
			case top.Package != "":
				l = levelPackage
			}
			v := byID[f.OSV]
			if v == nil {
				v = &vuln{id: f.OSV, module: top.Module, version: top.Version, fixed: f.FixedVersion, level: l}
				byID[f.OSV] = v
			}
			v.level = max(v.level, l)
		}
	}
	if header == "" {
		return nil, "", errors.New("no config message: is this govulncheck -format json output?")
	}
	out := make([]vuln, 0, len(byID))
	for _, v := range byID {
		v.summary = summaries[v.id]
		out = append(out, *v)
	}
	slices.SortFunc(out, func(a, b vuln) int {
		if a.level != b.level {
			return int(b.level - a.level)
		}
		return strings.Compare(a.id, b.id)
	})
	return out, header, nil
}

// judge prints every vulnerability and fails on those the code calls,
// unless accepted without a fix.
func judge(vulns []vuln, accepted map[string]acceptance, w io.Writer) error {
	var failed []string
	for _, v := range vulns {
		fixed := v.fixed
		if fixed == "" {
			fixed = "no fix"
		}
		verdict := "informational: not called"
		if v.level == levelSymbol {
			a, ok := accepted[v.id]
			switch {
			case ok && a.module != v.module:
				verdict = "FAIL: accepted for module " + a.module + ", found in " + v.module
				failed = append(failed, v.id)
			case ok && v.fixed == "":
				verdict = "ACCEPTED: " + a.reason
			case ok:
				verdict = "FAIL: accepted while no fix existed; now fixed in " + v.fixed + ": upgrade"
				failed = append(failed, v.id)
			default:
				verdict = "FAIL"
				failed = append(failed, v.id)
			}
		}
		fmt.Fprintf(w, "%s %s@%s (%s), %s: %s\n    %s\n", v.id, v.module, v.version, fixed, v.level, verdict, v.summary)
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d vulnerabilities called by the code: %s", len(failed), strings.Join(failed, ", "))
	}
	fmt.Fprintf(w, "govulncheck: no vulnerability called by the code beyond the %d accepted\n", countCalled(vulns))
	return nil
}

func countCalled(vulns []vuln) int {
	n := 0
	for _, v := range vulns {
		if v.level == levelSymbol {
			n++
		}
	}
	return n
}
