package knative_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"knative.dev/pkg/apis"
	"knative.dev/serving/pkg/apis/config"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	"sigs.k8s.io/yaml"

	"github.com/machineserver/machineserver/events"
)

const (
	namespace    = "machineserver"
	secretName   = "machineserver"
	configName   = "machineserver-config"
	modulePath   = "github.com/machineserver/machineserver"
	koPrefix     = "ko://" + modulePath + "/"
	knativeSvcAV = "serving.knative.dev/v1"
)

// images maps each ko:// import path (after the module path) to the workload
// that runs it. Every main package under functions/ must be in it, and every
// entry must be used, so a new function cannot be left undeployed.
var images = map[string]string{
	"functions/sessions":  "sessions",
	"functions/programs":  "programs",
	"functions/snapshots": "snapshots",
	"functions/jobs":      "jobs",
	"runner":              "runner",
}

// envNames are the variables our own binaries read; a name outside this list
// in a manifest is a typo or a setting no binary honours.
var envNames = map[string]bool{
	"MS_REDIS_URL": true, "MS_S3_ENDPOINT": true, "MS_S3_ACCESS_KEY": true,
	"MS_S3_SECRET_KEY": true, "MS_S3_BUCKET": true, "MS_S3_REGION": true,
	"MS_S3_SECURE": true, "MS_RUNNER_TOKEN": true, "MS_LOG_LEVEL": true,
	"MS_MAX_UPLOAD_BYTES": true,
	"MS_RUNNER_ID":        true, "MS_RUNNER_URL": true, "MS_RUNNER_DIR": true,
	"MS_QEMU_BINARIES": true, "MS_RUNNER_CAPACITY": true,
	"POD_NAME": true, "POD_NAMESPACE": true, "K_SINK": true,
	"MS_JOB_WORKERS": true, "MS_JOB_LEASE": true, "MS_JOB_MAX_ATTEMPTS": true,
	"MS_PROGRAMS_BUCKET": true, "MS_SESSION_TOKEN_SECRET": true, "MS_BOOTSTRAP_API_KEY": true,
}

// doc is one YAML document of one file.
type doc struct {
	file  string
	index int
	raw   []byte
	head  struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
}

func (d *doc) String() string {
	return fmt.Sprintf("%s#%d (%s %s)", d.file, d.index, d.head.Kind, d.head.Metadata.Name)
}

func (d *doc) key() string { return ref(d.head.APIVersion, d.head.Kind, d.head.Metadata.Name) }

func ref(apiVersion, kind, name string) string { return apiVersion + "/" + kind + "/" + name }

// splitDocs splits on lines that are exactly "---", the same separator the
// Terraform module splits on, and drops documents that are only comments.
func splitDocs(b []byte) [][]byte {
	var out [][]byte
	var cur bytes.Buffer
	flush := func() {
		if hasContent(cur.Bytes()) {
			out = append(out, bytes.Clone(cur.Bytes()))
		}
		cur.Reset()
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if sc.Text() == "---" {
			flush()
			continue
		}
		cur.Write(sc.Bytes())
		cur.WriteByte('\n')
	}
	flush()
	return out
}

func hasContent(b []byte) bool {
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			return true
		}
	}
	return false
}

