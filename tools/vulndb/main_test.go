package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

var snapshot = time.Date(2026, 11, 5, 23, 49, 57, 0, time.UTC)

// osvFile renders an OSV entry the way data/osv holds them: no times.
func osvFile(id, extra, affected string) string {
	return `{"schema_version": "1.3.1", "id": "` + id + `", "modified": "0001-01-01T00:00:00Z",
		"published": "0001-01-01T00:00:00Z", "summary": "s", "details": "d"` + extra + `,
		"affected": ` + affected + `}`
}

func semverAffected(module string, events ...string) string {
	return `{"package": {"name": "` + module + `", "ecosystem": "Go"}, "ranges": [{"type": "SEMVER", "events": [` +
		strings.Join(events, ", ") + `]}]}`
}

func TestVulnDBBuildIndex(t *testing.T) {
	intro := func(v string) string { return `{"introduced": "` + v + `"}` }
	fixed := func(v string) string { return `{"fixed": "` + v + `"}` }
	withdrawn := time.Date(2024, 4, 17, 18, 6, 23, 0, time.UTC)
	later := time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		file    string
		modules []moduleMeta
		vuln    vulnMeta
	}{
		{
			name:    "one fix",
			file:    osvFile("GO-2020-0001", `, "aliases": ["CVE-2020-1"]`, "["+semverAffected("example.com/a", intro("0"), fixed("1.2.3"))+"]"),
			modules: []moduleMeta{{Path: "example.com/a", Vulns: []moduleVuln{{ID: "GO-2020-0001", Modified: snapshot, Fixed: "1.2.3"}}}},
			vuln:    vulnMeta{ID: "GO-2020-0001", Modified: snapshot, Aliases: []string{"CVE-2020-1"}},
		},
		{
			name: "two fixes: the newer, by semver not by text",
			file: osvFile("GO-2021-0002", "", "["+semverAffected("example.com/a",
				intro("0"), fixed("1.9.0"), intro("1.10.0"), fixed("1.10.2"))+"]"),
			modules: []moduleMeta{{Path: "example.com/a", Vulns: []moduleVuln{{ID: "GO-2021-0002", Modified: snapshot, Fixed: "1.10.2"}}}},
			vuln:    vulnMeta{ID: "GO-2021-0002", Modified: snapshot},
		},
		{
			name: "introduced again after the last fix: no fix",
			file: osvFile("GO-2021-0003", "", "["+semverAffected("example.com/a",
				intro("0"), fixed("1.2.0"), intro("2.0.0"))+"]"),
			modules: []moduleMeta{{Path: "example.com/a", Vulns: []moduleVuln{{ID: "GO-2021-0003", Modified: snapshot}}}},
			vuln:    vulnMeta{ID: "GO-2021-0003", Modified: snapshot},
		},
		{
			name: "a release after its prereleases",
			file: osvFile("GO-2021-0004", "", "["+semverAffected("stdlib",
				intro("0"), fixed("1.21.0-rc.2"), intro("1.21.0-rc.1"), fixed("1.21.0"))+"]"),
			modules: []moduleMeta{{Path: "stdlib", Vulns: []moduleVuln{{ID: "GO-2021-0004", Modified: snapshot, Fixed: "1.21.0"}}}},
			vuln:    vulnMeta{ID: "GO-2021-0004", Modified: snapshot},
		},
		{
			name: "several modules, one affected entry each",
			file: osvFile("GO-2022-0005", "", "["+semverAffected("example.com/b/v2", intro("2.0.0"), fixed("2.0.1"))+", "+
				semverAffected("example.com/b", intro("0"))+"]"),
			modules: []moduleMeta{
				{Path: "example.com/b", Vulns: []moduleVuln{{ID: "GO-2022-0005", Modified: snapshot}}},
				{Path: "example.com/b/v2", Vulns: []moduleVuln{{ID: "GO-2022-0005", Modified: snapshot, Fixed: "2.0.1"}}},
			},
			vuln: vulnMeta{ID: "GO-2022-0005", Modified: snapshot},
		},
		{
			name:    "ranges that are not SEMVER give no fix",
			file:    osvFile("GO-2022-0006", "", `[{"package": {"name": "example.com/c"}, "ranges": [{"type": "GIT", "events": [{"fixed": "abc"}]}]}]`),
			modules: []moduleMeta{{Path: "example.com/c", Vulns: []moduleVuln{{ID: "GO-2022-0006", Modified: snapshot}}}},
			vuln:    vulnMeta{ID: "GO-2022-0006", Modified: snapshot},
		},
		{
			name:    "withdrawn: kept, for govulncheck to skip",
			file:    osvFile("GO-2024-2730", `, "withdrawn": "2024-04-17T18:06:23Z"`, "["+semverAffected("github.com/gorilla/sessions", intro("0"))+"]"),
			modules: []moduleMeta{{Path: "github.com/gorilla/sessions", Vulns: []moduleVuln{{ID: "GO-2024-2730", Modified: snapshot}}}},
			vuln:    vulnMeta{ID: "GO-2024-2730", Modified: snapshot},
		},
		{
			name:    "withdrawn after the snapshot: modified is never before withdrawn",
			file:    osvFile("GO-2027-0001", `, "withdrawn": "`+later.Format(time.RFC3339)+`"`, "["+semverAffected("example.com/d", intro("0"))+"]"),
			modules: []moduleMeta{{Path: "example.com/d", Vulns: []moduleVuln{{ID: "GO-2027-0001", Modified: later}}}},
			vuln:    vulnMeta{ID: "GO-2027-0001", Modified: later},
		},
		{
			name: "withdrawn with nothing affected: no module entry",
			file: osvFile("GO-2023-0007", `, "withdrawn": "`+withdrawn.Format(time.RFC3339)+`"`, "[]"),
			vuln: vulnMeta{ID: "GO-2023-0007", Modified: snapshot},
		},
		{
			name: "a modified time of its own is kept",
			file: strings.Replace(osvFile("GO-2023-0008", "", "["+semverAffected("example.com/e", intro("0"), fixed("0.1.0"))+"]"),
				"0001-01-01T00:00:00Z", "2023-05-06T07:08:09Z", 1),
			modules: []moduleMeta{{Path: "example.com/e", Vulns: []moduleVuln{{ID: "GO-2023-0008",
				Modified: time.Date(2023, 5, 6, 7, 8, 9, 0, time.UTC), Fixed: "0.1.0"}}}},
			vuln: vulnMeta{ID: "GO-2023-0008", Modified: time.Date(2023, 5, 6, 7, 8, 9, 0, time.UTC)},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := tc.vuln.ID
			db, err := build(fstest.MapFS{id + ".json": {Data: []byte(tc.file)}, "README.md": {Data: []byte("not an entry")}}, snapshot)
			if err != nil {
				t.Fatal(err)
			}
			if tc.modules == nil {
				tc.modules = []moduleMeta{}
			}
			if db.modules == nil {
				db.modules = []moduleMeta{}
			}
			if !reflect.DeepEqual(db.modules, tc.modules) {
				t.Errorf("modules = %+v\nwant      %+v", db.modules, tc.modules)
			}
			if len(db.vulns) != 1 || !reflect.DeepEqual(db.vulns[0], tc.vuln) {
				t.Errorf("vulns = %+v, want [%+v]", db.vulns, tc.vuln)
			}
			if !db.meta.Modified.Equal(tc.vuln.Modified) {
				t.Errorf("db modified = %s, want %s", db.meta.Modified, tc.vuln.Modified)
			}
			// The entry itself keeps every field, withdrawn included, with
			// its modified time set.
			var in, out map[string]any
			if err := json.Unmarshal([]byte(tc.file), &in); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(db.entries[id], &out); err != nil {
				t.Fatal(err)
			}
			if out["modified"] != tc.vuln.Modified.Format(time.RFC3339) {
				t.Errorf("entry modified = %v, want %s", out["modified"], tc.vuln.Modified.Format(time.RFC3339))
			}
			delete(in, "modified")
			delete(out, "modified")
			if !reflect.DeepEqual(in, out) {
				t.Errorf("entry changed beyond modified:\n%v\n%v", in, out)
			}
		})
	}
}

