// Package buildinfo says which build is running: the version and VCS
// revision (set by the Makefile and the Dockerfile with -ldflags, else read
// from the module and VCS information Go embeds) and the Go version. Every
// role exports it as llmrouter_build_info; `llmrouter version` prints it.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// Version and Revision are set at build time:
//
//	-ldflags "-X github.com/llmrouter/llmrouter/internal/buildinfo.Version=v1.2.3
//	          -X github.com/llmrouter/llmrouter/internal/buildinfo.Revision=<commit>"
//
// Empty, they come from the binary's embedded build information.
var (
	Version  string
	Revision string
)

// Info describes the running build.
type Info struct {
	Version   string // release or `git describe`; "devel" when nothing says
	Revision  string // VCS commit; "unknown" when nothing says
	Modified  bool   // the working tree had uncommitted changes (when Go recorded it)
	GoVersion string
}

// Get returns the running build's information.
func Get() Info {
	bi, ok := debug.ReadBuildInfo()
	return fromBuild(Version, Revision, bi, ok)
}

func fromBuild(version, revision string, bi *debug.BuildInfo, ok bool) Info {
	i := Info{Version: version, Revision: revision, GoVersion: runtime.Version()}
	if ok {
		if i.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			i.Version = bi.Main.Version // go install module@version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if i.Revision == "" {
					i.Revision = s.Value
				}
			case "vcs.modified":
				i.Modified = s.Value == "true"
			}
		}
		if bi.GoVersion != "" {
			i.GoVersion = bi.GoVersion
		}
	}
	if i.Version == "" {
		i.Version = "devel"
	}
	if i.Revision == "" {
		i.Revision = "unknown"
	}
	return i
}

// String is the one line `llmrouter version` prints.
func (i Info) String() string {
	rev := i.Revision
	if i.Modified {
		rev += "-modified"
	}
	return fmt.Sprintf("llmrouter %s (revision %s, %s)", i.Version, rev, i.GoVersion)
}

// Collector is llmrouter_build_info: constant 1, the build in its labels
// (join on it to see which versions run during a rolling upgrade).
func Collector() prometheus.Collector {
	i := Get()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "llmrouter_build_info",
		Help: "The running build: 1, with version, revision and Go version as labels.",
		ConstLabels: prometheus.Labels{
			"version": i.Version, "revision": i.Revision, "goversion": i.GoVersion,
		},
	})
	g.Set(1)
	return g
}
