package clerk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	sdk "github.com/clerk/clerk-sdk-go/v2"
	"github.com/clerk/clerk-sdk-go/v2/user"

	"github.com/creditgate/creditgate/pkg/ledger"
)

// APIConfig configures the Backend API client.
type APIConfig struct {
	// SecretKey is Clerk's sk_… key.
	SecretKey string
	// URL is the Backend API base, e.g. https://api.clerk.com/v1 (or a fake's).
	URL string
	// RequestsPerSecond bounds this process's calls (Clerk limits instances
	// globally); 0 means 20.
	RequestsPerSecond float64
	// MaxRetryAfter caps how long one 429 makes ListUsers wait; 0 means 60s.
	MaxRetryAfter time.Duration
	// HTTPClient is used for requests; nil means one with a 15s timeout.
	HTTPClient *http.Client
}

// API is creditgate's view of Clerk's Backend API, through clerk-sdk-go. It
// implements ledger.Directory and ledger.MetadataWriter.
type API struct {
	users   *user.Client
	pace    *pacer
	maxWait time.Duration
}

var (
	_ ledger.Directory      = (*API)(nil)
	_ ledger.MetadataWriter = (*API)(nil)
)

// NewAPI returns a client for the Backend API at cfg.URL.
func NewAPI(cfg APIConfig) *API {
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 15 * time.Second}
	}
	rps := cfg.RequestsPerSecond
	if rps <= 0 {
		rps = 20
	}
	maxWait := cfg.MaxRetryAfter
	if maxWait <= 0 {
		maxWait = time.Minute
	}
	return &API{
		users: user.NewClient(&sdk.ClientConfig{BackendConfig: sdk.BackendConfig{
			HTTPClient: hc, URL: sdk.String(cfg.URL), Key: sdk.String(cfg.SecretKey),
		}}),
		pace:    &pacer{interval: time.Duration(float64(time.Second) / rps)},
		maxWait: maxWait,
	}
}

// ListUsers implements ledger.Directory: users created strictly after
// createdAfter, oldest first. A 429 is waited out (its Retry-After, capped)
// and retried a few times before it is returned.
func (a *API) ListUsers(ctx context.Context, createdAfter time.Time, limit, offset int) ([]ledger.ClerkUser, error) {
	params := &user.ListParams{OrderBy: sdk.String("+created_at")}
	params.Limit = sdk.Int64(int64(limit))
	params.Offset = sdk.Int64(int64(offset))
	if !createdAfter.IsZero() {
		params.CreatedAtAfter = sdk.Int64(createdAfter.UnixMilli())
	}
	// GET /users directly: the SDK's List also asks /users/count for every
	// page, doubling the calls against Clerk's rate limit.
	var page userPage
	if err := a.getUsers(ctx, params, &page); err != nil {
		return nil, fmt.Errorf("list Clerk users after %s: %w", createdAfter.Format(time.RFC3339), err)
	}
	out := make([]ledger.ClerkUser, 0, len(page))
	for _, u := range page {
		if u != nil {
			out = append(out, fromSDK(u))
		}
	}
	return out, nil
}

// getUsers calls GET /users at this process's pace; a 429 is waited out
// (its Retry-After, capped) and retried a few times before it is returned.
func (a *API) getUsers(ctx context.Context, params *user.ListParams, page *userPage) error {
	for attempt := 1; ; attempt++ {
		if err := a.pace.wait(ctx); err != nil {
			return err
		}
		req := sdk.NewAPIRequest(http.MethodGet, "/users")
		req.SetParams(params)
		err := a.users.Backend.Call(ctx, req, page)
		if err == nil {
			return nil
		}
		err = a.classify(err)
		wait, limited := ledger.RetryAfter(err)
		if !limited || attempt == 5 {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(wait, a.maxWait)):
		}
	}
}

// ExistingUsers implements ledger.Directory: which of ids (at most 100) Clerk
// still has. A 429 is waited out and retried like ListUsers'.
func (a *API) ExistingUsers(ctx context.Context, ids []string) (map[string]bool, error) {
	params := &user.ListParams{UserIDs: ids}
	params.Limit = sdk.Int64(int64(len(ids)))
	var page userPage
	if err := a.getUsers(ctx, params, &page); err != nil {
		return nil, fmt.Errorf("look up %d Clerk users: %w", len(ids), err)
	}
	found := make(map[string]bool, len(page))
	for _, u := range page {
		if u != nil {
			found[u.ID] = true
		}
	}
	return found, nil
}