func loadDocs(t *testing.T) []*doc {
	t.Helper()
	var docs []*doc
	err := filepath.WalkDir(".", func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() || filepath.Ext(path) != ".yaml" {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, raw := range splitDocs(b) {
			d := &doc{file: path, index: i, raw: raw}
			if err := yaml.Unmarshal(raw, &d.head); err != nil {
				return fmt.Errorf("%s#%d: %w", path, i, err)
			}
			docs = append(docs, d)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) == 0 {
		t.Fatal("no manifests found under knative/")
	}
	return docs
}

// cluster is what the manifests declare, for checking references between them.
type cluster struct {
	byKey      map[string]*doc
	services   map[string]*corev1.Service
	workloads  map[string]*corev1.PodTemplateSpec // Deployments and StatefulSets, by name
	secretKeys map[string]bool
	configKeys map[string]bool
}

func decodeStrict(t *testing.T, d *doc, into any) bool {
	t.Helper()
	if err := yaml.UnmarshalStrict(d.raw, into); err != nil {
		t.Errorf("%s: strict decode: %v", d, err)
		return false
	}
	return true
}

// index decodes the core objects that other documents refer to.
func index(t *testing.T, docs []*doc) *cluster {
	t.Helper()
	c := &cluster{
		byKey:      map[string]*doc{},
		services:   map[string]*corev1.Service{},
		workloads:  map[string]*corev1.PodTemplateSpec{},
		secretKeys: map[string]bool{},
		configKeys: map[string]bool{},
	}
	for _, d := range docs {
		if prev, ok := c.byKey[d.key()]; ok {
			t.Errorf("%s: duplicates %s", d, prev)
		}
		c.byKey[d.key()] = d
		switch d.head.APIVersion + " " + d.head.Kind {
		case "v1 Service":
			var s corev1.Service
			if decodeStrict(t, d, &s) {
				c.services[s.Name] = &s
			}
		case "apps/v1 Deployment":
			var w appsv1.Deployment
			if decodeStrict(t, d, &w) {
				c.workloads[w.Name] = &w.Spec.Template
			}
		case "apps/v1 StatefulSet":
			var w appsv1.StatefulSet
			if decodeStrict(t, d, &w) {
				c.workloads[w.Name] = &w.Spec.Template
			}
		case "v1 Secret":
			var s corev1.Secret
			if decodeStrict(t, d, &s) && s.Name == secretName {
				for k := range s.StringData {
					c.secretKeys[k] = true
				}
				for k := range s.Data {
					c.secretKeys[k] = true
				}
			}
		case "v1 ConfigMap":
			var m corev1.ConfigMap
			if decodeStrict(t, d, &m) && m.Name == configName {
				for k := range m.Data {
					c.configKeys[k] = true
				}
			}
		}
	}
	if len(c.secretKeys) == 0 || len(c.configKeys) == 0 {
		t.Fatalf("the Secret %q and the ConfigMap %q must be among the manifests, with keys", secretName, configName)
	}
	return c
}

func (c *cluster) has(apiVersion, kind, name string) bool {
	_, ok := c.byKey[ref(apiVersion, kind, name)]
	return ok
}

func TestManifests(t *testing.T) {
	docs := loadDocs(t)
	c := index(t, docs)
	if !c.has("v1", "Namespace", namespace) {
		t.Errorf("no Namespace %q", namespace)
	}
	for _, d := range docs {
		t.Run(d.file+"#"+fmt.Sprint(d.index), func(t *testing.T) {
			checkHead(t, d)
			switch d.head.APIVersion + " " + d.head.Kind {
			case knativeSvcAV + " Service":
				checkKnativeService(t, c, d)
			case "apps/v1 Deployment":
				var w appsv1.Deployment
				if decodeStrict(t, d, &w) {
					checkPodTemplate(t, c, d, w.Spec.Selector, &w.Spec.Template)
				}
			case "apps/v1 StatefulSet":
				var w appsv1.StatefulSet
				if decodeStrict(t, d, &w) {
					checkPodTemplate(t, c, d, w.Spec.Selector, &w.Spec.Template)
					if s, ok := c.services[w.Spec.ServiceName]; !ok || s.Spec.ClusterIP != corev1.ClusterIPNone {
						t.Errorf("%s: serviceName %q must name a headless Service", d, w.Spec.ServiceName)
					}
				}
			case "v1 Service":
				checkService(t, c, d)
			case "v1 Secret":
				checkSecret(t, d)
			case "v1 ConfigMap":
				var m corev1.ConfigMap
				decodeStrict(t, d, &m)
			case "v1 Namespace":
				var n corev1.Namespace
				decodeStrict(t, d, &n)
			case "eventing.knative.dev/v1 Broker":
				validateEventing(t, d, "broker.json")
				checkBroker(t, d)
			case "eventing.knative.dev/v1 Trigger":
				validateEventing(t, d, "trigger.json")
				checkTrigger(t, c, d)
			case "sources.knative.dev/v1 SinkBinding":
				validateEventing(t, d, "sinkbinding.json")
				checkSinkBinding(t, c, d)
			case "gateway.networking.k8s.io/v1 HTTPRoute":
				checkHTTPRoute(t, c, d)
			default:
				t.Errorf("%s: no check for %s %s; add one", d, d.head.APIVersion, d.head.Kind)
			}
		})
	}
}

var koImage = regexp.MustCompile(regexp.QuoteMeta(koPrefix) + `(\S+)`)

// TestImages checks the images table against both sides: the main packages
// of functions/ and the ko:// references in the manifests.
func TestImages(t *testing.T) {
	mains, err := filepath.Glob(filepath.Join("..", "functions", "*", "main.go"))
	if err != nil || len(mains) == 0 {
		t.Fatalf("no main package under ../functions: %v", err)
	}
	for _, m := range mains {
		p := "functions/" + filepath.Base(filepath.Dir(m))
		if _, ok := images[p]; !ok {
			t.Errorf("%s is a function but not in the images table, so nothing deploys it", p)
		}
	}
	used := map[string]bool{}
	for _, d := range loadDocs(t) {
		for _, m := range koImage.FindAllStringSubmatch(string(d.raw), -1) {
			used[m[1]] = true
		}
	}
	for p := range images {
		if !used[p] {
			t.Errorf("images table has %s, but no manifest runs it", p)
		}
	}
}

func checkHead(t *testing.T, d *doc) {
	t.Helper()
	h := d.head
	if h.APIVersion == "" || h.Kind == "" || h.Metadata.Name == "" {
		t.Errorf("%s: apiVersion, kind and metadata.name are required", d)
	}
	want := namespace
	if h.Kind == "Namespace" {
		want = ""
	}
	if h.Metadata.Namespace != want {
		t.Errorf("%s: namespace %q, want %q", d, h.Metadata.Namespace, want)
	}
}

// knativeContext carries the serving configuration a cluster has when its
// config-defaults, config-features and config-autoscaler ConfigMaps are left
// as installed, and marks the validation as a create, as the webhook would.
func knativeContext() context.Context {
	ctx := context.Background()
	ctx = config.ToContext(ctx, config.FromContextOrDefaults(ctx))
	return apis.WithinCreate(ctx)
}

// resolveKo stands in for `ko resolve`, which replaces each ko:// reference
// with a pushed image before anything reaches the cluster; Knative rejects
// the ko:// form itself, so validation must see what ko would produce.
func resolveKo(image string) string {
	p, ok := strings.CutPrefix(image, koPrefix)
	if !ok {
		return image
	}
	return "registry.example.com/machineserver/" + filepath.Base(p) + "@sha256:" + strings.Repeat("0", 64)
}

// validateKnativeService decodes a Knative Service strictly and runs the same
// defaulting and validation as Knative's admission webhook. It returns the
// Service as written, and the errors and the warnings apart, since the webhook
// rejects only on errors.
func validateKnativeService(raw []byte) (svc *servingv1.Service, errs, warnings error) {
	svc = &servingv1.Service{}
	if err := yaml.UnmarshalStrict(raw, svc); err != nil {
		return nil, fmt.Errorf("strict decode: %w", err), nil
	}
	v := svc.DeepCopy()
	for i := range v.Spec.Template.Spec.Containers {
		c := &v.Spec.Template.Spec.Containers[i]
		c.Image = resolveKo(c.Image)
	}
	ctx := knativeContext()
	v.SetDefaults(ctx)
	fe := v.Validate(ctx)
	if e := fe.Filter(apis.ErrorLevel); e != nil {
		errs = fmt.Errorf("validate: %w", e)
	}
	if w := fe.Filter(apis.WarningLevel); w != nil {
		warnings = fmt.Errorf("validate: %w", w)
	}
	return svc, errs, warnings
}

func checkKnativeService(t *testing.T, c *cluster, d *doc) {
	svc, errs, warnings := validateKnativeService(d.raw)
	if errs != nil {
		t.Fatalf("%s: %v", d, errs)
	}
	// Warnings count too: each is a manifest to fix now.
	if warnings != nil {
		t.Errorf("%s: %v", d, warnings)
	}
	spec := &svc.Spec.Template.Spec
	checkContainers(t, c, d, spec.Containers)
	if !c.has("sources.knative.dev/v1", "SinkBinding", svc.Name) {
		t.Errorf("%s: no SinkBinding %q, so K_SINK would be unset and events dropped", d, svc.Name)
	}
}

func checkPodTemplate(t *testing.T, c *cluster, d *doc, sel *metav1.LabelSelector, tmpl *corev1.PodTemplateSpec) {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil || s.Empty() {
		t.Errorf("%s: selector: %v (empty: %v)", d, err, s == nil || s.Empty())
	} else if !s.Matches(labels.Set(tmpl.Labels)) {
		t.Errorf("%s: selector %s does not match the template labels %v", d, s, tmpl.Labels)
	}
	checkContainers(t, c, d, tmpl.Spec.Containers)
	volumes := map[string]bool{}
	for _, v := range tmpl.Spec.Volumes {
		volumes[v.Name] = true
	}
	for _, ct := range tmpl.Spec.Containers {
		for _, m := range ct.VolumeMounts {
			if !volumes[m.Name] {
				t.Errorf("%s: container %s mounts unknown volume %q", d, ct.Name, m.Name)
			}
		}
		if strings.HasPrefix(ct.Image, koPrefix) && !c.has("sources.knative.dev/v1", "SinkBinding", d.head.Metadata.Name) {
			t.Errorf("%s: no SinkBinding %q, so K_SINK would be unset and events dropped", d, d.head.Metadata.Name)
		}
	}
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

func checkContainers(t *testing.T, c *cluster, d *doc, cs []corev1.Container) {
	t.Helper()
	for _, ct := range cs {
		if ct.Image == "" {
			t.Errorf("%s: container %s has no image", d, ct.Name)
		}
		if p, ok := strings.CutPrefix(ct.Image, koPrefix); ok {
			// ko builds a main package of this module; it must exist.
			if _, err := os.Stat(filepath.Join("..", filepath.FromSlash(p), "main.go")); err != nil {
				t.Errorf("%s: image %s: no main package at %s: %v", d, ct.Image, p, err)
			}
			if w, ok := images[p]; !ok || w != d.head.Metadata.Name {
				t.Errorf("%s: image %s: the images table has it for %q", d, ct.Image, w)
			}
		}
		ports := map[string]bool{}
		for _, p := range ct.Ports {
			if p.Name == "" {
				t.Errorf("%s: container %s: port %d has no name", d, ct.Name, p.ContainerPort)
			}
			ports[p.Name] = true
		}
		for _, pr := range []*corev1.Probe{ct.ReadinessProbe, ct.LivenessProbe, ct.StartupProbe} {
			if pr == nil {
				continue
			}
			for _, port := range []string{httpPort(pr), tcpPort(pr)} {
				if port != "" && !ports[port] {
					t.Errorf("%s: container %s: probe port %q is not a named port", d, ct.Name, port)
				}
			}
		}
		checkEnv(t, c, d, ct)
	}
}

func httpPort(p *corev1.Probe) string {
	if p.HTTPGet == nil {
		return ""
	}
	return p.HTTPGet.Port.StrVal
}

func tcpPort(p *corev1.Probe) string {
	if p.TCPSocket == nil {
		return ""
	}
	return p.TCPSocket.Port.StrVal
}

func checkEnv(t *testing.T, c *cluster, d *doc, ct corev1.Container) {
	t.Helper()
	// Third-party images (redis, versitygw) have their own variables; only
	// our binaries are held to our list.
	ours := strings.HasPrefix(ct.Image, koPrefix)
	defined := map[string]bool{}
	for _, e := range ct.Env {
		if ours && !envNames[e.Name] {
			t.Errorf("%s: container %s: env %s is not a variable our binaries read", d, ct.Name, e.Name)
		}
		if defined[e.Name] {
			t.Errorf("%s: container %s: env %s set twice", d, ct.Name, e.Name)
		}
		// Kubernetes expands $(VAR) only from variables listed earlier.
		for _, m := range varRef.FindAllStringSubmatch(e.Value, -1) {
			if !defined[m[1]] {
				t.Errorf("%s: container %s: env %s uses $(%s) before it is defined", d, ct.Name, e.Name, m[1])
			}
		}
		defined[e.Name] = true
		if e.ValueFrom == nil {
			continue
		}
		// An optional key may be absent: the binary then runs without it.
		if r := e.ValueFrom.SecretKeyRef; r != nil && (r.Name != secretName || !c.secretKeys[r.Key] && (r.Optional == nil || !*r.Optional)) {
			t.Errorf("%s: container %s: env %s: no key %q in Secret %q", d, ct.Name, e.Name, r.Key, r.Name)
		}
		if r := e.ValueFrom.ConfigMapKeyRef; r != nil && (r.Name != configName || !c.configKeys[r.Key]) {
			t.Errorf("%s: container %s: env %s: no key %q in ConfigMap %q", d, ct.Name, e.Name, r.Key, r.Name)
		}
	}
}

func checkService(t *testing.T, c *cluster, d *doc) {
	s := c.services[d.head.Metadata.Name]
	if s == nil {
		return // the decode error is already reported
	}
	sel := labels.SelectorFromSet(s.Spec.Selector)
	var pods []*corev1.PodTemplateSpec
	for _, tmpl := range c.workloads {
		if len(s.Spec.Selector) > 0 && sel.Matches(labels.Set(tmpl.Labels)) {
			pods = append(pods, tmpl)
		}
	}
	if len(pods) == 0 {
		t.Errorf("%s: selector %v matches no Deployment or StatefulSet", d, s.Spec.Selector)
	}
	for _, p := range s.Spec.Ports {
		if p.Name == "" {
			t.Errorf("%s: port %d has no name", d, p.Port)
		}
		if name := p.TargetPort.StrVal; name != "" {
			for _, tmpl := range pods {
				if !podHasPort(tmpl, name) {
					t.Errorf("%s: targetPort %q is not a port of the selected pods", d, name)
				}
			}
		}
	}
}

func podHasPort(tmpl *corev1.PodTemplateSpec, name string) bool {
	for _, ct := range tmpl.Spec.Containers {
		for _, p := range ct.Ports {
			if p.Name == name {
				return true
			}
		}
	}
	return false
}

// checkSecret guards the template against real credentials: every value is a
// "change-me" placeholder or a URL without a password.
func checkSecret(t *testing.T, d *doc) {
	var s corev1.Secret
	if !decodeStrict(t, d, &s) {
		return
	}
	if len(s.Data) > 0 {
		t.Errorf("%s: use stringData with placeholders, not data", d)
	}
	for k, v := range s.StringData {
		if strings.Contains(v, "change-me") {
			continue
		}
		u, err := url.Parse(v)
		if err != nil || u.Scheme == "" {
			t.Errorf("%s: %s must be a change-me placeholder or a URL", d, k)
			continue
		}
		if _, hasPassword := u.User.Password(); hasPassword {
			t.Errorf("%s: %s carries a password; the template holds placeholders only", d, k)
		}
	}
}

// The Eventing and Gateway API types are not in this module's dependencies,
// so the documents below are decoded into local structs holding only the
// fields these manifests use, with unknown fields rejected. That is a
// structural check with our own reference checks on top, not the upstream
// admission validation.

type objectMeta struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type kref struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Name       string `json:"name"`
	Namespace  string `json:"namespace,omitempty"`
}

type destination struct {
	Ref *kref  `json:"ref,omitempty"`
	URI string `json:"uri,omitempty"`
}

type broker struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   objectMeta `json:"metadata"`
	Spec       struct {
		Delivery *struct {
			Retry          *int32       `json:"retry,omitempty"`
			BackoffPolicy  string       `json:"backoffPolicy,omitempty"`
			BackoffDelay   string       `json:"backoffDelay,omitempty"`
			DeadLetterSink *destination `json:"deadLetterSink,omitempty"`
		} `json:"delivery,omitempty"`
	} `json:"spec"`
}

type trigger struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   objectMeta `json:"metadata"`
	Spec       struct {
		Broker string `json:"broker"`
		Filter *struct {
			Attributes map[string]string `json:"attributes"`
		} `json:"filter,omitempty"`
		Subscriber destination `json:"subscriber"`
	} `json:"spec"`
}

