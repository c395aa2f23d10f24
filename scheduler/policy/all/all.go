package all

import (
	_ "github.com/llmrouter/llmrouter/scheduler/policy/leastrequest"
	_ "github.com/llmrouter/llmrouter/scheduler/policy/leasttoken"
	_ "github.com/llmrouter/llmrouter/scheduler/policy/metricbased"
	_ "github.com/llmrouter/llmrouter/scheduler/policy/pdsplit"
	_ "github.com/llmrouter/llmrouter/scheduler/policy/prefixcache"
	_ "github.com/llmrouter/llmrouter/scheduler/policy/random"
	_ "github.com/llmrouter/llmrouter/scheduler/policy/roundrobin"
)