// User fetches one user; a user Clerk does not have is ledger.ErrNotFound.
func (a *API) User(ctx context.Context, id string) (ledger.ClerkUser, error) {
	if err := a.pace.wait(ctx); err != nil {
		return ledger.ClerkUser{}, err
	}
	u, err := a.users.Get(ctx, id)
	if err != nil {
		if apiErr, ok := errors.AsType[*sdk.APIErrorResponse](err); ok && apiErr.HTTPStatusCode == http.StatusNotFound {
			return ledger.ClerkUser{}, fmt.Errorf("user %s in Clerk: %w", id, ledger.ErrNotFound)
		}
		return ledger.ClerkUser{}, fmt.Errorf("get Clerk user %s: %w: %w", id, ledger.ErrUnavailable, a.classify(err))
	}
	return fromSDK(u), nil
}

// WriteMetadata implements ledger.MetadataWriter with Clerk's merge-PATCH of
// the user's metadata: the keys given are merged into what is there.
func (a *API) WriteMetadata(ctx context.Context, clerkUserID string, publicMetadata []byte) error {
	if err := a.pace.wait(ctx); err != nil {
		return err
	}
	raw := json.RawMessage(publicMetadata)
	_, err := a.users.UpdateMetadata(ctx, clerkUserID, &user.UpdateMetadataParams{PublicMetadata: &raw})
	if err != nil {
		return fmt.Errorf("update metadata of %s: %w", clerkUserID, a.classify(err))
	}
	return nil
}

// classify turns a 429 into ledger.RateLimitedError (and pauses this
// process's calls for its Retry-After, since Clerk's limits are shared), and
// an answer no retry can change into ledger.ErrPermanent: 404 and 410 (the
// user is gone, e.g. deleted in Clerk before the write), 400 and 422 (the
// request itself is refused). 401 and 403 are not permanent: a wrong or
// revoked CLERK_SECRET_KEY is fixed by the operator, and the writes must
// still be there then.
func (a *API) classify(err error) error {
	apiErr, ok := errors.AsType[*sdk.APIErrorResponse](err)
	if !ok {
		return err
	}
	switch apiErr.HTTPStatusCode {
	case http.StatusNotFound, http.StatusGone, http.StatusBadRequest, http.StatusUnprocessableEntity:
		return fmt.Errorf("%w: Clerk answered %d: %w", ledger.ErrPermanent, apiErr.HTTPStatusCode, err)
	case http.StatusTooManyRequests:
	default:
		return err
	}
	wait := time.Second
	if apiErr.Response != nil {
		if s, perr := strconv.Atoi(apiErr.Response.Header.Get("Retry-After")); perr == nil && s >= 0 {
			wait = time.Duration(s) * time.Second
		} else if t, perr := http.ParseTime(apiErr.Response.Header.Get("Retry-After")); perr == nil {
			wait = max(time.Until(t), 0)
		}
	}
	a.pace.pause(wait)
	return &ledger.RateLimitedError{RetryAfter: wait, Err: err}
}

// userPage is GET /users's answer: a bare JSON array of users.
type userPage []*sdk.User

// Read implements sdk.ResponseReader; the page keeps no response metadata.
func (*userPage) Read(*sdk.APIResponse) {}

func fromSDK(u *sdk.User) ledger.ClerkUser {
	cu := ledger.ClerkUser{ID: u.ID, CreatedAt: time.UnixMilli(u.CreatedAt).UTC()}
	if u.UpdatedAt > 0 {
		cu.UpdatedAt = time.UnixMilli(u.UpdatedAt).UTC()
	}
	if u.PrimaryEmailAddressID != nil {
		for _, e := range u.EmailAddresses {
			if e != nil && e.ID == *u.PrimaryEmailAddressID {
				cu.Email = e.EmailAddress
			}
		}
	}
	return cu
}

// pacer spaces calls at least interval apart and holds them all during a
// pause asked for by a 429.
type pacer struct {
	mu       sync.Mutex
	interval time.Duration
	next     time.Time
}

func (p *pacer) wait(ctx context.Context) error {
	p.mu.Lock()
	now := time.Now()
	slot := p.next
	if slot.Before(now) {
		slot = now
	}
	p.next = slot.Add(p.interval)
	p.mu.Unlock()
	d := time.Until(slot)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (p *pacer) pause(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if until := time.Now().Add(d); until.After(p.next) {
		p.next = until
	}
}
