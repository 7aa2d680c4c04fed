package creditsapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
)

// Audience is the audience a projected ServiceAccount token must be minted
// for (serviceAccountToken.audience in the client's Pod).
const Audience = "creditgate"

// TokenReviewer authenticates in-cluster callers by their projected
// ServiceAccount tokens: Kubernetes' own TokenReview (the API server checks
// the signature, expiry, audience and that the pod and ServiceAccount still
// exist), cached briefly, and the ServiceAccount mapped to scopes. It needs
// the system:auth-delegator ClusterRole (the chart binds it when this is on).
type TokenReviewer struct {
	// APIServer is the API server's base URL (https://host:port).
	APIServer string
	// Client reaches it (trusting the cluster's CA).
	Client *http.Client
	// Token returns this pod's own ServiceAccount token, the reviewer's
	// credentials (re-read on every review: kubelet rotates it).
	Token func() (string, error)
	// Scopes maps namespace/serviceaccount to its scopes; a ServiceAccount
	// not here authenticates but holds none (403).
	Scopes map[string][]string
	// TTL is how long a review is trusted; 0 means 30s.
	TTL time.Duration

	mu    sync.Mutex
	cache map[[sha256.Size]byte]review
}

type review struct {
	caller Caller
	err    error
	until  time.Time
}

var saRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-.a-z0-9]*[a-z0-9])?$`)

// ParseServiceAccounts reads CREDITS_API_SERVICE_ACCOUNTS: entries
// namespace/serviceaccount:scopes (scopes joined with +) separated by spaces
// or commas.
func ParseServiceAccounts(v string) (map[string][]string, error) {
	fields := strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
	out := map[string][]string{}
	for i, f := range fields {
		sa, scopes, ok := strings.Cut(f, ":")
		if !ok || !saRE.MatchString(sa) {
			return nil, fmt.Errorf("entry %d of %d is not namespace/serviceaccount:scopes", i+1, len(fields))
		}
		for _, s := range strings.Split(scopes, "+") {
			if !slices.Contains([]string{ScopeRead, ScopeSpend, ScopeGrant, ScopeAdmin}, s) {
				return nil, fmt.Errorf("entry %d of %d (%s): unknown scope %q (read, spend, grant, admin)", i+1, len(fields), sa, s)
			}
			out[sa] = append(out[sa], s)
		}
	}
	return out, nil
}

// InClusterReviewer returns a TokenReviewer for the cluster the process runs
// in: the API server at host:port (KUBERNETES_SERVICE_HOST and _PORT, read by
// the caller), the mounted CA and token.
func InClusterReviewer(host, port string, scopes map[string][]string) (*TokenReviewer, error) {
	const dir = "/var/run/secrets/kubernetes.io/serviceaccount/"
	if host == "" || port == "" {
		return nil, errors.New("not in a Kubernetes cluster (KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT unset)")
	}
	ca, err := os.ReadFile(dir + "ca.crt")
	if err != nil {
		return nil, fmt.Errorf("read the cluster CA (is the ServiceAccount token mounted?): %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, errors.New("the cluster CA holds no certificate")
	}
	return &TokenReviewer{
		APIServer: "https://" + strings.Trim(host, "[]") + ":" + port,
		Client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		}},
		Token: func() (string, error) {
			b, err := os.ReadFile(dir + "token")
			return strings.TrimSpace(string(b)), err
		},
		Scopes: scopes,
	}, nil
}

// Review authenticates token, from the cache while a review is fresh.
func (t *TokenReviewer) Review(ctx context.Context, token string) (Caller, error) {
	key := sha256.Sum256([]byte(token))
	now := time.Now()
	t.mu.Lock()
	if r, ok := t.cache[key]; ok && now.Before(r.until) {
		t.mu.Unlock()
		return r.caller, r.err
	}
	t.mu.Unlock()

	c, err := t.review(ctx, token)
	if errors.Is(err, errReviewUnavailable) {
		return c, err // not cached: the next request asks again
	}
	ttl := t.TTL
	if ttl <= 0 {
		ttl = 30 * time.Second
	}
	t.mu.Lock()
	if t.cache == nil || len(t.cache) > 10000 {
		t.cache = map[[sha256.Size]byte]review{}
	}
	t.cache[key] = review{caller: c, err: err, until: now.Add(ttl)}
	t.mu.Unlock()
	return c, err
}

var errReviewUnavailable = errors.New("the Kubernetes API server could not review the token")

func (t *TokenReviewer) review(ctx context.Context, token string) (Caller, error) {
	self, err := t.Token()
	if err != nil {
		return Caller{}, fmt.Errorf("%w: read own token: %v", errReviewUnavailable, err)
	}
	body, _ := json.Marshal(map[string]any{
		"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
		"spec": map[string]any{"token": token, "audiences": []string{Audience}},
	})
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.APIServer+"/apis/authentication.k8s.io/v1/tokenreviews", bytes.NewReader(body))
	if err != nil {
		return Caller{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+self)
	resp, err := t.Client.Do(req)
	if err != nil {
		return Caller{}, fmt.Errorf("%w: %v", errReviewUnavailable, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return Caller{}, fmt.Errorf("%w: %s", errReviewUnavailable, resp.Status)
	}
	var out struct {
		Status struct {
			Authenticated bool     `json:"authenticated"`
			Audiences     []string `json:"audiences"`
			Error         string   `json:"error"`
			User          struct {
				Username string `json:"username"`
			} `json:"user"`
		} `json:"status"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return Caller{}, fmt.Errorf("%w: %v", errReviewUnavailable, err)
	}
	st := out.Status
	if !st.Authenticated || !slices.Contains(st.Audiences, Audience) {
		return Caller{}, errors.New("the bearer token is neither an API key nor a valid ServiceAccount token for audience " + Audience)
	}
	ns, name, ok := strings.Cut(strings.TrimPrefix(st.User.Username, "system:serviceaccount:"), ":")
	if !ok || !strings.HasPrefix(st.User.Username, "system:serviceaccount:") {
		return Caller{}, fmt.Errorf("the token is %s's, not a ServiceAccount's", st.User.Username)
	}
	sa := ns + "/" + name
	return Caller{Name: sa, Scopes: t.Scopes[sa]}, nil
}
