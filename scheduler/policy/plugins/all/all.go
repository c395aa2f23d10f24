// Package all registers every scheduling plugin and every policy (each a
// built-in profile): import it for its side effects.
package all

import (
	_ "github.com/llmrouter/llmrouter/scheduler/policy/affinity" // session-affinity-scorer
	_ "github.com/llmrouter/llmrouter/scheduler/policy/all"
	_ "github.com/llmrouter/llmrouter/scheduler/policy/plugins/cacheaware"
	_ "github.com/llmrouter/llmrouter/scheduler/policy/plugins/filters"
	_ "github.com/llmrouter/llmrouter/scheduler/policy/plugins/lorascorer"
	_ "github.com/llmrouter/llmrouter/scheduler/policy/plugins/pickers"
	_ "github.com/llmrouter/llmrouter/scheduler/policy/plugins/prefixscorer"
	_ "github.com/llmrouter/llmrouter/scheduler/policy/plugins/scorers"
)
