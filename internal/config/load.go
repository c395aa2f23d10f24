package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// EnvPrefix prefixes every environment variable: llm_gateway.max_queue_size
// is LLMROUTER_LLM_GATEWAY_MAX_QUEUE_SIZE, token is LLMROUTER_TOKEN.
const EnvPrefix = "LLMROUTER"

// FlagBinding ties a command-line flag to a configuration key. A flag
// overrides the file and the environment only when it was given.
type FlagBinding struct {
	Key  string
	Flag *pflag.Flag
}

// Load reads the configuration: defaults, then file (YAML or JSON, "" for
// none), then LLMROUTER_* environment, then the given flags; then validates.
func Load(file string, flags []FlagBinding) (Config, error) {
	v := viper.New()
	def := Default()
	fields := leaves(reflect.ValueOf(&def).Elem(), "")
	for _, f := range fields {
		v.SetDefault(f.key, f.val.Interface())
	}
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	if file != "" {
		v.SetConfigFile(file)
		if err := v.ReadInConfig(); err != nil {
			return Config{}, fmt.Errorf("config file %s: %w", file, err)
		}
	}
	for _, b := range flags {
		if b.Flag == nil {
			continue
		}
		if err := v.BindPFlag(b.Key, b.Flag); err != nil {
			return Config{}, fmt.Errorf("binding flag --%s to %s: %w", b.Flag.Name, b.Key, err)
		}
	}
	moved, err := moveKeys(v)
	if err != nil {
		return Config{}, err
	}
	params, deprecated := paramDefaults(v)
	moved = append(moved, deprecated...)
	if err := checkKeys(v, fields); err != nil {
		return Config{}, err
	}

	cfg := Default()
	cfg.Deprecated = moved
	cfg.Scheduler.ParamDefaults = params
	for _, f := range leaves(reflect.ValueOf(&cfg).Elem(), "") {
		raw := v.Get(f.key)
		if raw == nil {
			continue
		}
		if err := assign(f.val, raw); err != nil {
			return Config{}, fmt.Errorf("config: %s = %s: %w", f.key, quote(raw), err)
		}
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

type leaf struct {
	key string
	val reflect.Value
}

// leaves lists every settable configuration key of a struct in field order.
func leaves(v reflect.Value, prefix string) []leaf {
	var out []leaf
	t := v.Type()
	for i := range t.NumField() {
		name := t.Field(i).Tag.Get("mapstructure")
		if name == "" {
			continue
		}
		key := name
		if prefix != "" {
			key = prefix + "." + name
		}
		fv := v.Field(i)
		if fv.Kind() == reflect.Struct && fv.Type() != reflect.TypeFor[time.Duration]() {
			out = append(out, leaves(fv, key)...)
			continue
		}
		out = append(out, leaf{key: key, val: fv})
	}
	return out
}

// checkKeys rejects keys the configuration does not know, naming the key and
// the keys accepted beside it.
func checkKeys(v *viper.Viper, fields []leaf) error {
	known := map[string]reflect.Kind{}
	for _, f := range fields {
		known[f.key] = f.val.Kind()
	}
	var unknown []string
	for _, k := range v.AllKeys() {
		if _, ok := known[k]; ok {
			continue
		}
		if _, ok := Moved[k]; ok {
			continue // applied to its new place by moveKeys
		}
		if _, ok := policyKey(k); ok {
			continue // a plugin parameter's default (paramDefaults)
		}
		// Keys inside a map-valued setting (agent.metric_map.running) are data.
		parent := k
		isMapEntry := false
		for {
			i := strings.LastIndex(parent, ".")
			if i < 0 {
				break
			}
			parent = parent[:i]
			if known[parent] == reflect.Map {
				isMapEntry = true
				break
			}
		}
		if !isMapEntry {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	k := unknown[0]
	section := ""
	if i := strings.LastIndex(k, "."); i >= 0 {
		section = k[:i]
	}
	var siblings []string
	for _, f := range fields {
		s := ""
		if i := strings.LastIndex(f.key, "."); i >= 0 {
			s = f.key[:i]
		}
		if s == section {
			siblings = append(siblings, f.key)
		}
	}
	if section == PolicyKeysSection {
		for _, old := range deprecatedKeys() {
			siblings = append(siblings, old+" (deprecated)")
		}
	}
	if len(siblings) == 0 {
		for _, f := range fields {
			siblings = append(siblings, f.key)
		}
	}
	return fmt.Errorf("config: unknown key %q; accepted keys here: %s", k, strings.Join(siblings, ", "))
}

// assign converts a raw value from a file, the environment or a flag into the
// field's type. Durations take Go syntax ("10s", "500ms") or a bare number of
// milliseconds (the EAS JSON writes 5000).
func assign(dst reflect.Value, raw any) error {
	switch dst.Interface().(type) {
	case time.Duration:
		d, err := parseDuration(raw)
		if err != nil {
			return err
		}
		dst.SetInt(int64(d))
		return nil
	}
	switch dst.Kind() {
	case reflect.String:
		switch r := raw.(type) {
		case string:
			dst.SetString(r)
		case int, int64, float64, bool:
			dst.SetString(fmt.Sprint(r))
		default:
			return errors.New("want a string")
		}
	case reflect.Int:
		n, err := toInt(raw)
		if err != nil {
			return err
		}
		dst.SetInt(n)
	case reflect.Float64:
		f, err := toFloat(raw)
		if err != nil {
			return err
		}
		dst.SetFloat(f)
	case reflect.Bool:
		switch r := raw.(type) {
		case bool:
			dst.SetBool(r)
		case string:
			b, err := strconv.ParseBool(strings.TrimSpace(r))
			if err != nil {
				return errors.New("want true or false")
			}
			dst.SetBool(b)
		default:
			return errors.New("want true or false")
		}
	case reflect.Slice:
		var items []string
		switch r := raw.(type) {
		case string:
			for _, s := range strings.Split(r, ",") {
				if s = strings.TrimSpace(s); s != "" {
					items = append(items, s)
				}
			}
		case []string:
			items = r
		case []any:
			for _, e := range r {
				s, ok := e.(string)
				if !ok {
					return errors.New("want a list of strings")
				}
				items = append(items, s)
			}
		default:
			return errors.New("want a list of strings")
		}
		if items == nil {
			items = []string{}
		}
		dst.Set(reflect.ValueOf(items))
	case reflect.Map:
		m := map[string]string{}
		switch r := raw.(type) {
		case map[string]string:
			for k, e := range r {
				m[k] = e
			}
		case map[string]any:
			for k, e := range r {
				s, ok := e.(string)
				if !ok {
					return fmt.Errorf("entry %q: want a string", k)
				}
				m[k] = s
			}
		case string:
			// Environment form: "running=vllm:num_requests_running,waiting=...".
			for _, kv := range strings.Split(r, ",") {
				if kv = strings.TrimSpace(kv); kv == "" {
					continue
				}
				k, e, ok := strings.Cut(kv, "=")
				if !ok {
					return errors.New("want key=value pairs separated by commas")
				}
				m[strings.TrimSpace(k)] = strings.TrimSpace(e)
			}
		default:
			return errors.New("want a mapping of strings")
		}
		dst.Set(reflect.ValueOf(m))
	default:
		return fmt.Errorf("unsupported setting type %s", dst.Type())
	}
	return nil
}

func parseDuration(raw any) (time.Duration, error) {
	const want = `want a duration such as "10s" or "500ms", or a whole number of milliseconds`
	switch r := raw.(type) {
	case time.Duration:
		return r, nil
	case int:
		return time.Duration(r) * time.Millisecond, nil
	case int64:
		return time.Duration(r) * time.Millisecond, nil
	case float64:
		if r != float64(int64(r)) {
			return 0, errors.New(want)
		}
		return time.Duration(int64(r)) * time.Millisecond, nil
	case string:
		s := strings.TrimSpace(r)
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return time.Duration(n) * time.Millisecond, nil
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, errors.New(want)
		}
		return d, nil
	}
	return 0, errors.New(want)
}

func toInt(raw any) (int64, error) {
	switch r := raw.(type) {
	case int:
		return int64(r), nil
	case int64:
		return r, nil
	case float64:
		if r == float64(int64(r)) {
			return int64(r), nil
		}
	case string:
		if n, err := strconv.ParseInt(strings.TrimSpace(r), 10, 64); err == nil {
			return n, nil
		}
	}
	return 0, errors.New("want a whole number")
}

func toFloat(raw any) (float64, error) {
	switch r := raw.(type) {
	case int:
		return float64(r), nil
	case int64:
		return float64(r), nil
	case float64:
		return r, nil
	case string:
		if f, err := strconv.ParseFloat(strings.TrimSpace(r), 64); err == nil {
			return f, nil
		}
	}
	return 0, errors.New("want a number")
}

func quote(raw any) string {
	if s, ok := raw.(string); ok {
		return strconv.Quote(s)
	}
	return fmt.Sprint(raw)
}

// Validate checks every value and every contradiction between values.
func (c Config) Validate() error {
	var errs []error
	bad := func(key string, val any, accepted string) {
		errs = append(errs, fmt.Errorf("config: %s = %s: accepted: %s", key, quote(val), accepted))
	}
	oneOf := func(key, val string, allowed []string, emptyOK bool) {
		if (val == "" && emptyOK) || slices.Contains(allowed, val) {
			return
		}
		acc := strings.Join(allowed, ", ")
		if emptyOK {
			acc += `, or "" to detect`
		}
		bad(key, val, acc)
	}
	oneOf("log_level", c.LogLevel, []string{"debug", "info", "warn", "error"}, false)
	oneOf("log_format", c.LogFormat, []string{"json", "console"}, false)

	g := c.Gateway
	oneOf("llm_gateway.infer_backend", g.InferBackend, Backends, true)
	if g.MaxQueueSize < 0 {
		bad("llm_gateway.max_queue_size", g.MaxQueueSize, "0 (no queue) or more")
	}
	if g.RetryCount < 0 || g.RetryCount > 10 {
		bad("llm_gateway.retry_count", g.RetryCount, "0 to 10")
	}
	if g.WaitScheduleTimeout <= 0 {
		bad("llm_gateway.wait_schedule_timeout", g.WaitScheduleTimeout.String(), "a positive duration")
	}
	if g.WaitScheduleTryPeriod <= 0 {
		bad("llm_gateway.wait_schedule_try_period", g.WaitScheduleTryPeriod.String(), "a positive duration")
	} else if g.WaitScheduleTryPeriod > g.WaitScheduleTimeout {
		bad("llm_gateway.wait_schedule_try_period", g.WaitScheduleTryPeriod.String(),
			fmt.Sprintf("a duration no longer than llm_gateway.wait_schedule_timeout (%s)", g.WaitScheduleTimeout))
	}
	if g.PickTimeout <= 0 {
		bad("llm_gateway.pick_timeout", g.PickTimeout.String(), "a positive duration")
	}
	if g.BlockChars < 1 {
		bad("llm_gateway.block_chars", g.BlockChars, "1 or more")
	}
	if g.MaxPrefixChars < g.BlockChars {
		bad("llm_gateway.max_prefix_chars", g.MaxPrefixChars, "at least llm_gateway.block_chars")
	}
	if g.TailBlockChars < 0 || g.TailBlockChars > 1<<20 || g.BlockChars >= 1 && g.TailBlockChars%g.BlockChars != 0 {
		bad("llm_gateway.tail_block_chars", g.TailBlockChars, fmt.Sprintf("0 (no tail) or a multiple of llm_gateway.block_chars (%d) up to 1048576", g.BlockChars))
	}
	if g.MaxHashedChars < g.MaxPrefixChars {
		bad("llm_gateway.max_hashed_chars", g.MaxHashedChars, fmt.Sprintf("at least llm_gateway.max_prefix_chars (%d)", g.MaxPrefixChars))
	}
	if g.CharsPerToken <= 0 {
		bad("llm_gateway.chars_per_token", g.CharsPerToken, "a positive number")
	}
	if !validHeaderName(g.TrustedPriorityHeader) {
		bad("llm_gateway.trusted_priority_header", g.TrustedPriorityHeader, `"" (no client priority) or a lower-case header name: letters, digits, - and _`)
	}
	for _, a := range []struct{ key, val string }{
		{"llm_gateway.listen", g.Listen}, {"llm_gateway.http_listen", g.HTTPListen},
		{"llm_gateway.scheduler_address", g.SchedulerAddress},
		{"llm_scheduler.listen", c.Scheduler.Listen}, {"llm_scheduler.xds_listen", c.Scheduler.XDSListen},
		{"llm_scheduler.http_listen", c.Scheduler.HTTPListen},
		{"agent.scheduler_address", c.Agent.SchedulerAddress}, {"agent.http_listen", c.Agent.HTTPListen},
	} {
		if _, _, err := net.SplitHostPort(a.val); err != nil {
			bad(a.key, a.val, "host:port or :port")
		}
	}

	s := c.Scheduler
	// Policy names are the scheduling framework's (built-in profiles and the
	// endpoint_picker_config file's): the scheduler checks them when it
	// builds the policy, naming the accepted ones.
	if s.Policy == "" {
		bad("llm_scheduler.policy", s.Policy, "a policy or profile name such as prefix-cache")
	}
	if strings.HasSuffix(s.Policy, "pd-split") {
		for _, p := range []struct{ key, val string }{{"llm_scheduler.prefill_policy", s.PrefillPolicy}, {"llm_scheduler.decode_policy", s.DecodePolicy}} {
			if p.val == "" || strings.HasSuffix(p.val, "pd-split") {
				bad(p.key, p.val, fmt.Sprintf("with policy %s, a single-phase policy or profile such as prefix-cache or least-token", s.Policy))
			}
		}
	}
	for _, cidr := range s.AllowedCIDRs {
		if _, err := netip.ParsePrefix(cidr); err != nil {
			bad("llm_scheduler.allowed_cidrs", cidr, "CIDR prefixes such as 10.0.0.0/8")
		}
	}
	if s.MissedReports < 1 {
		bad("llm_scheduler.missed_reports", s.MissedReports, "1 or more")
	}
	if s.SilentGrace <= 0 {
		bad("llm_scheduler.silent_grace", s.SilentGrace.String(), "a positive duration such as 30s")
	}
	if s.PanicThreshold <= 0 || s.PanicThreshold > 1 {
		bad("llm_scheduler.panic_threshold", s.PanicThreshold, "a fraction in (0, 1] (1 disables the panic mode)")
	}
	if s.InflightTimeout <= 0 {
		bad("llm_scheduler.inflight_timeout", s.InflightTimeout.String(), "a positive duration")
	}
	if s.MaxWaiting < 0 {
		bad("llm_scheduler.max_waiting", s.MaxWaiting, "0 or more")
	}
	if s.MaxKVCacheUsage <= 0 || s.MaxKVCacheUsage > 1 {
		bad("llm_scheduler.max_kv_cache_usage", s.MaxKVCacheUsage, "a fraction in (0, 1]")
	}
	if s.MaxPredictedWait < 0 {
		bad("llm_scheduler.max_predicted_wait", s.MaxPredictedWait.String(), "0 (off) or a positive duration such as 2s")
	}
	if s.XDSPushInterval < 0 {
		bad("llm_scheduler.xds_push_interval", s.XDSPushInterval.String(), "0 or a positive duration")
	}
	if s.ClusterName == "" {
		bad("llm_scheduler.cluster_name", s.ClusterName, "a non-empty name")
	}
	if !validXDSToken(s.XDSToken) {
		// The value is a secret: the message names the key and the rule only.
		errs = append(errs, errors.New(`config: llm_scheduler.xds_token: accepted: "" (no token), or letters, digits and - . _ ~ + / = (a bearer token, such as the output of openssl rand -hex 32)`))
	}
	errs = append(errs, s.CostModel.validate()...)
	errs = append(errs, s.PrefixIndex.validate()...)
	errs = append(errs, s.Affinity.validate()...)

	a := c.Agent
	if a.ReportInterval < 10*time.Millisecond {
		bad("agent.report_interval", a.ReportInterval.String(), "10ms or longer")
	}
	if a.ScrapeTimeout <= 0 {
		bad("agent.scrape_timeout", a.ScrapeTimeout.String(), "a positive duration")
	}
	oneOf("agent.role", a.Role, Roles, false)
	if a.PDProxyListen != "" {
		if _, _, err := net.SplitHostPort(a.PDProxyListen); err != nil {
			bad("agent.pd_proxy_listen", a.PDProxyListen, `"" (no proxy) or host:port`)
		}
		if a.Role == "prefill" {
			bad("agent.pd_proxy_listen", a.PDProxyListen, `"" on a prefill instance (the proxy runs beside decode and both-role engines)`)
		}
	}
	if a.PDPrefillTimeout <= 0 {
		bad("agent.pd_prefill_timeout", a.PDPrefillTimeout.String(), "a positive duration")
	}
	if a.BootstrapPort < 0 || a.BootstrapPort > 65535 {
		bad("agent.bootstrap_port", a.BootstrapPort, "0 (none) or a port 1-65535")
	}
	if a.Advertise != "" {
		if ap, err := netip.ParseAddrPort(a.Advertise); err != nil || ap.Port() == 0 {
			bad("agent.advertise", a.Advertise, "ip:port, such as 10.0.0.5:8000")
		}
	}
	for k := range a.MetricMap {
		if !slices.Contains(UnifiedFields, k) {
			bad("agent.metric_map."+k, a.MetricMap[k], "keys "+strings.Join(UnifiedFields, ", "))
		}
	}

	t := c.TLS
	if (t.CertFile == "") != (t.KeyFile == "") {
		bad("tls.cert_file", t.CertFile, "set together with tls.key_file")
	}
	if t.ClientCAFile != "" && t.CertFile == "" {
		bad("tls.client_ca_file", t.ClientCAFile, "only with tls.cert_file and tls.key_file (mTLS needs a server certificate)")
	}
	return errors.Join(errs...)
}

// validHeaderName admits "" and lower-case HTTP header names (as Envoy
// hands them to ext_proc); pseudo-headers are not a priority source.
func validHeaderName(h string) bool {
	for _, r := range h {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
		default:
			return false
		}
	}
	return true
}

// validXDSToken admits RFC 6750's bearer-token characters. Envoy sends the
// token from its bootstrap's initial_metadata, whose values it expands as
// header formatters ('%' starts one) and where gRPC allows printable ASCII
// only; this alphabet needs no escaping anywhere.
func validXDSToken(tok string) bool {
	for _, r := range tok {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case strings.ContainsRune("-._~+/=", r):
		default:
			return false
		}
	}
	return true
}

// Redacted is printed in place of secrets.
const Redacted = "<redacted>"

// YAML renders the effective configuration, secrets redacted and durations in
// Go syntax, in the shape Load reads.
func (c Config) YAML() ([]byte, error) {
	root := &yaml.Node{Kind: yaml.MappingNode}
	for _, f := range leaves(reflect.ValueOf(&c).Elem(), "") {
		parts := strings.Split(f.key, ".")
		node := root
		for _, p := range parts[:len(parts)-1] {
			node = child(node, p)
		}
		var val any = f.val.Interface()
		switch x := val.(type) {
		case time.Duration:
			val = x.String()
		}
		if (f.key == "token" && c.Token != "") || (f.key == "token_previous" && c.TokenPrevious != "") || (f.key == "llm_scheduler.xds_token" && c.Scheduler.XDSToken != "") ||
			(f.key == "agent.pd_api_key" && c.Agent.PDAPIKey != "") {
			val = Redacted
		}
		var vn yaml.Node
		if err := vn.Encode(val); err != nil {
			return nil, err
		}
		node.Content = append(node.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: parts[len(parts)-1]}, &vn)
	}
	// The deprecated keys given still take effect (as plugin parameters'
	// defaults), so they are printed where they were given.
	for _, d := range c.Scheduler.ParamDefaults {
		parts := strings.Split(d.Key, ".")
		node := root
		for _, p := range parts[:len(parts)-1] {
			node = child(node, p)
		}
		var vn yaml.Node
		if err := vn.Encode(d.Value); err != nil {
			return nil, err
		}
		node.Content = append(node.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: parts[len(parts)-1]}, &vn)
	}
	return yaml.Marshal(root)
}

