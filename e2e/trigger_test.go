package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/machineserver/machineserver/events"
	"github.com/machineserver/machineserver/shared/blob"
	"github.com/machineserver/machineserver/shared/testenv"
)

// triggerBucket is the bucket the CI uploads firmware into; the platform
// watches its ci/ prefix.
const triggerBucket = "firmware-uploads"

// triggerRelay is an HTTP receiver that exists before the platform does: versitygw
// POSTs a test event to its webhook at start and exits if nothing answers,
// and the platform needs the gateway's address to start. Until a target is
// set it answers 202 to everything; then it forwards each request to the
// target URL with client, as a cluster's ingress forwards to the function.
type triggerRelay struct {
	srv    *httptest.Server
	mu     sync.Mutex
	target string
	client *http.Client
	filter func(*http.Request) bool
}

func newTriggerRelay(t *testing.T, filter func(*http.Request) bool) *triggerRelay {
	r := &triggerRelay{filter: filter}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *triggerRelay) setTarget(u string, c *http.Client) {
	r.mu.Lock()
	r.target, r.client = u, c
	r.mu.Unlock()
}

func (r *triggerRelay) serve(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	target, client := r.target, r.client
	r.mu.Unlock()
	body, _ := io.ReadAll(req.Body)
	if target == "" || (r.filter != nil && !r.filter(req)) {
		w.WriteHeader(http.StatusAccepted)
		return
	}
	out, _ := http.NewRequest(req.Method, target, bytes.NewReader(body))
	out.Header = req.Header.Clone()
	resp, err := client.Do(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

// TestObjectUploadTrigger: a CI uploads firmware into the watched bucket
// with aws-sdk-go-v2; versitygw's notification reaches the programs
// function, which registers it once (also when the notification comes
// twice), rejects a bad object with the reason, and a job rule for the
// bucket prefix runs the program to passed with its console log stored.
func TestObjectUploadTrigger(t *testing.T) {
	hookToken := randomHex(16)
	for _, form := range forms {
		t.Run(form.name, func(t *testing.T) {
			hook := newTriggerRelay(t, nil)
			// The Broker's part: program.stored (published to K_SINK) goes
			// to the jobs function, as the Trigger in knative/eventing.yaml
			// routes it. The standalone server calls the jobs handler itself.
			broker := newTriggerRelay(t, func(r *http.Request) bool { return r.Header.Get("Ce-Type") == events.TypeProgramStored })
			s3cfg := testenv.S3(t, testenv.WithWebhook(hook.srv.URL+"/"))
			env := []string{
				"MS_PROGRAMS_BUCKET=" + triggerBucket + "/ci/",
				// The distributed form keeps its blobs on this gateway too:
				// the trigger reads the watched bucket on the blob store's
				// endpoint.
				"MS_S3_ENDPOINT=" + s3cfg.Endpoint, "MS_S3_ACCESS_KEY=" + s3cfg.AccessKey,
				"MS_S3_SECRET_KEY=" + s3cfg.SecretKey, "MS_S3_BUCKET=" + s3cfg.Bucket,
				"K_SINK=" + broker.srv.URL, "MS_PROGRAMS_WEBHOOK_TOKEN=" + hookToken,
			}
			pl := form.start(t, env...)
			// No credential, as versitygw sends none.
			plain := &http.Client{}
			if pl.fnURLs != nil {
				// In a cluster the store posts to the programs function's
				// root, which the in-cluster ingress reaches unauthenticated.
				hook.setTarget(pl.fnURLs["programs"]+"/", plain)
				broker.setTarget(pl.fnURLs["jobs"]+"/", plain)
			} else {
				// The standalone server takes notifications on the API
				// path: the store sends no credential, only the webhook
				// token in the URL it was configured with.
				hook.setTarget(pl.base+"/api/v1/programs/notifications?token="+hookToken, plain)
			}
			objectUploadTrigger(t, pl, s3cfg)
		})
	}
}

func objectUploadTrigger(t *testing.T, pl *platform, cfg blob.S3Config) {
	ctx := t.Context()
	// The CI's client: static credentials, the gateway's endpoint, path style.
	c := s3.New(s3.Options{
		Region:       cfg.Region,
		Credentials:  credentials.NewStaticCredentialsProvider(cfg.AccessKey, cfg.SecretKey, ""),
		BaseEndpoint: aws.String("http://" + cfg.Endpoint),
		UsePathStyle: true,
	})
	put := func(key string, data []byte) string {
		out, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(triggerBucket), Key: aws.String(key), Body: bytes.NewReader(data)})
		if err != nil {
			t.Fatalf("upload %s: %v", key, err)
		}
		return strings.Trim(aws.ToString(out.ETag), `"`)
	}

	// A job rule for the prefix, before the upload.
	var rule struct {
		ID string `json:"id"`
	}
	code, body := pl.call(t, "POST", "/api/v1/jobs/rules", map[string]any{"prefix": "ci/netduino2/", "template": map[string]any{
		"board_config": map[string]any{"board": "netduino2"}, "timeout": "20s", "pass_pattern": "ready",
	}}, &rule)
	if code != http.StatusCreated && code != http.StatusOK {
		t.Fatalf("job rule: %d %s", code, body)
	}

	fw, err := os.ReadFile(firmware(t, "netduino2", "fw.elf"))
	if err != nil {
		t.Fatal(err)
	}
	key := "ci/netduino2/fw build 7.elf" // a space: AWS and MinIO would URL-encode it
	etag := put(key, fw)
	sum := sha256.Sum256([]byte(triggerBucket + "\x00" + key + "\x00" + etag))
	wantID := hex.EncodeToString(sum[:8])

	p := waitTriggeredProgram(t, pl, key)
	if p.ID != wantID || p.State != "stored" || p.Bucket != triggerBucket || p.Format != "elf" {
		t.Fatalf("registered program %+v, want id %s stored", p, wantID)
	}

	// The same notification, delivered twice more by hand (at-least-once
	// delivery): still one program.
	note := fmt.Sprintf(`{"Records":[{"eventVersion":"2.2","eventSource":"aws:s3","eventName":"s3:ObjectCreated:Put",
	  "s3":{"bucket":{"name":%q},"object":{"key":%q,"size":%d,"eTag":"\"%s\""}}}]}`, triggerBucket, key, len(fw), etag)
	for range 2 {
		var n struct {
			Programs []triggeredProgram `json:"programs"`
		}
		pl.must(t, http.StatusOK, "POST", "/api/v1/programs/notifications", note, &n)
		if len(n.Programs) != 1 || n.Programs[0].ID != wantID {
			t.Fatalf("redelivery registered %+v", n.Programs)
		}
	}
	if got := triggeredPrograms(t, pl, key); len(got) != 1 {
		t.Fatalf("%d programs from %s after redelivery, want 1", len(got), key)
	}

	// A bad object: registered as rejected with the reason, nothing else.
	put("ci/netduino2/broken.elf", []byte("\x7fELF this is not firmware"))
	bad := waitTriggeredProgram(t, pl, "ci/netduino2/broken.elf")
	if bad.State != "rejected" || bad.Reason == "" {
		t.Fatalf("bad object: %+v", bad)
	}
	if code, _ := pl.call(t, "POST", "/api/v1/programs/notifications", strings.ReplaceAll(note, triggerBucket, "not-watched"), nil); code != http.StatusUnprocessableEntity {
		t.Fatalf("unknown bucket: %d", code)
	}
	// Without a credential or the webhook token: refused, nothing read.
	for _, q := range []string{"", "?token=wrong"} {
		resp, err := plain.Post(pl.base+"/api/v1/programs/notifications"+q, "application/json", strings.NewReader(note))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("notification without the webhook token (%q): %d", q, resp.StatusCode)
		}
	}

	// The rule's job for the uploaded program runs and passes, with its
	// console log stored.
	job := waitTriggeredJob(t, pl, wantID)
	if job.State != "passed" || job.ConsoleKey == "" {
		t.Fatalf("job %+v", job)
	}
	code, log := pl.call(t, "GET", "/api/v1/jobs/"+job.ID+"/console", nil, nil)
	if code != http.StatusOK || !strings.Contains(string(log), "ready") {
		t.Fatalf("console log: %d %q", code, log)
	}
	// No job for the rejected program.
	var jobs struct {
		Jobs []triggeredJob `json:"jobs"`
	}
	pl.must(t, http.StatusOK, "GET", "/api/v1/jobs?page_size=100", nil, &jobs)
	for _, j := range jobs.Jobs {
		if j.ProgramID == bad.ID {
			t.Fatalf("a job ran the rejected program: %+v", j)
		}
	}
}