type sinkBinding struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   objectMeta `json:"metadata"`
	Spec       struct {
		Subject kref        `json:"subject"`
		Sink    destination `json:"sink"`
	} `json:"spec"`
}

type httpRoute struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   objectMeta `json:"metadata"`
	Spec       struct {
		ParentRefs []struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace,omitempty"`
		} `json:"parentRefs"`
		Rules []routeRule `json:"rules"`
	} `json:"spec"`
}

type routeRule struct {
	Matches []struct {
		Path *struct {
			Type  string `json:"type"`
			Value string `json:"value"`
		} `json:"path,omitempty"`
	} `json:"matches"`
	Filters []struct {
		Type       string `json:"type"`
		URLRewrite *struct {
			Hostname string `json:"hostname"`
		} `json:"urlRewrite,omitempty"`
	} `json:"filters,omitempty"`
	BackendRefs []struct {
		Name string `json:"name"`
		Port *int32 `json:"port"`
	} `json:"backendRefs"`
}

func checkBroker(t *testing.T, d *doc) {
	var b broker
	if !decodeStrict(t, d, &b) {
		return
	}
	if dl := b.Spec.Delivery; dl != nil && !slices.Contains([]string{"", "linear", "exponential"}, dl.BackoffPolicy) {
		t.Errorf("%s: backoffPolicy %q", d, dl.BackoffPolicy)
	}
}

