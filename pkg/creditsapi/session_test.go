package creditsapi_test

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v3"
	josejwt "github.com/go-jose/go-jose/v3/jwt"

	"github.com/creditgate/creditgate/pkg/clerk"
	"github.com/creditgate/creditgate/pkg/clerk/clerkfake"
	"github.com/creditgate/creditgate/pkg/creditsapi"
)

// TestClerkSessionTokens: /v1/me/… serves the signed-in user, by a Clerk
// session token verified with the instance's keys (the fake Backend API's
// JWKS); a token for another frontend, an expired one, or one signed with
// another key is 401; a user cannot name another user.
func TestClerkSessionTokens(t *testing.T) {
	t.Parallel()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	set, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "ins_key_1", Algorithm: "RS256", Use: "sig"}}})
	fake := clerkfake.New()
	fake.SetSecretKey("sk_test_jit")
	fake.SetJWKS(set)
	fs := httptest.NewServer(fake)
	t.Cleanup(fs.Close)
	sessions, err := clerk.NewSessions(clerk.APIConfig{SecretKey: "sk_test_jit", URL: fs.URL + "/v1"}, []string{"https://app.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	e := newAPIEnvConfig(t, func(c *creditsapi.Config) { c.Sessions = sessions })

	mint := func(signer *rsa.PrivateKey, sub, azp string, exp time.Time) string {
		t.Helper()
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: signer},
			(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "ins_key_1"))
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		tok, err := josejwt.Signed(s).Claims(map[string]any{
			"sub": sub, "azp": azp, "iss": "https://clerk.example.com", "sid": "sess_1",
			"iat": now.Unix(), "nbf": now.Add(-time.Minute).Unix(), "exp": exp.Unix(),
		}).CompactSerialize()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	get := func(path, token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, e.url+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := e.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b json.RawMessage
		_ = json.NewDecoder(resp.Body).Decode(&b)
		return resp.StatusCode, string(b)
	}
	soon := time.Now().Add(time.Minute)
	if status, body := get("/v1/me/balance", mint(key, "user_a", "https://app.example.com", soon)); status != 200 || !contains(body, `"user":"user_a"`) {
		t.Errorf("own balance: %d %s", status, body)
	}
	if status, body := get("/v1/me/entries", mint(key, "user_a", "https://app.example.com", soon)); status != 200 || !contains(body, `"kind":"signup"`) {
		t.Errorf("own entries: %d %s", status, body)
	}
	for name, tok := range map[string]string{
		"another frontend":  mint(key, "user_a", "https://evil.example.com", soon),
		"expired":           mint(key, "user_a", "https://app.example.com", time.Now().Add(-time.Minute)),
		"another key":       mint(other, "user_a", "https://app.example.com", soon),
		"not a JWT":         "abc",
		"an API key":        appKey,
		"a user id as path": mint(key, "../users/user_b", "https://app.example.com", soon),
	} {
		if status, body := get("/v1/me/balance", tok); status != 401 {
			t.Errorf("%s: %d %s, want 401", name, status, body)
		}
	}
	// Session tokens open only /v1/me/…: not another user's balance.
	if status, _ := get("/v1/users/user_a/balance", mint(key, "user_a", "https://app.example.com", soon)); status != 401 {
		t.Errorf("a session token on /v1/users/…: %d, want 401", status)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
