package quota

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/machineserver/machineserver/shared/auth"
	"github.com/machineserver/machineserver/shared/httpapi"
)

func TestRoutes(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: miniredis.RunT(t).Addr()})
	defer rdb.Close()
	q := New(rdb, Config{Sessions: 2, StorageBytes: 100, Jobs: 1})
	mux := http.NewServeMux()
	httpapi.Mount(mux, q.Routes()...)
	// Stands in for the auth middleware: the tenant comes from a header.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if t := r.Header.Get("X-Test-Tenant"); t != "" {
			r = r.WithContext(auth.WithPrincipal(r.Context(), auth.Principal{Tenant: t, Scopes: []auth.Scope{auth.ScopeAdmin}}))
		}
		mux.ServeHTTP(w, r)
	}))
	defer srv.Close()
	call := func(method, path, tenant, body string) (int, string) {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		req.Header.Set("X-Test-Tenant", tenant)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	q.Acquire(t.Context(), "a", Sessions, "s1", 1)

	code, body := call("GET", "/api/v1/quota", "a", "")
	var u Usage
	json.Unmarshal([]byte(body), &u)
	if code != 200 || u.Tenant != "a" || u.Sessions != (Item{Limit: 2, Used: 1, Source: "default"}) || u.StorageBytes.Limit != 100 || u.Jobs.Limit != 1 {
		t.Fatalf("own quota: %d %s", code, body)
	}
	// Without a principal the caller is the default tenant.
	if code, body := call("GET", "/api/v1/quota", "", ""); code != 200 || !strings.Contains(body, `"tenant": "default"`) {
		t.Fatalf("default tenant: %d %s", code, body)
	}
	code, body = call("PUT", "/api/v1/admin/tenants/a/quota", "default", `{"sessions": 50, "jobs": -1}`)
	u = Usage{}
	json.Unmarshal([]byte(body), &u)
	if code != 200 || u.Sessions != (Item{Limit: 50, Used: 1, Source: "override"}) || u.Jobs.Limit != Unlimited || u.StorageBytes.Source != "default" {
		t.Fatalf("put: %d %s", code, body)
	}
	if code, body := call("GET", "/api/v1/admin/tenants/a/quota", "default", ""); code != 200 || !strings.Contains(body, `"limit": 50`) {
		t.Fatalf("admin get: %d %s", code, body)
	}
	for _, c := range []struct{ body, want string }{
		{`{"sessions": -5}`, "sessions must be -1 (unlimited) or a limit of 0 or more"},
		{`{"session": 5}`, `unknown field \"session\"`},
		{`{"sessions": "many"}`, `field \"sessions\" must be int64`},
		{``, "request body is empty"},
	} {
		if code, body := call("PUT", "/api/v1/admin/tenants/a/quota", "default", c.body); code != 400 || !strings.Contains(body, c.want) {
			t.Errorf("PUT %s: %d %s", c.body, code, body)
		}
	}
	// A tenant's own admin reads its quota but cannot raise it, nor read
	// another tenant's.
	if code, body := call("GET", "/api/v1/admin/tenants/a/quota", "a", ""); code != 200 {
		t.Errorf("tenant admin reads its own quota: %d %s", code, body)
	}
	if code, body := call("PUT", "/api/v1/admin/tenants/a/quota", "a", `{"sessions": 500}`); code != 403 || !strings.Contains(body, "operator") {
		t.Errorf("tenant admin raises its own quota: %d %s", code, body)
	}
	if code, body := call("GET", "/api/v1/admin/tenants/b/quota", "a", ""); code != 403 {
		t.Errorf("tenant admin reads another tenant's quota: %d %s", code, body)
	}
	if code, body := call("GET", "/api/v1/admin/tenants/a%20b/quota", "default", ""); code != 400 || !strings.Contains(body, "tenant must be") {
		t.Errorf("bad tenant: %d %s", code, body)
	}
}
