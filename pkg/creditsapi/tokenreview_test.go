package creditsapi_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/creditgate/creditgate/pkg/creditsapi"
)

// fakeAPIServer answers TokenReviews like kube-apiserver: tokens it knows
// are the named ServiceAccounts' for audience creditgate.
func fakeAPIServer(t *testing.T, tokens map[string]string, reviews *atomic.Int64) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/apis/authentication.k8s.io/v1/tokenreviews" || r.Header.Get("Authorization") != "Bearer reviewer-token" {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		reviews.Add(1)
		var in struct {
			Spec struct {
				Token     string   `json:"token"`
				Audiences []string `json:"audiences"`
			} `json:"spec"`
		}
		_ = json.NewDecoder(r.Body).Decode(&in)
		out := map[string]any{"authenticated": false}
		if user, ok := tokens[in.Spec.Token]; ok && len(in.Spec.Audiences) == 1 && in.Spec.Audiences[0] == "creditgate" {
			out = map[string]any{"authenticated": true, "audiences": []string{"creditgate"}, "user": map[string]any{"username": user}}
		}
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": out})
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestServiceAccountTokens: in-cluster callers authenticate with projected
// ServiceAccount tokens, reviewed by the API server and cached; a
// ServiceAccount without scopes gets 403; the API server down is 503.
func TestServiceAccountTokens(t *testing.T) {
	t.Parallel()
	var reviews atomic.Int64
	const spender, stranger = "aaa.bbb.spender", "aaa.bbb.stranger"
	api := fakeAPIServer(t, map[string]string{
		spender:  "system:serviceaccount:app:generator",
		stranger: "system:serviceaccount:other:nobody",
	}, &reviews)
	scopes, err := creditsapi.ParseServiceAccounts("app/generator:read+spend")
	if err != nil {
		t.Fatal(err)
	}
	rv := &creditsapi.TokenReviewer{APIServer: api.URL, Client: api.Client(), Scopes: scopes,
		Token: func() (string, error) { return "reviewer-token", nil }}
	e := newAPIEnvWithReviewer(t, rv)
	call := func(token string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, e.url+"/v1/users/user_a/balance", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := e.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := call(spender); s != 200 {
		t.Errorf("ServiceAccount with read: %d", s)
	}
	if s := call(spender); s != 200 || reviews.Load() != 1 {
		t.Errorf("second call: %d after %d reviews, want 200 from the cache (1 review)", s, reviews.Load())
	}
	if s := call(stranger); s != 403 {
		t.Errorf("ServiceAccount without scopes: %d, want 403", s)
	}
	if s := call("aaa.bbb.forged"); s != 401 {
		t.Errorf("a token the API server does not know: %d, want 401", s)
	}
	api.Close()
	if s := call("aaa.bbb.new"); s != 503 {
		t.Errorf("API server down: %d, want 503", s)
	}
	if _, err := creditsapi.ParseServiceAccounts("app/generator:steal"); err == nil {
		t.Error("an unknown scope was accepted")
	}
}