func TestVulnDBBuildErrors(t *testing.T) {
	for name, fsys := range map[string]fstest.MapFS{
		"file not named ID.json": {"GO-2020-0001.json": {Data: []byte(osvFile("GO-2020-0002", "", "[]"))}},
		"not JSON":               {"GO-2020-0001.json": {Data: []byte("{")}},
		"no id":                  {"x.json": {Data: []byte(`{"affected": []}`)}},
		"no entries":             {"README.md": {Data: []byte("x")}},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := build(fsys, snapshot); err == nil {
				t.Error("built without error")
			}
		})
	}
}

func TestVulnDBIndexOrder(t *testing.T) {
	fsys := fstest.MapFS{}
	for _, e := range []struct{ id, module string }{
		{"GO-2021-0010", "example.com/z"}, {"GO-2020-0001", "example.com/z"}, {"GO-2022-0100", "example.com/a"},
	} {
		fsys[e.id+".json"] = &fstest.MapFile{Data: []byte(osvFile(e.id, "", "["+semverAffected(e.module, `{"introduced": "0"}`)+"]"))}
	}
	db, err := build(fsys, snapshot)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range db.modules {
		for _, v := range m.Vulns {
			got = append(got, m.Path+" "+v.ID)
		}
	}
	want := []string{"example.com/a GO-2022-0100", "example.com/z GO-2020-0001", "example.com/z GO-2021-0010"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("modules order = %q, want %q", got, want)
	}
	if db.vulns[0].ID != "GO-2020-0001" || db.vulns[2].ID != "GO-2022-0100" {
		t.Errorf("vulns order = %+v", db.vulns)
	}
}