// commandTargets maps the noun of a command type (io.machineserver.<noun>.*)
// to the function that owns it.
var commandTargets = map[string]string{
	"session":  "sessions",
	"system":   "sessions",
	"program":  "programs",
	"snapshot": "snapshots",
	// System snapshots: each node's state is a snapshot.
	"systemsnapshot": "snapshots",
	"job":            "jobs",
}

// typeTargets are the commands whose owner is not their noun's: restoring
// a system replaces every node's state with a snapshot's, so the snapshots
// function takes it.
var typeTargets = map[string]string{
	events.TypeSystemRestore: "snapshots",
}

// foreignTargets maps the prefixes of the command types other specs name to
// the function that takes them: CDEvents from pipelines start jobs, bucket
// notifications (AWS S3 adapter form) register programs.
var foreignTargets = map[string]string{
	"dev.cdevents.":     "jobs",
	"com.amazonaws.s3.": "programs",
}

// subscriptions are the notifications a function consumes, and which one:
// a stored program runs the job rules of its bucket key.
var subscriptions = map[string]string{
	events.TypeProgramStored: "jobs",
}

// commandTarget is the function that owns a command type, or "" for a noun
// no function owns.
func commandTarget(eventType string) string {
	if fn, ok := typeTargets[eventType]; ok {
		return fn
	}
	for prefix, fn := range foreignTargets {
		if strings.HasPrefix(eventType, prefix) {
			return fn
		}
	}
	rest, _ := strings.CutPrefix(eventType, "io.machineserver.")
	noun, _, _ := strings.Cut(rest, ".")
	return commandTargets[noun]
}

