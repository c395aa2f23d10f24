package buildinfo

import (
	"runtime/debug"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestLinkerValuesWin(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.9.0"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc"}, {Key: "vcs.modified", Value: "true"}}}
	i := fromBuild("v1.0.0", "def", bi, true)
	if i.Version != "v1.0.0" || i.Revision != "def" || !i.Modified || i.GoVersion != "go1.26.8" {
		t.Fatalf("info = %+v", i)
	}
	if s := i.String(); s != "llmrouter v1.0.0 (revision def-modified, go1.26.8)" {
		t.Fatalf("String() = %q", s)
	}
}

func TestEmbeddedInformationFillsIn(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.9.0"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc"}}}
	if i := fromBuild("", "", bi, true); i.Version != "v0.9.0" || i.Revision != "abc" || i.Modified {
		t.Fatalf("info = %+v", i)
	}
	// A plain `go build` in a checkout: no module version, VCS stamping off.
	bi = &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}}
	if i := fromBuild("", "", bi, true); i.Version != "devel" || i.Revision != "unknown" {
		t.Fatalf("info = %+v", i)
	}
}

func TestCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(Collector())
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 || mfs[0].GetName() != "llmrouter_build_info" {
		t.Fatalf("gathered %v, %v", mfs, err)
	}
	m := mfs[0].GetMetric()[0]
	labels := map[string]string{}
	for _, l := range m.GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	if m.GetGauge().GetValue() != 1 || labels["version"] == "" || labels["revision"] == "" || !strings.HasPrefix(labels["goversion"], "go") {
		t.Fatalf("build info = %v %v", m.GetGauge().GetValue(), labels)
	}
}
