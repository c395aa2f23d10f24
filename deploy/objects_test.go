package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	egv1a1 "github.com/envoyproxy/gateway/api/v1alpha1"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"google.golang.org/protobuf/encoding/protojson"
	istionetworking "istio.io/api/networking/v1alpha3"
	istioclient "istio.io/client-go/pkg/apis/networking/v1alpha3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"
)

// objects are every Kubernetes object deploy/ ships, decoded strictly
// (unknown or misspelt fields fail) into the Go types of the projects that
// define them: Kubernetes, Gateway API, Istio, Envoy Gateway and the
// Prometheus Operator.
type objects struct {
	deployments    []*appsv1.Deployment
	services       []*corev1.Service
	configMaps     []*corev1.ConfigMap
	envoyFilters   []*istioclient.EnvoyFilter
	extPolicies    []*egv1a1.EnvoyExtensionPolicy
	patchPolicies  []*egv1a1.EnvoyPatchPolicy
	httpRoutes     []*gwapiv1.HTTPRoute
	serviceMonitor []*monitoringv1.ServiceMonitor
	podMonitors    []*monitoringv1.PodMonitor
}

// manifestFiles are the Kubernetes-object files of deploy/.
var manifestFiles = []string{
	"kubernetes/llmrouter.yaml",
	"istio/envoyfilter.yaml",
	"envoy-gateway/extension-policy.yaml",
	"prometheus/servicemonitor.yaml",
}

// splitDocuments splits a multi-document YAML file at its "---" lines,
// dropping documents that hold only comments.
func splitDocuments(data []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	flush := func() {
		keep := false
		for _, l := range strings.Split(cur.String(), "\n") {
			if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "#") {
				keep = true
			}
		}
		if keep {
			docs = append(docs, bytes.Clone(cur.Bytes()))
		}
		cur.Reset()
	}
	for _, l := range strings.SplitAfter(string(data), "\n") {
		if strings.TrimRight(l, "\r\n") == "---" {
			flush()
			continue
		}
		cur.WriteString(l)
	}
	flush()
	return docs
}

// decodeObject decodes one document strictly into the type its apiVersion
// and kind name.
func decodeObject(doc []byte, into *objects) error {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return err
	}
	strict := func(v any) error { return yaml.UnmarshalStrict(doc, v) }
	switch tm.APIVersion + " " + tm.Kind {
	case "apps/v1 Deployment":
		v := &appsv1.Deployment{}
		into.deployments = append(into.deployments, v)
		return strict(v)
	case "v1 Service":
		v := &corev1.Service{}
		into.services = append(into.services, v)
		return strict(v)
	case "v1 ConfigMap":
		v := &corev1.ConfigMap{}
		into.configMaps = append(into.configMaps, v)
		return strict(v)
	case "networking.istio.io/v1alpha3 EnvoyFilter":
		v := &istioclient.EnvoyFilter{}
		into.envoyFilters = append(into.envoyFilters, v)
		if err := strict(v); err != nil {
			return err
		}
		// Istio's generated JSON decoding of the spec allows unknown
		// fields; protojson (strict by default) does not.
		var raw struct {
			Spec json.RawMessage `json:"spec"`
		}
		j, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(j, &raw); err != nil {
			return err
		}
		return protojson.Unmarshal(raw.Spec, &istionetworking.EnvoyFilter{})
	case "gateway.envoyproxy.io/v1alpha1 EnvoyExtensionPolicy":
		v := &egv1a1.EnvoyExtensionPolicy{}
		into.extPolicies = append(into.extPolicies, v)
		return strict(v)
	case "gateway.envoyproxy.io/v1alpha1 EnvoyPatchPolicy":
		v := &egv1a1.EnvoyPatchPolicy{}
		into.patchPolicies = append(into.patchPolicies, v)
		return strict(v)
	case "gateway.networking.k8s.io/v1 HTTPRoute":
		v := &gwapiv1.HTTPRoute{}
		into.httpRoutes = append(into.httpRoutes, v)
		return strict(v)
	case "monitoring.coreos.com/v1 ServiceMonitor":
		v := &monitoringv1.ServiceMonitor{}
		into.serviceMonitor = append(into.serviceMonitor, v)
		return strict(v)
	case "monitoring.coreos.com/v1 PodMonitor":
		v := &monitoringv1.PodMonitor{}
		into.podMonitors = append(into.podMonitors, v)
		return strict(v)
	}
	return fmt.Errorf("apiVersion %q kind %q: no Go type known to this test (add one)", tm.APIVersion, tm.Kind)
}