func checkTrigger(t *testing.T, c *cluster, d *doc) {
	var tr trigger
	if !decodeStrict(t, d, &tr) {
		return
	}
	if !c.has("eventing.knative.dev/v1", "Broker", tr.Spec.Broker) {
		t.Errorf("%s: broker %q is not among the manifests", d, tr.Spec.Broker)
	}
	r := tr.Spec.Subscriber.Ref
	if r == nil || !c.has(r.APIVersion, r.Kind, r.Name) {
		t.Fatalf("%s: subscriber %+v is not among the manifests", d, r)
	}
	if tr.Spec.Filter == nil || tr.Spec.Filter.Attributes["type"] == "" {
		t.Fatalf("%s: a Trigger without a type filter would deliver every event", d)
	}
	typ := tr.Spec.Filter.Attributes["type"]
	spec, ok := events.Lookup(typ)
	if !ok {
		t.Fatalf("%s: %s is not in the events catalog", d, typ)
	}
	want := commandTarget(typ)
	if spec.Direction != events.Command {
		if want, ok = subscriptions[typ]; !ok {
			t.Errorf("%s: %s is a notification no function subscribes to", d, typ)
		}
	}
	if r.Name != want {
		t.Errorf("%s: %s goes to %s, want %s", d, typ, r.Name, want)
	}
}

