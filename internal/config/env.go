package config

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
)

// ToolEnv are the LLMROUTER_* variables that are not configuration keys:
// the project's own tools and scripts read them, so they are not warned
// about. Every variable starting with ToolEnvPrefix belongs to
// scripts/run.sh (no configuration key starts with "run").
var ToolEnv = map[string]string{
	"LLMROUTER_BENCH_API_KEY": "llmrouter bench: the API key sent to the target as a Bearer token",
	"LLMROUTER_BIN":           "integration tests: a prebuilt llmrouter binary instead of building one",
	"LLMROUTER_TEST_MAIN":     "cmd/llmrouter tests: the test binary runs main() instead of the tests",
}

// ToolEnvPrefix prefixes the variables of scripts/run.sh (LLMROUTER_RUN_DIR
// and its port variables).
const ToolEnvPrefix = EnvPrefix + "_RUN_"

// EnvName is the environment variable that sets key.
func EnvName(key string) string {
	return EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// UnknownEnv returns a warning for each LLMROUTER_* variable in environ
// (KEY=VALUE pairs, as os.Environ) that sets no configuration key and is no
// tool's variable, naming the closest known variable: a misspelt variable
// is otherwise ignored without a word.
func UnknownEnv(environ []string) []string {
	def := Default()
	known := map[string]string{} // env name -> key
	var mapPrefixes []string     // map-valued keys take any suffix
	for _, f := range leaves(reflect.ValueOf(&def).Elem(), "") {
		known[EnvName(f.key)] = f.key
		if f.val.Kind() == reflect.Map {
			mapPrefixes = append(mapPrefixes, EnvName(f.key)+"_")
		}
	}
	for old := range Moved { // deprecated, applied at the new key by Load
		known[EnvName(old)] = old
	}
	for k := range PolicyKeys { // deprecated, a plugin parameter's default
		known[EnvName(PolicyKeysSection+"."+k)] = PolicyKeysSection + "." + k
	}
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, EnvPrefix+"_") || strings.HasPrefix(name, ToolEnvPrefix) {
			continue
		}
		if _, ok := known[name]; ok {
			continue
		}
		if _, ok := ToolEnv[name]; ok {
			continue
		}
		mapEntry := false
		for _, p := range mapPrefixes {
			if strings.HasPrefix(name, p) {
				mapEntry = true
			}
		}
		if mapEntry {
			continue
		}
		best, bestD := "", -1
		for env := range known {
			if d := editDistance(name, env); bestD < 0 || d < bestD || (d == bestD && env < best) {
				best, bestD = env, d
			}
		}
		out = append(out, fmt.Sprintf("environment variable %s sets no configuration key and is ignored; the closest is %s (%s); `llmrouter config print` shows the effective configuration",
			name, best, known[best]))
	}
	sort.Strings(out)
	return out
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
