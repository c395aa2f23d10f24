package peers

import (
	"embed"
	"fmt"

	"github.com/llmrouter/llmrouter/scheduler/framework"
	_ "github.com/llmrouter/llmrouter/scheduler/policy/plugins/all" // the plugins the files name
)

// Names of the comparison profiles.
const (
	CacheAware = "peer-cache-aware"
	Scorer     = "peer-scorer"
)

//go:embed peer-cache-aware.yaml peer-scorer.yaml
var files embed.FS

func init() {
	for _, name := range []string{CacheAware, Scorer} {
		b, err := files.ReadFile(name + ".yaml")
		if err != nil {
			panic(err)
		}
		spec, err := framework.ParseEndpointPickerConfig(b)
		if err != nil {
			panic(fmt.Sprintf("sim/peers %s.yaml: %v", name, err))
		}
		framework.RegisterProfile(name, spec)
	}
}