// TestTriggersCoverCommands checks each command of the events catalog is
// routed by exactly one Trigger.
func TestTriggersCoverCommands(t *testing.T) {
	count := map[string]int{}
	for _, d := range loadDocs(t) {
		if d.head.Kind != "Trigger" {
			continue
		}
		var tr trigger
		if decodeStrict(t, d, &tr) && tr.Spec.Filter != nil {
			count[tr.Spec.Filter.Attributes["type"]]++
		}
	}
	for _, s := range events.Catalog {
		if s.Direction == events.Command && count[s.Type] != 1 {
			t.Errorf("command %s is routed by %d Triggers, want 1", s.Type, count[s.Type])
		}
	}
}

func checkSinkBinding(t *testing.T, c *cluster, d *doc) {
	var sb sinkBinding
	if !decodeStrict(t, d, &sb) {
		return
	}
	s := sb.Spec.Subject
	if !slices.Contains([]string{"apps/v1 Deployment", "apps/v1 StatefulSet", knativeSvcAV + " Service"}, s.APIVersion+" "+s.Kind) {
		t.Errorf("%s: subject kind %s %s is not a Deployment, StatefulSet or Knative Service", d, s.APIVersion, s.Kind)
	}
	if !c.has(s.APIVersion, s.Kind, s.Name) {
		t.Errorf("%s: subject %s %s is not among the manifests", d, s.Kind, s.Name)
	}
	if r := sb.Spec.Sink.Ref; r == nil || !c.has(r.APIVersion, r.Kind, r.Name) {
		t.Errorf("%s: sink %+v is not among the manifests", d, r)
	}
}