func child(n *yaml.Node, name string) *yaml.Node {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == name {
			return n.Content[i+1]
		}
	}
	c := &yaml.Node{Kind: yaml.MappingNode}
	n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: name}, c)
	return c
}

// validate checks llm_scheduler.prefix_index.*.
func (x PrefixIndex) validate() []error {
	var errs []error
	if x.MaxBlocks < 1024 {
		errs = append(errs, fmt.Errorf("config: llm_scheduler.prefix_index.max_blocks = %d: accepted: 1024 or more", x.MaxBlocks))
	}
	if x.DefaultBlocks < 1 {
		errs = append(errs, fmt.Errorf("config: llm_scheduler.prefix_index.default_blocks = %d: accepted: 1 or more", x.DefaultBlocks))
	}
	return errs
}

// ValidatePrefixIndex checks prefix index sizes given other than as keys
// (as plugin parameters), by the same rules.
func ValidatePrefixIndex(x PrefixIndex) []error { return x.validate() }

// validate checks llm_scheduler.affinity.*.
func (a Affinity) validate() []error {
	var errs []error
	if a.SessionTTL <= 0 {
		errs = append(errs, fmt.Errorf("config: llm_scheduler.affinity.session_ttl = %s: accepted: a positive duration", quote(a.SessionTTL.String())))
	}
	if a.SessionMax < 1 {
		errs = append(errs, fmt.Errorf("config: llm_scheduler.affinity.session_max = %d: accepted: 1 or more", a.SessionMax))
	}
	if a.SessionMaxBytes < 4096 {
		errs = append(errs, fmt.Errorf("config: llm_scheduler.affinity.session_max_bytes = %d: accepted: 4096 or more (bytes)", a.SessionMaxBytes))
	}
	return errs
}

