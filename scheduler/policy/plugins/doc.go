// Package plugins is the home of the scheduling framework's plugins
// (scheduler/framework), one package per kind; plugins/all imports every one.
// Each registers its types in init with a factory that owns the type's
// parameters. Where a plugin means what an llm-d / Gateway API Inference
// Extension plugin means, it carries that plugin's type name
// (queue-scorer, kv-cache-scorer, prefix-cache-scorer, max-score-picker,
// random-picker, decode-filter, prefill-filter), so their
// EndpointPickerConfig files load as they are.
package plugins
