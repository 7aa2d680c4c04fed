package clerk

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	sdk "github.com/clerk/clerk-sdk-go/v2"
	"github.com/clerk/clerk-sdk-go/v2/jwks"
	"github.com/clerk/clerk-sdk-go/v2/jwt"

	"github.com/creditgate/creditgate/pkg/ledger"
)

// Sessions verifies Clerk session tokens, the JWTs a signed-in user's
// browser holds: signed with one of the instance's keys (its JWKS, fetched
// from the Backend API with the secret key and cached), not expired, issued
// by Clerk, and minted for one of the authorized parties (the origins of the
// application's frontend: a token for another site is refused).
type Sessions struct {
	jwks    *jwks.Client
	parties []string

	mu      sync.Mutex
	keys    map[string]*sdk.JSONWebKey
	fetched time.Time
}

// NewSessions returns a verifier using the Backend API at cfg.URL.
func NewSessions(cfg APIConfig, authorizedParties []string) (*Sessions, error) {
	if len(authorizedParties) == 0 {
		return nil, errors.New("no authorized party: name the frontend origins whose session tokens are accepted")
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 15 * time.Second}
	}
	return &Sessions{
		jwks: jwks.NewClient(&sdk.ClientConfig{BackendConfig: sdk.BackendConfig{
			HTTPClient: hc, URL: sdk.String(cfg.URL), Key: sdk.String(cfg.SecretKey),
		}}),
		parties: authorizedParties,
	}, nil
}

// ErrInvalidSession is a session token that does not verify.
var ErrInvalidSession = errors.New("invalid Clerk session token")

// Verify returns the Clerk user id of a valid session token.
func (s *Sessions) Verify(ctx context.Context, token string) (string, error) {
	u, err := jwt.Decode(ctx, &jwt.DecodeParams{Token: token})
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalidSession, err)
	}
	key, err := s.key(ctx, u.KeyID)
	if err != nil {
		return "", err
	}
	claims, err := jwt.Verify(ctx, &jwt.VerifyParams{
		Token: token, JWK: key, Leeway: 5 * time.Second,
		AuthorizedPartyHandler: func(azp string) bool { return slices.Contains(s.parties, azp) },
	})
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalidSession, err)
	}
	if claims.Subject == "" {
		return "", fmt.Errorf("%w: no subject", ErrInvalidSession)
	}
	return claims.Subject, nil
}

// key returns the instance's key kid, fetching the JWKS when it is unknown
// (Clerk rotates keys) at most once a minute, and at least hourly.
func (s *Sessions) key(ctx context.Context, kid string) (*sdk.JSONWebKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k, ok := s.keys[kid]; ok && time.Since(s.fetched) < time.Hour {
		return k, nil
	}
	if !s.fetched.IsZero() && time.Since(s.fetched) < time.Minute {
		if k, ok := s.keys[kid]; ok {
			return k, nil
		}
		return nil, fmt.Errorf("%w: unknown signing key %q", ErrInvalidSession, kid)
	}
	set, err := s.jwks.Get(ctx, &jwks.GetParams{})
	if err != nil {
		return nil, fmt.Errorf("fetch Clerk's signing keys: %w: %w", ledger.ErrUnavailable, err)
	}
	s.keys, s.fetched = map[string]*sdk.JSONWebKey{}, time.Now()
	for _, k := range set.Keys {
		if k != nil {
			s.keys[k.KeyID] = k
		}
	}
	if k, ok := s.keys[kid]; ok {
		return k, nil
	}
	return nil, fmt.Errorf("%w: unknown signing key %q", ErrInvalidSession, kid)
}
