package clerkfake

import (
	"cmp"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/creditgate/creditgate/pkg/clerk/clerkevent"
)

// Clerk's paging bounds for GET /v1/users.
const (
	defaultLimit = 10
	maxLimit     = 500
)

// listQuery is the parsed query of GET /v1/users and GET /v1/users/count.
type listQuery struct {
	createdAfter  *int64 // unix ms, exclusive
	createdBefore *int64 // unix ms, exclusive
	userIDs       []string
	emails        []string
	limit, offset int
	orderField    string // "created_at" or "updated_at"
	descending    bool
}

// supportedParams are the query parameters the fake understands. Clerk has
// many more filters (query, username, last_active_at_*, …); the fake refuses
// them rather than ignore them and answer with users they would have excluded.
var supportedParams = []string{
	"created_at_after", "created_at_before", "user_id", "email_address",
	"limit", "offset", "order_by",
}

// parseListQuery reads the filters and paging of a users list. A 422 has been
// written when ok is false.
func parseListQuery(w http.ResponseWriter, v url.Values) (q listQuery, ok bool) {
	for name := range v {
		if !slices.Contains(supportedParams, name) {
			writeParamError(w, "form_param_unknown", name,
				"clerkfake does not implement the users parameter "+strconv.Quote(name))
			return q, false
		}
	}
	q.limit = defaultLimit
	for _, p := range []struct {
		name, long string
		min, max   int64
		set        func(int64)
	}{
		{"created_at_after", "created_at_after must be unix milliseconds", math.MinInt64, math.MaxInt64, func(n int64) { q.createdAfter = &n }},
		{"created_at_before", "created_at_before must be unix milliseconds", math.MinInt64, math.MaxInt64, func(n int64) { q.createdBefore = &n }},
		{"limit", "limit must be between 1 and 500", 1, maxLimit, func(n int64) { q.limit = int(n) }},
		{"offset", "offset must be 0 or more", 0, math.MaxInt64, func(n int64) { q.offset = int(n) }},
	} {
		if s := v.Get(p.name); s != "" {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil || n < p.min || n > p.max {
				writeParamError(w, "form_param_value_invalid", p.name, p.long)
				return q, false
			}
			p.set(n)
		}
	}
	q.userIDs = v["user_id"]
	q.emails = v["email_address"]

	order := v.Get("order_by")
	if order == "" {
		order = "-created_at" // Clerk's default: newest first
	}
	// An unencoded '+' in a hand-written URL arrives as a space.
	if strings.HasPrefix(order, " ") {
		order = "+" + strings.TrimLeft(order, " ")
	}
	q.descending = strings.HasPrefix(order, "-")
	q.orderField = strings.TrimLeft(order, "+-")
	if q.orderField != "created_at" && q.orderField != "updated_at" {
		writeParamError(w, "form_param_value_invalid", "order_by",
			"clerkfake orders users by created_at or updated_at only, not "+strconv.Quote(order))
		return q, false
	}
	return q, true
}

// matches reports whether u passes the filters (not the paging).
func (q listQuery) matches(u *User) bool {
	created := u.CreatedAt.UnixMilli()
	if q.createdAfter != nil && created <= *q.createdAfter {
		return false
	}
	if q.createdBefore != nil && created >= *q.createdBefore {
		return false
	}
	if len(q.userIDs) > 0 && !slices.Contains(q.userIDs, u.ID) {
		return false
	}
	if len(q.emails) > 0 && (u.Email == "" || !slices.ContainsFunc(q.emails, func(e string) bool {
		return strings.EqualFold(e, u.Email)
	})) {
		return false
	}
	return true
}

// list renders the page of users that q asks for, in q's order, and counts
// every user passing q's filters.
func (s *Server) list(q listQuery) (page []clerkevent.User, total int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var all []*User
	for _, u := range s.users {
		if q.matches(u) {
			all = append(all, u)
		}
	}
	key := func(u *User) time.Time {
		if q.orderField == "updated_at" {
			return u.UpdatedAt
		}
		return u.CreatedAt
	}
	// Ties are broken by id so that paging is stable.
	slices.SortFunc(all, func(a, b *User) int {
		c := cmp.Or(key(a).Compare(key(b)), strings.Compare(a.ID, b.ID))
		if q.descending {
			return -c
		}
		return c
	})
	page = []clerkevent.User{}
	for i := q.offset; i < len(all) && len(page) < q.limit; i++ {
		page = append(page, render(all[i]))
	}
	return page, len(all)
}