// validate checks the cost model (llm_scheduler.cost_model.*).
func (m CostModel) validate() []error {
	var errs []error
	bad := func(key string, val any, accepted string) {
		errs = append(errs, fmt.Errorf("config: llm_scheduler.cost_model.%s = %s: accepted: %s", key, quote(val), accepted))
	}
	for _, d := range []struct {
		key string
		val time.Duration
	}{{"step_time", m.StepTime}, {"decode_token_time", m.DecodeTokenTime}} {
		if d.val < 0 {
			bad(d.key, d.val.String(), "0 or a positive duration")
		}
	}
	if m.PrefillTokenTime <= 0 {
		bad("prefill_token_time", m.PrefillTokenTime.String(), `a positive duration such as "17.25us"`)
	}
	if m.MaxBatchedTokens < 1 {
		bad("max_batched_tokens", m.MaxBatchedTokens, "1 or more")
	}
	if m.DefaultOutputTokens < 1 {
		bad("default_output_tokens", m.DefaultOutputTokens, "1 or more")
	}
	return errs
}

// ValidateCostModel checks a cost model given other than as keys (as
// plugin parameters), by the same rules.
func ValidateCostModel(m CostModel) []error { return m.validate() }

// Moved lists the keys that moved, old → new. The old key still applies
// (to the new one, which must then not be given too) and Load reports it
// in Config.Deprecated.
var Moved = map[string]string{
	"llm_scheduler.policies.step_time":             "llm_scheduler.cost_model.step_time",
	"llm_scheduler.policies.prefill_token_time":    "llm_scheduler.cost_model.prefill_token_time",
	"llm_scheduler.policies.decode_token_time":     "llm_scheduler.cost_model.decode_token_time",
	"llm_scheduler.policies.max_batched_tokens":    "llm_scheduler.cost_model.max_batched_tokens",
	"llm_scheduler.policies.default_output_tokens": "llm_scheduler.cost_model.default_output_tokens",

	"llm_scheduler.policies.prefix_index_max_blocks":     "llm_scheduler.prefix_index.max_blocks",
	"llm_scheduler.policies.prefix_index_default_blocks": "llm_scheduler.prefix_index.default_blocks",

	"llm_scheduler.policies.session_affinity":  "llm_scheduler.affinity.session",
	"llm_scheduler.policies.session_ttl":       "llm_scheduler.affinity.session_ttl",
	"llm_scheduler.policies.session_max":       "llm_scheduler.affinity.session_max",
	"llm_scheduler.policies.session_max_bytes": "llm_scheduler.affinity.session_max_bytes",
	"llm_scheduler.policies.lora_affinity":     "llm_scheduler.affinity.lora",
}

