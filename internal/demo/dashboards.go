package demo

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// Dashboard is one of dashboards/*.json as far as the demo needs it: the
// file to import into Grafana, its variables and every panel's queries.
type Dashboard struct {
	File      string
	Title     string
	Variables []DashboardVariable
	// Panels are the panels with queries, rows' panels included, in the
	// file's order.
	Panels []DashboardPanel
}

// DashboardVariable is one templating variable.
type DashboardVariable struct {
	Name string
	Type string // datasource, query, ...
	// Query is a query variable's query, e.g. label_values(up, instance).
	Query string
	// AllValue is what "All" stands for, e.g. ".*".
	AllValue string
}

// DashboardPanel is one panel and its queries.
type DashboardPanel struct {
	Title   string
	Targets []DashboardTarget
}

// DashboardTarget is one query of a panel.
type DashboardTarget struct {
	RefID string
	Expr  string
}

// Dashboards reads the module's dashboards/*.json, sorted by file name.
func (e *Env) Dashboards() ([]Dashboard, error) {
	return LoadDashboards(filepath.Join(e.root, "dashboards"))
}

// LoadDashboards reads every *.json dashboard in dir, sorted by file name.
func LoadDashboards(dir string) ([]Dashboard, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	var out []Dashboard
	for _, f := range files {
		d, err := loadDashboard(f)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no dashboards in %s", dir)
	}
	return out, nil
}

type rawPanel struct {
	Title   string `json:"title"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []rawPanel `json:"panels"` // a row's panels
}

func loadDashboard(path string) (Dashboard, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return Dashboard{}, err
	}
	var doc struct {
		Title      string     `json:"title"`
		Panels     []rawPanel `json:"panels"`
		Templating struct {
			List []struct {
				Name     string          `json:"name"`
				Type     string          `json:"type"`
				Query    json.RawMessage `json:"query"`
				AllValue string          `json:"allValue"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return Dashboard{}, fmt.Errorf("%s: %w", path, err)
	}
	d := Dashboard{File: path, Title: doc.Title}
	for _, v := range doc.Templating.List {
		// A query is a string or Grafana's {"query": "..."} object.
		var q string
		if json.Unmarshal(v.Query, &q) != nil {
			var obj struct {
				Query string `json:"query"`
			}
			_ = json.Unmarshal(v.Query, &obj)
			q = obj.Query
		}
		d.Variables = append(d.Variables, DashboardVariable{Name: v.Name, Type: v.Type, Query: q, AllValue: v.AllValue})
	}
	var walk func([]rawPanel)
	walk = func(ps []rawPanel) {
		for _, p := range ps {
			if len(p.Targets) > 0 {
				dp := DashboardPanel{Title: p.Title}
				for _, t := range p.Targets {
					dp.Targets = append(dp.Targets, DashboardTarget{RefID: t.RefID, Expr: t.Expr})
				}
				d.Panels = append(d.Panels, dp)
			}
			walk(p.Panels)
		}
	}
	walk(doc.Panels)
	return d, nil
}