// handleListUsers answers GET /v1/users with a bare JSON array, as Clerk does.
// clerk-sdk-go v2.4.2's user.List decodes that array and then calls
// GET /v1/users/count with the same parameters to fill UserList.TotalCount;
// it does not expect the {"data":[…],"total_count":N} envelope that most other
// Clerk list endpoints use.
func (s *Server) handleListUsers(w http.ResponseWriter, r *http.Request) {
	if q, ok := parseListQuery(w, r.URL.Query()); ok {
		page, _ := s.list(q)
		writeJSON(w, http.StatusOK, page)
	}
}

// handleCountUsers answers GET /v1/users/count. clerk-sdk-go sends it the
// list's limit, offset and order_by too; like Clerk, the count ignores them.
func (s *Server) handleCountUsers(w http.ResponseWriter, r *http.Request) {
	if q, ok := parseListQuery(w, r.URL.Query()); ok {
		_, n := s.list(q)
		writeJSON(w, http.StatusOK, map[string]any{"object": "total_count", "total_count": n})
	}
}

// handleGetUser answers GET /v1/users/{id}.
func (s *Server) handleGetUser(w http.ResponseWriter, r *http.Request) {
	a, ok := s.rendered(r.PathValue("id"))
	if !ok {
		writeError(w, http.StatusNotFound, notFound("User not found"))
		return
	}
	writeJSON(w, http.StatusOK, a)
}

// rendered returns the stored user id in Clerk's shape.
func (s *Server) rendered(id string) (clerkevent.User, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.users[id]
	if !ok {
		return clerkevent.User{}, false
	}
	return render(u), true
}

// handleUpdateMetadata answers PATCH /v1/users/{id}/metadata: a deep merge of
// each given metadata into the user's, answered with the updated user. A
// metadata that is absent or null is left alone.
func (s *Server) handleUpdateMetadata(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	now := s.now()

	s.mu.Lock()
	retry, allowed := s.allowWrite(id, now)
	s.mu.Unlock()
	if !allowed {
		writeFault(w, Fault{Status: http.StatusTooManyRequests, RetryAfter: retry})
		return
	}

	var patch struct {
		Public  map[string]any `json:"public_metadata"`
		Private map[string]any `json:"private_metadata"`
		Unsafe  map[string]any `json:"unsafe_metadata"`
	}
	if err := json.NewDecoder(r.Body).Decode(&patch); err != nil {
		// A metadata that is not an object, or holds a number out of range.
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			writeParamError(w, "form_param_format_invalid", typeErr.Field, typeErr.Field+" must be a JSON object")
			return
		}
		writeError(w, http.StatusBadRequest, apiErrorItem{Code: "malformed_request", Message: "malformed request",
			LongMessage: "The request body is not valid JSON: " + err.Error()})
		return
	}

	s.mu.Lock()
	u, ok := s.users[id]
	var a clerkevent.User
	if ok {
		mergeMetadata(u.PublicMetadata, patch.Public)
		mergeMetadata(u.PrivateMetadata, patch.Private)
		mergeMetadata(u.UnsafeMetadata, patch.Unsafe)
		u.UpdatedAt = toMillis(now)
		a = render(u)
	}
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, notFound("User not found"))
		return
	}
	writeJSON(w, http.StatusOK, a)
}

// handleNoEndpoint answers everything the fake does not implement.
func handleNoEndpoint(w http.ResponseWriter, r *http.Request) {
	long := "clerkfake does not implement " + r.Method + " " + r.URL.Path
	if !strings.HasPrefix(r.URL.Path, "/v1/") {
		long += " (the Backend API is under /v1: set BackendConfig.URL to <fake base>/v1)"
	}
	writeError(w, http.StatusNotFound, notFound(long))
}
