package envoy

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// Problem is one rule a configuration breaks, at a field path such as
// static_resources.clusters[0].load_balancing_policy.policies[0].typed_extension_config.typed_config(override_host.v3.OverrideHost).override_host_sources.
type Problem struct {
	Path    string
	Message string
}

func (p Problem) String() string {
	if p.Path == "" {
		return p.Message
	}
	return p.Path + ": " + p.Message
}

// ValidationError lists every problem found, in field order.
type ValidationError struct {
	Problems []Problem
}

func (e *ValidationError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// embeddedReason is how protoc-gen-validate reports a sub-message that failed;
// the walk reaches that sub-message itself and reports it with its own path.
const embeddedReason = "embedded message failed validation"

// Validate checks m against protoc-gen-validate's rules, recursing into every
// message, including those packed in google.protobuf.Any (which PGV itself
// never opens), and checks that each Any in an extension slot holds an
// extension of the right kind (a router filter cannot be a load balancing
// policy). It returns a *ValidationError naming every failing field path, or
// nil.
func Validate(m proto.Message) error {
	v := &validator{}
	v.walk(m.ProtoReflect(), "", "")
	if len(v.problems) == 0 {
		return nil
	}
	return &ValidationError{Problems: v.problems}
}

type validator struct {
	problems []Problem
}

func (v *validator) add(path, format string, args ...any) {
	v.problems = append(v.problems, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
}

// slotKinds maps (message, field) to the type name prefixes (separated by |)
// an Any in that extension slot may have; Envoy finds the factory by the packed type, so a
// misplaced type is a config error there too.
var slotKinds = map[string]string{
	"envoy.config.cluster.v3.LoadBalancingPolicy.Policy.typed_extension_config":           "envoy.extensions.load_balancing_policies.",
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter.typed_config": "envoy.extensions.filters.http.",
	"envoy.config.listener.v3.Filter.typed_config":                                        "envoy.extensions.filters.network.",
	"envoy.config.listener.v3.ListenerFilter.typed_config":                                "envoy.extensions.filters.listener.",
	"envoy.config.core.v3.TransportSocket.typed_config":                                   "envoy.extensions.transport_sockets.",
	"envoy.config.accesslog.v3.AccessLog.typed_config":                                    "envoy.extensions.access_loggers.",
	"envoy.config.cluster.v3.Cluster.typed_extension_protocol_options":                    "envoy.extensions.upstreams.",
	"envoy.config.route.v3.Route.typed_per_filter_config":                                 "envoy.extensions.filters.http.|envoy.config.route.v3.FilterConfig",
	"envoy.config.route.v3.VirtualHost.typed_per_filter_config":                           "envoy.extensions.filters.http.|envoy.config.route.v3.FilterConfig",
}

// walk validates msg at path; kind is the package prefix required of msg when
// msg is an Any in an extension slot ("" when any type is fine).
func (v *validator) walk(msg protoreflect.Message, path, kind string) {
	desc := msg.Descriptor()
	if desc.FullName() == "google.protobuf.Any" {
		v.walkAny(msg, path, kind)
		return
	}
	if pgv, ok := msg.Interface().(interface{ ValidateAll() error }); ok {
		if err := pgv.ValidateAll(); err != nil {
			v.addPGV(desc, path, err)
		}
	}
	msg.Range(func(fd protoreflect.FieldDescriptor, val protoreflect.Value) bool {
		name := string(fd.Name())
		child := join(path, name)
		childKind := ""
		if k, ok := slotKinds[string(desc.FullName())+"."+name]; ok {
			childKind = k
		}
		// A TypedExtensionConfig passes its slot's kind on to its Any.
		if desc.FullName() == "envoy.config.core.v3.TypedExtensionConfig" && name == "typed_config" {
			childKind = kind
		}
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := val.List()
			for i := 0; i < l.Len(); i++ {
				v.walk(l.Get(i).Message(), fmt.Sprintf("%s[%d]", child, i), childKind)
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			val.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				v.walk(mv.Message(), fmt.Sprintf("%s[%s]", child, k.String()), childKind)
				return true
			})
		case fd.Message() != nil && !fd.IsMap():
			v.walk(val.Message(), child, childKind)
		}
		return true
	})
}

func (v *validator) walkAny(msg protoreflect.Message, path, kind string) {
	a, ok := msg.Interface().(*anypb.Any)
	if !ok {
		// A dynamic Any; convert through the wire format.
		a = &anypb.Any{}
		b, err := proto.Marshal(msg.Interface())
		if err == nil {
			err = proto.Unmarshal(b, a)
		}
		if err != nil {
			v.add(path, "cannot read google.protobuf.Any: %v", err)
			return
		}
	}
	inner, err := a.UnmarshalNew()
	if err != nil {
		v.add(path, "cannot unpack %q: %v (an unknown type, or an extension this build does not know)", a.GetTypeUrl(), err)
		return
	}
	name := string(inner.ProtoReflect().Descriptor().FullName())
	if kind != "" && !hasAnyPrefix(name, strings.Split(kind, "|")) {
		v.add(path, "type %s does not belong here: want %s", name, strings.ReplaceAll(kind, "|", "* or ")+"*")
		return
	}
	v.walk(inner.ProtoReflect(), fmt.Sprintf("%s(%s)", path, shortName(name)), "")
}

// shortName keeps the last three components: override_host.v3.OverrideHost.
func shortName(full string) string {
	parts := strings.Split(full, ".")
	if len(parts) > 3 {
		parts = parts[len(parts)-3:]
	}
	return strings.Join(parts, ".")
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// pgvError is the method set of every protoc-gen-validate error.
type pgvError interface {
	Field() string
	Reason() string
	Cause() error
}

func (v *validator) addPGV(desc protoreflect.MessageDescriptor, path string, err error) {
	var errs []error
	if multi, ok := err.(interface{ AllErrors() []error }); ok {
		errs = multi.AllErrors()
	} else {
		errs = []error{err}
	}
	for _, e := range errs {
		pe, ok := e.(pgvError)
		if !ok {
			v.add(path, "%v", e)
			continue
		}
		if pe.Reason() == embeddedReason {
			continue
		}
		msg := pe.Reason()
		if c := pe.Cause(); c != nil {
			msg += ": " + c.Error()
		}
		v.add(join(path, protoFieldPath(desc, pe.Field())), "%s", msg)
	}
}

// protoFieldPath turns PGV's Go field name ("OverrideHostSources[0]") into
// the proto name ("override_host_sources[0]"), matching field and oneof names
// of desc without case and underscores.
func protoFieldPath(desc protoreflect.MessageDescriptor, goField string) string {
	base, suffix := goField, ""
	if i := strings.IndexByte(goField, '['); i >= 0 {
		base, suffix = goField[:i], goField[i:]
	}
	norm := func(s string) string { return strings.ToLower(strings.ReplaceAll(s, "_", "")) }
	want := norm(base)
	fields := desc.Fields()
	for i := 0; i < fields.Len(); i++ {
		if n := string(fields.Get(i).Name()); norm(n) == want {
			return n + suffix
		}
	}
	oneofs := desc.Oneofs()
	for i := 0; i < oneofs.Len(); i++ {
		if n := string(oneofs.Get(i).Name()); norm(n) == want {
			return n + suffix
		}
	}
	return goField
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