func checkHTTPRoute(t *testing.T, c *cluster, d *doc) {
	var hr httpRoute
	if !decodeStrict(t, d, &hr) {
		return
	}
	if len(hr.Spec.ParentRefs) == 0 {
		t.Errorf("%s: no parentRefs: the route would attach to no Gateway", d)
	}
	for i, r := range hr.Spec.Rules {
		if len(r.BackendRefs) != 1 || r.BackendRefs[0].Port == nil {
			t.Errorf("%s: rule %d: want one backendRef with a port", d, i)
			continue
		}
		b := r.BackendRefs[0]
		switch {
		case c.has(knativeSvcAV, "Service", b.Name):
			// The Kubernetes Service Knative creates for a Knative Service
			// listens on 80 and serves whatever Host names the revision.
			if *b.Port != 80 {
				t.Errorf("%s: rule %d: Knative Service %s is reached on port 80, not %d", d, i, b.Name, *b.Port)
			}
			want := b.Name + "." + namespace + ".svc.cluster.local"
			if len(r.Filters) != 1 || r.Filters[0].URLRewrite == nil || r.Filters[0].URLRewrite.Hostname != want {
				t.Errorf("%s: rule %d: Knative routes by Host; want a URLRewrite to %s", d, i, want)
			}
		case c.services[b.Name] != nil:
			if !slices.ContainsFunc(c.services[b.Name].Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == *b.Port }) {
				t.Errorf("%s: rule %d: Service %s has no port %d", d, i, b.Name, *b.Port)
			}
		default:
			t.Errorf("%s: rule %d: backend %q is not a Service among the manifests", d, i, b.Name)
		}
		for _, m := range r.Matches {
			switch {
			case m.Path == nil:
				t.Errorf("%s: rule %d: a match without a path", d, i)
			case m.Path.Type == "PathPrefix":
			case m.Path.Type == "RegularExpression":
				// Go's regexp is RE2, the syntax Envoy (Istio, Envoy
				// Gateway) takes.
				if _, err := regexp.Compile(m.Path.Value); err != nil {
					t.Errorf("%s: rule %d: %v", d, i, err)
				}
				if !strings.HasPrefix(m.Path.Value, "^") || !strings.HasSuffix(m.Path.Value, "$") {
					t.Errorf("%s: rule %d: %s must be anchored with ^ and $: implementations differ on partial matches", d, i, m.Path.Value)
				}
			default:
				t.Errorf("%s: rule %d: path type %q; want PathPrefix or RegularExpression", d, i, m.Path.Type)
			}
		}
	}
	paths := map[string]string{
		"/api/v1/programs":                            "programs",
		"/api/v1/programs/p1":                         "programs",
		"/api/v1/sessions":                            "sessions",
		"/api/v1/sessions/":                           "sessions",
		"/api/v1/sessions/s1":                         "sessions",
		"/api/v1/sessions/s1/poweron":                 "sessions",
		"/api/v1/sessions/s1/stream/console":          "sessions",
		"/api/v1/capabilities":                        "sessions",
		"/health":                                     "sessions",
		"/api/v1/openapi.json":                        "sessions",
		"/api/v1/recordings/r1/sessions":              "sessions",
		"/api/v1/systems":                             "sessions",
		"/api/v1/systems/s1/poweron":                  "sessions",
		"/api/v1/systems/s1/links/lan0":               "sessions",
		"/api/v1/snapshots":                           "snapshots",
		"/api/v1/snapshots/0123456789abcdef":          "snapshots",
		"/api/v1/snapshots/0123456789abcdef/sessions": "snapshots",
		"/api/v1/sessions/s1/snapshots":               "snapshots",
		"/api/v1/sessions/s1/restore":                 "snapshots",
		"/api/v1/systems/s1/snapshots":                "snapshots",
		"/api/v1/systems/s1/restore":                  "snapshots",
		"/api/v1/system-snapshots":                    "snapshots",
		"/api/v1/system-snapshots/0123456789abcdef":   "snapshots",
		"/api/v1/system-snapshots/x/systems":          "snapshots",
		"/api/v1/systems/snapshots":                   "sessions",
		"/api/v1/systems/s1/snapshots/x":              "sessions",
		"/api/v1/systems/s1/links/restore":            "sessions",
		// A session whose id is "snapshots", and deeper paths the
		// snapshots function does not serve, stay with sessions.
		"/api/v1/sessions/snapshots":               "sessions",
		"/api/v1/sessions/s1/snapshots/x":          "sessions",
		"/api/v1/sessions//restore":                "sessions",
		"/api/v1/programsx":                        "",
		"/api/v1/snapshotsx":                       "",
		"/api/v1/sessionsx":                        "",
		"/api/v1/systemsx":                         "",
		"/api/v1/system-snapshotsx":                "",
		"/api/v1/sessions-of-someone-else/console": "",
	}
	for path, fn := range functionPaths(t) {
		if prev, ok := paths[path]; ok && prev != fn {
			t.Errorf("%s is served by %s, but the table above says %s", path, fn, prev)
		}
		paths[path] = fn
	}
	for _, path := range slices.Sorted(maps.Keys(paths)) {
		want := paths[path]
		for _, o := range orders {
			got, tie := routeFor(hr, path, o.rank)
			if tie != "" {
				t.Errorf("%s: %s: under %s's order %q and %q tie; which wins is left to rule order", d, path, o.name, got, tie)
			}
			if got != want {
				t.Errorf("%s: %s routes to %q under %s's order, want %q", d, path, got, o.name, want)
			}
		}
	}
}

// orders are the precedences of path match types of the Gateway API
// implementations we know to accept the ExternalName backends (see
// routing.yaml). The spec ranks Exact over PathPrefix and leaves
// RegularExpression to the implementation, and these two disagree on it;
// within a rank both order by the length of the match value, longest first.
// A route must resolve every path the same way under each.
var orders = []struct {
	name string
	rank map[string]int
}{
	{"Envoy Gateway", map[string]int{"Exact": 3, "RegularExpression": 2, "PathPrefix": 1}},
	{"Istio", map[string]int{"Exact": 3, "PathPrefix": 2, "RegularExpression": 1}},
}

