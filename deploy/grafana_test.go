// Package deploy holds deployment files only; its tests check what can be
// checked of them without Docker, Grafana or a cluster.
package deploy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chimeraforge/chimeraforge/dashboards"
	"go.yaml.in/yaml/v3"
)

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// The provisioning files load the generated dashboards as they are: one
// default Prometheus datasource for their datasource variable, one file
// provider for the folder the JSON is mounted in.
func TestGrafanaProvisioning(t *testing.T) {
	var ds struct {
		APIVersion  int `yaml:"apiVersion"`
		Datasources []struct {
			Name      string         `yaml:"name"`
			UID       string         `yaml:"uid"`
			Type      string         `yaml:"type"`
			Access    string         `yaml:"access"`
			URL       string         `yaml:"url"`
			IsDefault bool           `yaml:"isDefault"`
			Editable  bool           `yaml:"editable"`
			JSONData  map[string]any `yaml:"jsonData"`
		} `yaml:"datasources"`
	}
	readYAML(t, "grafana/provisioning/datasources/chimeraforge.yaml", &ds)
	if ds.APIVersion != 1 || len(ds.Datasources) != 1 {
		t.Fatalf("datasources: apiVersion %d, %d datasources; want 1 and 1", ds.APIVersion, len(ds.Datasources))
	}
	if d := ds.Datasources[0]; d.Type != "prometheus" || !d.IsDefault || d.Access != "proxy" || !strings.HasPrefix(d.URL, "http") {
		t.Errorf("datasource %+v: want a default prometheus datasource reached through the Grafana proxy", d)
	}

	var prov struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Name                  string `yaml:"name"`
			OrgID                 int    `yaml:"orgId"`
			Folder                string `yaml:"folder"`
			FolderUID             string `yaml:"folderUid"`
			Type                  string `yaml:"type"`
			AllowUIUpdates        bool   `yaml:"allowUiUpdates"`
			DisableDeletion       bool   `yaml:"disableDeletion"`
			UpdateIntervalSeconds int    `yaml:"updateIntervalSeconds"`
			Options               struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAML(t, "grafana/provisioning/dashboards/chimeraforge.yaml", &prov)
	if prov.APIVersion != 1 || len(prov.Providers) != 1 {
		t.Fatalf("dashboard providers: apiVersion %d, %d providers; want 1 and 1", prov.APIVersion, len(prov.Providers))
	}
	if p := prov.Providers[0]; p.Type != "file" || !filepath.IsAbs(p.Options.Path) || p.AllowUIUpdates {
		t.Errorf("provider %+v: want a read-only file provider with an absolute path", p)
	}

	// Loaded as is: no export-time placeholders (__inputs, ${DS_…}) that
	// only the import dialog resolves, a uid and a prometheus datasource
	// variable in every dashboard.
	files, err := dashboards.Files()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for name, b := range files {
		if !strings.HasSuffix(name, ".json") {
			continue
		}
		n++
		var d struct {
			UID        string          `json:"uid"`
			Inputs     json.RawMessage `json:"__inputs"`
			Templating struct {
				List []struct {
					Name  string `json:"name"`
					Type  string `json:"type"`
					Query any    `json:"query"`
				} `json:"list"`
			} `json:"templating"`
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if d.UID == "" || d.Inputs != nil || strings.Contains(string(b), "${DS_") {
			t.Errorf("%s: uid %q, __inputs %s: not loadable by file provisioning as is", name, d.UID, d.Inputs)
		}
		found := false
		for _, v := range d.Templating.List {
			if v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus" {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: no datasource variable of type prometheus", name)
		}
	}
	if n < 4 {
		t.Errorf("%d dashboards generated, want 4", n)
	}
}