func loadObjects(t *testing.T, files ...string) *objects {
	t.Helper()
	o := &objects{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range splitDocuments(data) {
			if err := decodeObject(doc, o); err != nil {
				t.Errorf("%s document %d: %v", f, i+1, err)
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return o
}

// Every shipped object decodes strictly into its project's Go type.
func TestObjectsDecodeStrictly(t *testing.T) {
	o := loadObjects(t, manifestFiles...)
	if len(o.deployments) != 4 || len(o.services) != 4 || len(o.configMaps) != 1 || len(o.envoyFilters) != 1 ||
		len(o.extPolicies) != 1 || len(o.patchPolicies) != 1 || len(o.httpRoutes) != 1 ||
		len(o.serviceMonitor) != 2 || len(o.podMonitors) != 1 {
		t.Fatalf("objects: %d deployments, %d services, %d config maps, %d envoy filters, %d extension policies, "+
			"%d patch policies, %d routes, %d service monitors, %d pod monitors",
			len(o.deployments), len(o.services), len(o.configMaps), len(o.envoyFilters), len(o.extPolicies),
			len(o.patchPolicies), len(o.httpRoutes), len(o.serviceMonitor), len(o.podMonitors))
	}
}

// A misspelt field is an error, at the top level and deep inside a spec,
// for each family of types.
func TestStrictDecodingCatchesMisspelling(t *testing.T) {
	for _, f := range manifestFiles {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range splitDocuments(data) {
			for _, mutate := range []struct{ from, to string }{
				{"\nspec:", "\nspce:"},
				{"containerPort:", "containerPrt:"},
				{"targetPort:", "tagretPort:"},
				{"matchLabels:", "matchLabel:"},
				{"backendRefs:", "backendRef5:"},
				{"name:", "nmae:"},
			} {
				if !bytes.Contains(doc, []byte(mutate.from)) {
					continue
				}
				bad := bytes.Replace(doc, []byte(mutate.from), []byte(mutate.to), 1)
				if err := decodeObject(bad, &objects{}); err == nil {
					t.Errorf("%s document %d with %q misspelt as %q decodes without error", f, i+1,
						strings.TrimSpace(mutate.from), strings.TrimSpace(mutate.to))
				}
			}
		}
	}
	// Inside Istio's spec (protobuf, where Istio's own decoding is lenient).
	data, _ := os.ReadFile("istio/envoyfilter.yaml")
	bad := bytes.Replace(data, []byte("workloadSelector:"), []byte("workloadSelecter:"), 1)
	if err := decodeObject(bad, &objects{}); err == nil {
		t.Error("an EnvoyFilter with workloadSelecter decodes without error")
	}
}

// svcRef is a Service port as a reference names it.
type svcRef struct{ namespace, name, port string }

// services indexes the shipped Services by namespace/name.
func (o *objects) service(ns, name string) *corev1.Service {
	for _, s := range o.services {
		if s.Namespace == ns && s.Name == name {
			return s
		}
	}
	return nil
}

func (o *objects) hasServicePort(r svcRef) bool {
	s := o.service(r.namespace, r.name)
	if s == nil {
		return false
	}
	for _, p := range s.Spec.Ports {
		if fmt.Sprint(p.Port) == r.port || p.Name == r.port {
			return true
		}
	}
	return false
}

// References from the integrations to Services: every one names a Service
// and port deploy/kubernetes ships, and every Service selects pods of a
// shipped Deployment on a port a container of them declares.
func TestEveryReferencedServiceIsShipped(t *testing.T) {
	o := loadObjects(t, manifestFiles...)
	var refs []svcRef
	// Istio: outbound|PORT||NAME.NAMESPACE.svc.cluster.local clusters and
	// CLUSTER patches matching service and port.
	for _, ef := range o.envoyFilters {
		for _, p := range ef.Spec.ConfigPatches {
			if c := p.GetMatch().GetCluster(); c != nil && c.Service != "" {
				name, ns := splitFQDN(t, c.Service)
				refs = append(refs, svcRef{ns, name, fmt.Sprint(c.PortNumber)})
			}
			raw, _ := json.Marshal(p.GetPatch().GetValue())
			for _, cl := range findStrings(raw, "outbound|") {
				parts := strings.Split(cl, "|")
				if len(parts) != 4 {
					t.Fatalf("Istio cluster name %q is not outbound|PORT||HOST", cl)
				}
				name, ns := splitFQDN(t, parts[3])
				refs = append(refs, svcRef{ns, name, parts[1]})
			}
		}
	}
	// Envoy Gateway: extension policy and route backends.
	for _, p := range o.extPolicies {
		for _, ep := range p.Spec.ExtProc {
			for _, b := range ep.BackendRefs {
				refs = append(refs, svcRef{nsOr(b.Namespace, p.Namespace), string(b.Name), fmt.Sprint(*b.Port)})
			}
		}
	}
	for _, r := range o.httpRoutes {
		for _, rule := range r.Spec.Rules {
			for _, b := range rule.BackendRefs {
				refs = append(refs, svcRef{nsOr(b.Namespace, r.Namespace), string(b.Name), fmt.Sprint(*b.Port)})
			}
		}
	}
	// Envoy in the edge: the scheduler's xDS address in the rendered bootstrap.
	for _, cm := range o.configMaps {
		for _, host := range findStrings([]byte(cm.Data["envoy.yaml"]), "llmrouter-") {
			if h, port, ok := strings.Cut(host, ".svc.cluster.local"); ok && strings.HasPrefix(port, ":") {
				name, ns := splitFQDN(t, h+".svc.cluster.local")
				refs = append(refs, svcRef{ns, name, strings.TrimPrefix(port, ":")})
			}
		}
	}
	if len(refs) < 6 {
		t.Fatalf("found only %d Service references: %v", len(refs), refs)
	}
	for _, r := range refs {
		if !o.hasServicePort(r) {
			t.Errorf("Service %s/%s port %s is referenced but not shipped in deploy/kubernetes/llmrouter.yaml", r.namespace, r.name, r.port)
		}
	}

	// Each Service selects a Deployment's pods, and each target port is one
	// of their containers'.
	for _, s := range o.services {
		sel := labels.SelectorFromSet(s.Spec.Selector)
		var pods []corev1.PodTemplateSpec
		for _, d := range o.deployments {
			if d.Namespace == s.Namespace && sel.Matches(labels.Set(d.Spec.Template.Labels)) {
				pods = append(pods, d.Spec.Template)
			}
		}
		if len(pods) == 0 {
			t.Errorf("Service %s selects no shipped Deployment's pods (%v)", s.Name, s.Spec.Selector)
			continue
		}
		for _, p := range s.Spec.Ports {
			target := p.TargetPort.String()
			if p.TargetPort.IntValue() == 0 && p.TargetPort.StrVal == "" {
				target = fmt.Sprint(p.Port)
			}
			if !podsDeclarePort(pods, target) {
				t.Errorf("Service %s port %s: no container of its pods declares port %s", s.Name, p.Name, target)
			}
		}
	}

	// Prometheus Operator monitors select shipped Services and pods by
	// label, on ports they name.
	for _, m := range o.serviceMonitor {
		sel, err := metav1.LabelSelectorAsSelector(&m.Spec.Selector)
		if err != nil {
			t.Fatal(err)
		}
		var n int
		for _, s := range o.services {
			if s.Namespace == m.Namespace && sel.Matches(labels.Set(s.Labels)) {
				n++
				for _, ep := range m.Spec.Endpoints {
					if !o.hasServicePort(svcRef{s.Namespace, s.Name, ep.Port}) {
						t.Errorf("ServiceMonitor %s: Service %s has no port %q", m.Name, s.Name, ep.Port)
					}
				}
			}
		}
		if n == 0 {
			t.Errorf("ServiceMonitor %s selects no shipped Service", m.Name)
		}
	}
	for _, m := range o.podMonitors {
		sel, err := metav1.LabelSelectorAsSelector(&m.Spec.Selector)
		if err != nil {
			t.Fatal(err)
		}
		var n int
		for _, d := range o.deployments {
			if d.Namespace == m.Namespace && sel.Matches(labels.Set(d.Spec.Template.Labels)) {
				n++
				for _, ep := range m.Spec.PodMetricsEndpoints {
					if ep.Port == nil || !podsDeclarePort([]corev1.PodTemplateSpec{d.Spec.Template}, *ep.Port) {
						t.Errorf("PodMonitor %s: pods of %s declare no port %v", m.Name, d.Name, ep.Port)
					}
				}
			}
		}
		if n == 0 {
			t.Errorf("PodMonitor %s selects no shipped pods", m.Name)
		}
	}
}

func podsDeclarePort(pods []corev1.PodTemplateSpec, port string) bool {
	for _, p := range pods {
		for _, c := range p.Spec.Containers {
			for _, cp := range c.Ports {
				if cp.Name == port || fmt.Sprint(cp.ContainerPort) == port {
					return true
				}
			}
		}
	}
	return false
}

func nsOr[T ~string](ns *T, def string) string {
	if ns != nil && *ns != "" {
		return string(*ns)
	}
	return def
}

// splitFQDN reads NAME.NAMESPACE.svc.cluster.local.
func splitFQDN(t *testing.T, host string) (name, ns string) {
	t.Helper()
	parts := strings.Split(host, ".")
	if len(parts) < 3 || parts[2] != "svc" {
		t.Fatalf("%q is not NAME.NAMESPACE.svc.cluster.local", host)
	}
	return parts[0], parts[1]
}

// findStrings returns every run of non-quote, non-space characters in data
// that starts with prefix.
func findStrings(data []byte, prefix string) []string {
	var out []string
	s := string(data)
	for {
		i := strings.Index(s, prefix)
		if i < 0 {
			return out
		}
		j := strings.IndexAny(s[i:], "\"' \n,")
		if j < 0 {
			j = len(s) - i
		}
		out = append(out, s[i:i+j])
		s = s[i+j:]
	}
}

// The Envoy Gateway integration works as shipped: filter #2 observes in
// shadow mode (Envoy's observability_mode; else Envoy waits on every
// response chunk for an answer the gateway never sends) and is given the
// metadata namespaces filter #1 writes; the file says which Envoy Gateway
// version and setting that needs.
func TestEnvoyGatewayObservationFilter(t *testing.T) {
	o := loadObjects(t, "envoy-gateway/extension-policy.yaml")
	procs := o.extPolicies[0].Spec.ExtProc
	if len(procs) != 2 {
		t.Fatalf("%d ext_proc filters, want the pick and the observation filter", len(procs))
	}
	want := []string{"envoy.lb", "llmrouter"} // extproc.MetadataNamespace, extproc.GatewayNamespace
	pick, observe := procs[0], procs[1]
	if pick.ProcessingMode == nil || pick.ProcessingMode.Request == nil || pick.ProcessingMode.Request.Body == nil ||
		*pick.ProcessingMode.Request.Body != egv1a1.BufferedExtProcBodyProcessingMode {
		t.Error("filter #1 does not buffer the request body (the gateway reads the model and the prompt from it)")
	}
	if pick.Metadata == nil || !containsAll(pick.Metadata.WritableNamespaces, want) {
		t.Errorf("filter #1 may not write %v (the pick and the request record)", want)
	}
	if pick.ShadowMode != nil && *pick.ShadowMode {
		t.Error("filter #1 in shadow mode: its pick would be ignored")
	}
	if observe.ShadowMode == nil || !*observe.ShadowMode {
		t.Error("filter #2 is not in shadowMode: Envoy would wait for the gateway's answer on every response message")
	}
	if observe.Metadata == nil || !containsAll(observe.Metadata.AccessibleNamespaces, want) {
		t.Errorf("filter #2 is not given %v: the gateway cannot find the request or its engine", want)
	}
	if observe.ProcessingMode == nil || observe.ProcessingMode.Response == nil || observe.ProcessingMode.Response.Body == nil ||
		*observe.ProcessingMode.Response.Body != egv1a1.StreamedExtProcBodyProcessingMode {
		t.Error("filter #2 does not stream response bodies (TTFT, TPOT and usage come from them)")
	}
	for _, f := range []bool{pick.FailOpen != nil && *pick.FailOpen, observe.FailOpen != nil && *observe.FailOpen} {
		if !f {
			t.Error("an ext_proc filter without failOpen: a gateway outage would fail requests")
		}
	}
	text, _ := os.ReadFile("envoy-gateway/extension-policy.yaml")
	for _, s := range []string{"v1.9", "enableEnvoyPatchPolicy: true"} {
		if !strings.Contains(string(text), s) {
			t.Errorf("envoy-gateway/extension-policy.yaml does not say %q is required", s)
		}
	}
	// The patch policy's value is an Envoy fragment: valid as the cluster's
	// load_balancing_policy.
	for _, pp := range o.patchPolicies {
		for _, jp := range pp.Spec.JSONPatches {
			if jp.Operation.Path == nil || *jp.Operation.Path != "/load_balancing_policy" || jp.Operation.Value == nil {
				t.Fatalf("unexpected patch %+v", jp.Operation)
			}
			frag := fmt.Sprintf(`{"load_balancing_policy":%s}`, jp.Operation.Value.Raw)
			if err := validateFragment([]byte(frag), "cluster"); err != nil {
				t.Errorf("EnvoyPatchPolicy %s: %v", pp.Name, err)
			}
		}
	}
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

// Every file under deploy/ is checked by a test of this module: a new
// file must be added to one of the lists here.
func TestEveryFileIsChecked(t *testing.T) {
	checked := map[string]bool{
		"README.md": true, "doc.go": true, "go.mod": true, "go.sum": true, "kubernetes/README.md": true,
		"kubernetes/llmrouter.head.yaml":      true, // rendered into llmrouter.yaml (TestKubernetesManifest)
		"docker-compose/docker-compose.yaml":  true, // TestComposeEnvoyConfig, TestComposePublishesServedPorts
		"docker-compose/envoy.yaml":           true, // TestComposeEnvoyConfig
		"grafana/llmrouter-dashboard.json":    true, // TestDashboard
		"grafana/llmrouter-pd-dashboard.json": true, // TestDashboard
		"prometheus/prometheus.yaml":          true, // TestPrometheusConfig
		"prometheus/rules.yaml":               true, // TestRules
	}
	for _, f := range manifestFiles {
		checked[f] = true
	}
	err := filepath.WalkDir(".", func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(p, "_test.go") {
			return err
		}
		if !checked[filepath.ToSlash(p)] {
			t.Errorf("deploy/%s is not checked by any test", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
