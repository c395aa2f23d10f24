// Package reglimits holds the bounds of what one agent registration and its
// reports may name, the contract between the scheduler, which enforces them,
// and the agent, which trims what its engine lists to them so that a
// legitimate agent never trips them. Without them only gRPC's message size
// (4 MiB) bounded a registration: a million model names, each copied into
// the registry, the scheduler's pools and every ListModels answer.
//
// The count and byte bounds match what one ListModels answer carries
// (scheduler.MaxListedModels, scheduler.MaxListedModelBytes): one instance
// may name as much as the whole fleet's list shows, and no more.
package reglimits

import "fmt"

const (
	// MaxNames bounds the names of one registration (its models and LoRA
	// adapters together) and of each name list of one report.
	MaxNames = 1024
	// MaxNamesBytes bounds the bytes of those names.
	MaxNamesBytes = 256 << 10
	// MaxNameBytes bounds one model or adapter name: the gateway reads an
	// SGLang lora_path of at most as many bytes. Hugging Face repository
	// ids are at most 96 characters; a local path served as a model name
	// is longer, rarely by much.
	MaxNameBytes = 1024
	// MaxLabelBytes bounds a registration's engine, engine_version and
	// agent_version.
	MaxLabelBytes = 256
	// MaxReasonBytes bounds a report's unhealthy_reason; a longer one is
	// cut (it is logged and shown, never routed on).
	MaxReasonBytes = 1024
)

// Names keeps the leading names of names within MaxNames entries and
// MaxNamesBytes bytes, minus empty names and names over MaxNameBytes,
// given room already taken by earlier lists (usedN names, usedBytes bytes).
// It returns names itself when nothing is left off, and how many it left
// off.
func Names(names []string, usedN, usedBytes int) (kept []string, dropped int) {
	n, size := usedN, usedBytes
	for i, s := range names {
		if s == "" || len(s) > MaxNameBytes || n == MaxNames || size+len(s) > MaxNamesBytes {
			// Copy out what fits, then skip what does not.
			if kept == nil {
				kept = make([]string, i, min(len(names), MaxNames))
				copy(kept, names[:i])
			}
			if s != "" {
				dropped++
			}
			continue
		}
		n++
		size += len(s)
		if kept != nil {
			kept = append(kept, s)
		}
	}
	if kept == nil {
		return names, 0
	}
	return kept, dropped
}

// CheckRegistration checks a registration's models and lora_adapters
// against the bounds. The error names the field, what was sent and what is
// accepted.
func CheckRegistration(models, loraAdapters []string) error {
	if n := len(models) + len(loraAdapters); n > MaxNames {
		return fmt.Errorf("models and lora_adapters name %d names (%d models, %d lora_adapters): accepted: at most %d per registration",
			n, len(models), len(loraAdapters), MaxNames)
	}
	size := 0
	for _, l := range []struct {
		field string
		names []string
	}{{"models", models}, {"lora_adapters", loraAdapters}} {
		for i, s := range l.names {
			if len(s) > MaxNameBytes {
				return fmt.Errorf("%s[%d] is %d bytes long: accepted: names of at most %d bytes", l.field, i, len(s), MaxNameBytes)
			}
			size += len(s)
		}
	}
	if size > MaxNamesBytes {
		return fmt.Errorf("models and lora_adapters hold %d bytes of names: accepted: at most %d bytes per registration", size, MaxNamesBytes)
	}
	return nil
}

// CheckLabel checks one of a registration's short strings (engine,
// engine_version, agent_version).
func CheckLabel(field, v string) error {
	if len(v) > MaxLabelBytes {
		return fmt.Errorf("%s is %d bytes long: accepted: at most %d bytes", field, len(v), MaxLabelBytes)
	}
	return nil
}

// Size is the number of names and their bytes, the room a list takes for
// the lists after it.
func Size(names []string) (n, bytes int) {
	for _, s := range names {
		bytes += len(s)
	}
	return len(names), bytes
}