// routeFor picks the backend for path by rank of the match type, then by
// length of the match value. A PathPrefix matches whole path elements. tie
// names a different backend that matched with the same rank and length.
func routeFor(hr httpRoute, path string, rank map[string]int) (best, tie string) {
	bestRank, bestLen := -1, -1
	for _, r := range hr.Spec.Rules {
		for _, m := range r.Matches {
			if m.Path == nil || len(r.BackendRefs) == 0 {
				continue
			}
			v := m.Path.Value
			var ok bool
			switch m.Path.Type {
			case "PathPrefix":
				v = strings.TrimSuffix(v, "/")
				ok = path == v || strings.HasPrefix(path, v+"/")
			case "RegularExpression":
				re, err := regexp.Compile(v)
				ok = err == nil && re.MatchString(path)
			}
			if !ok {
				continue
			}
			name, rk := r.BackendRefs[0].Name, rank[m.Path.Type]
			switch {
			case rk > bestRank || rk == bestRank && len(v) > bestLen:
				best, tie, bestRank, bestLen = name, "", rk, len(v)
			case rk == bestRank && len(v) == bestLen && name != best:
				tie = name
			}
		}
	}
	return best, tie
}

// handlerPattern finds the REST patterns a function declares in its route
// table (httpapi.Route{..., Pattern: "/api/v1/..."}).
var handlerPattern = regexp.MustCompile(`Pattern:\s*"(/[^"]*)"`)

// functionPaths returns one concrete path for each REST pattern in
// ../functions/<name>/handler, mapped to <name>: the route must send each to
// the function that serves it.
func functionPaths(t *testing.T) map[string]string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "functions", "*", "handler", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	wildcard := regexp.MustCompile(`\{[^}]*\}`)
	out := map[string]string{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		fn := filepath.Base(filepath.Dir(filepath.Dir(f)))
		for _, m := range handlerPattern.FindAllStringSubmatch(string(b), -1) {
			path := wildcard.ReplaceAllStringFunc(m[1], func(w string) string {
				switch {
				case w == "{$}":
					return ""
				case strings.HasSuffix(w, "...}"):
					return "a/b"
				}
				return "x1"
			})
			if prev, ok := out[path]; ok && prev != fn {
				t.Errorf("%s is registered by both %s and %s", m[1], prev, fn)
			}
			out[path] = fn
		}
	}
	if len(out) == 0 {
		t.Fatal("no REST pattern found under ../functions/*/handler")
	}
	return out
}

// TestKnativeValidationRejects proves the validation above has teeth: each
// Service here is wrong in one way the webhook refuses, and the refusal must
// be an error (not a warning) about that very mistake.
func TestKnativeValidationRejects(t *testing.T) {
	const head = `apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: bad
  namespace: machineserver
`
	const image = "ko://github.com/machineserver/machineserver/functions/sessions"
	for _, tc := range []struct{ name, body, want string }{{
		name: "two containers without ports",
		body: `spec:
  template:
    spec:
      containers:
        - name: a
          image: ` + image + `
        - name: b
          image: ` + image + `
`,
		want: "containers[*].ports",
	}, {
		name: "containerConcurrency above the cluster maximum",
		body: `spec:
  template:
    spec:
      containerConcurrency: 5000
      containers:
        - image: ` + image + `
`,
		want: "spec.template.spec.containerConcurrency",
	}, {
		name: "timeout above the cluster maximum",
		body: `spec:
  template:
    spec:
      timeoutSeconds: 3600
      containers:
        - image: ` + image + `
`,
		want: "spec.template.spec.timeoutSeconds",
	}, {
		name: "autoscaling annotation on the Service instead of the template",
		body: `  annotations:
    autoscaling.knative.dev/min-scale: "1"
spec:
  template:
    spec:
      containers:
        - image: ` + image + `
`,
		want: "autoscaling annotations must be put under",
	}, {
		name: "min-scale above max-scale",
		body: `spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/min-scale: "5"
        autoscaling.knative.dev/max-scale: "2"
    spec:
      containers:
        - image: ` + image + `
`,
		want: "min-scale",
	}, {
		name: "unknown field",
		body: `spec:
  template:
    spec:
      containers:
        - image: ` + image + `
          readynessProbe:
            httpGet:
              path: /health
`,
		want: `unknown field "readynessProbe"`,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			_, errs, _ := validateKnativeService([]byte(head + tc.body))
			if errs == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(errs.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", errs, tc.want)
			}
		})
	}
}