// moveKeys applies each moved key given (file, environment or flag) to
// its new place and returns a deprecation message for each; giving both
// the old and the new key is an error naming both.
func moveKeys(v *viper.Viper) ([]string, error) {
	olds := make([]string, 0, len(Moved))
	for o := range Moved {
		olds = append(olds, o)
	}
	sort.Strings(olds)
	var msgs []string
	for _, old := range olds {
		if !v.IsSet(old) {
			continue
		}
		nk := Moved[old]
		if given(v, nk) {
			return nil, fmt.Errorf("config: %s and %s are both given; %s is the deprecated name of %s: keep only %s", old, nk, old, nk, nk)
		}
		v.Set(nk, v.Get(old))
		msgs = append(msgs, fmt.Sprintf("%s is deprecated: it is %s now; it still applies there", old, nk))
	}
	return msgs, nil
}

// given: key was given in the file or the environment (not only a default).
func given(v *viper.Viper, key string) bool {
	if v.InConfig(key) {
		return true
	}
	_, ok := os.LookupEnv(EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_")))
	return ok
}

// policyKey returns the plugin parameter the deprecated key (a full key,
// llm_scheduler.policies.decode_weight) is now.
func policyKey(key string) (PluginParam, bool) {
	name, ok := strings.CutPrefix(key, PolicyKeysSection+".")
	if !ok {
		return PluginParam{}, false
	}
	pp, ok := PolicyKeys[name]
	return pp, ok
}

// deprecatedKeys lists the full keys under llm_scheduler.policies that are
// still accepted (PolicyKeys, and the Moved ones), sorted.
func deprecatedKeys() []string {
	var out []string
	for k := range PolicyKeys {
		out = append(out, PolicyKeysSection+"."+k)
	}
	for k := range Moved {
		if strings.HasPrefix(k, PolicyKeysSection+".") {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// ParamPlace says where a deprecated key's plugin parameter is set now.
func ParamPlace(pp PluginParam) string {
	return fmt.Sprintf("parameter %s of plugin type %s (plugins[].parameters.%s in llm_scheduler.endpoint_picker_config, docs/policies.md)", pp.Param, pp.Type, pp.Param)
}

// paramDefaults collects the PolicyKeys given (file, environment or flag)
// as plugin parameter defaults, with a deprecation message for each naming
// its new place.
func paramDefaults(v *viper.Viper) ([]ParamDefault, []string) {
	keys := make([]string, 0, len(PolicyKeys))
	for k := range PolicyKeys {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var (
		out  []ParamDefault
		msgs []string
	)
	for _, k := range keys {
		key := PolicyKeysSection + "." + k
		if !v.IsSet(key) {
			continue
		}
		pp := PolicyKeys[k]
		out = append(out, ParamDefault{Key: key, PluginParam: pp, Value: v.Get(key)})
		msgs = append(msgs, fmt.Sprintf("%s is deprecated: use %s; until then it still applies, as that parameter's default wherever a %s plugin is built", key, ParamPlace(pp), pp.Type))
	}
	return out, msgs
}