type triggeredProgram struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Format    string `json:"format"`
	Bucket    string `json:"bucket"`
	SourceKey string `json:"source_key"`
	State     string `json:"state"`
	Reason    string `json:"reason"`
}

type triggeredJob struct {
	ID         string `json:"id"`
	ProgramID  string `json:"program_id"`
	State      string `json:"state"`
	Reason     string `json:"reason"`
	ConsoleKey string `json:"console_key"`
}

func triggeredPrograms(t *testing.T, pl *platform, key string) []triggeredProgram {
	var l struct {
		Programs []triggeredProgram `json:"programs"`
	}
	pl.must(t, http.StatusOK, "GET", "/api/v1/programs?page_size=100", nil, &l)
	var out []triggeredProgram
	for _, p := range l.Programs {
		if p.SourceKey == key {
			out = append(out, p)
		}
	}
	return out
}

// waitTriggeredProgram polls the API until the program registered from key appears.
// The bound is a safety net against a lost notification, not a measurement.
func waitTriggeredProgram(t *testing.T, pl *platform, key string) triggeredProgram {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for {
		if ps := triggeredPrograms(t, pl, key); len(ps) > 0 {
			if len(ps) > 1 {
				t.Fatalf("%d programs from %s", len(ps), key)
			}
			return ps[0]
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no program registered from %s", key)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitTriggeredJob polls until a job of the program is in a final state.
func waitTriggeredJob(t *testing.T, pl *platform, programID string) triggeredJob {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	for {
		var l struct {
			Jobs []triggeredJob `json:"jobs"`
		}
		pl.must(t, http.StatusOK, "GET", "/api/v1/jobs?page_size=100", nil, &l)
		var mine []triggeredJob
		for _, j := range l.Jobs {
			if j.ProgramID == programID {
				mine = append(mine, j)
			}
		}
		if len(mine) > 1 {
			t.Fatalf("%d jobs for program %s, want 1: %+v", len(mine), programID, mine)
		}
		if len(mine) == 1 && mine[0].State != "queued" && mine[0].State != "running" {
			return mine[0]
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no finished job for program %s: %+v", programID, mine)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