// TestVulnDBBuildWritesLayout runs the command on a directory and reads back the
// files govulncheck opens: index/db.json, index/modules.json, ID/<id>.json.
func TestVulnDBBuildWritesLayout(t *testing.T) {
	src := t.TempDir()
	entry := osvFile("GO-2020-0001", "", "["+semverAffected("example.com/a", `{"introduced": "0"}`, `{"fixed": "1.0.1"}`)+"]")
	if err := os.WriteFile(filepath.Join(src, "GO-2020-0001.json"), []byte(entry), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "db")
	// A stale database is replaced, not merged into.
	if err := os.MkdirAll(filepath.Join(out, "ID"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, "ID", "GO-1999-0001.json"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout bytes.Buffer
	if err := run([]string{"build", "-src", src, "-version", "v0.0.0-20261105234957-e22db6528018", "-out", out}, nil, &stdout); err != nil {
		t.Fatal(err)
	}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got, want := read("index/db.json"), `{"modified":"2026-11-05T23:49:57Z"}`; got != want {
		t.Errorf("db.json = %s, want %s", got, want)
	}
	if got, want := read("index/modules.json"), `[{"path":"example.com/a","vulns":[{"id":"GO-2020-0001","modified":"2026-11-05T23:49:57Z","fixed":"1.0.1"}]}]`; got != want {
		t.Errorf("modules.json = %s, want %s", got, want)
	}
	if got, want := read("index/vulns.json"), `[{"id":"GO-2020-0001","modified":"2026-11-05T23:49:57Z"}]`; got != want {
		t.Errorf("vulns.json = %s, want %s", got, want)
	}
	if !strings.Contains(read("ID/GO-2020-0001.json"), `"modified":"2026-11-05T23:49:57Z"`) {
		t.Errorf("entry = %s", read("ID/GO-2020-0001.json"))
	}
	if _, err := os.Stat(filepath.Join(out, "ID", "GO-1999-0001.json")); !os.IsNotExist(err) {
		t.Errorf("a stale entry survived the rebuild (%v)", err)
	}
	if _, err := os.Stat(out + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("temporary directory left behind (%v)", err)
	}
}

func TestVulnDBPseudoVersionTime(t *testing.T) {
	for v, want := range map[string]time.Time{
		"v0.0.0-20261105234957-e22db6528018":       snapshot,
		"v1.2.4-0.20261105234957-e22db6528018":     snapshot,
		"v1.2.3-pre.0.20261105234957-e22db6528018": snapshot,
	} {
		got, err := pseudoVersionTime(v)
		if err != nil || !got.Equal(want) {
			t.Errorf("pseudoVersionTime(%q) = %s, %v; want %s", v, got, err, want)
		}
	}
	for _, v := range []string{"v1.2.3", "latest", "v0.0.0-2026110523-abc"} {
		if _, err := pseudoVersionTime(v); err == nil {
			t.Errorf("pseudoVersionTime(%q): no error", v)
		}
	}
}

// TestVulnDBSemverLess checks the ordering against golang.org/x/mod/semver's
// rules, which x/vuln uses for "fixed".
func TestVulnDBSemverLess(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		less bool
	}{
		{"1.2.3", "1.2.4", true},
		{"1.9.0", "1.10.0", true},
		{"1.10.0", "1.9.0", false},
		{"v1.2.3", "1.2.3", false},
		{"1.2.3", "go1.2.3", false},
		{"1.2", "1.2.1", true}, // short form is 1.2.0
		{"1", "1.0.0", false},  // equal
		{"1.0.0-rc.1", "1.0.0", true},
		{"1.0.0", "1.0.0-rc.1", false},
		{"1.0.0-alpha", "1.0.0-alpha.1", true},
		{"1.0.0-alpha.1", "1.0.0-alpha.beta", true}, // numbers before words
		{"1.0.0-beta.2", "1.0.0-beta.11", true},     // numerically
		{"1.0.0-rc.1", "1.0.0-rc.1+build", false},   // build ignored
		{"0.0.0-20210101000000-abcdef", "0.0.0-20220101000000-abcdef", true},
		{"1.21.0-0", "1.21.0", true},
		{"", "0.0.1", true},         // invalid before valid
		{"0.0.1", "", false},        //
		{"", "", false},             // invalid equals invalid
		{"garbage", "0.0.0", true},  //
		{"01.2.3", "0.0.1", true},   // leading zero: invalid
		{"1.2-pre", "0.0.1", true},  // prerelease needs three numbers
		{"1.2+meta", "0.0.1", true}, // so does build metadata
		{"1.2.3-01", "0.0.1", true}, // numeric prerelease with a leading zero
		{"1.2.3-a..b", "0.0.1", true},
	} {
		if got := semverLess(tc.a, tc.b); got != tc.less {
			t.Errorf("semverLess(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.less)
		}
	}
}
