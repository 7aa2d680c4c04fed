package clerkfake

import (
	"encoding/json"
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
	var bad bool
	intParam := func(name, long string, valid func(int64) bool) (int64, bool) {
		s := v.Get(name)
		if s == "" || bad {
			return 0, false
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || !valid(n) {
			writeParamError(w, "form_param_value_invalid", name, long)
			bad = true
			return 0, false
		}
		return n, true
	}
	anyValue := func(int64) bool { return true }
	if n, ok := intParam("created_at_after", "created_at_after must be unix milliseconds", anyValue); ok {
		q.createdAfter = &n
	}
	if n, ok := intParam("created_at_before", "created_at_before must be unix milliseconds", anyValue); ok {
		q.createdBefore = &n
	}
	q.limit = defaultLimit
	if n, ok := intParam("limit", "limit must be between 1 and 500", func(n int64) bool { return n >= 1 && n <= maxLimit }); ok {
		q.limit = int(n)
	}
	if n, ok := intParam("offset", "offset must be 0 or more", func(n int64) bool { return n >= 0 }); ok {
		q.offset = int(n)
	}
	if bad {
		return q, false
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

// filtered returns the users passing q's filters, in q's order, unpaged.
// s.mu held.
func (s *Server) filtered(q listQuery) []*User {
	var out []*User
	for _, u := range s.users {
		if q.matches(u) {
			out = append(out, u)
		}
	}
	key := func(u *User) time.Time {
		if q.orderField == "updated_at" {
			return u.UpdatedAt
		}
		return u.CreatedAt
	}
	// Ties are broken by id so that paging is stable.
	slices.SortFunc(out, func(a, b *User) int {
		c := key(a).Compare(key(b))
		if c == 0 {
			c = strings.Compare(a.ID, b.ID)
		}
		if q.descending {
			return -c
		}
		return c
	})
	return out
}

// handleListUsers answers GET /v1/users with a bare JSON array, as Clerk does.
// clerk-sdk-go v2.4.2's user.List decodes that array and then calls
// GET /v1/users/count with the same parameters to fill UserList.TotalCount;
// it does not expect the {"data":[…],"total_count":N} envelope that most other
// Clerk list endpoints use.
func (s *Server) handleListUsers(w http.ResponseWriter, r *http.Request) {
	q, ok := parseListQuery(w, r.URL.Query())
	if !ok {
		return
	}
	s.mu.Lock()
	all := s.filtered(q)
	page := []clerkevent.User{}
	for i := q.offset; i < len(all) && len(page) < q.limit; i++ {
		page = append(page, render(all[i]))
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, page)
}

// handleCountUsers answers GET /v1/users/count. clerk-sdk-go sends it the
// list's limit, offset and order_by too; like Clerk, the count ignores them.
func (s *Server) handleCountUsers(w http.ResponseWriter, r *http.Request) {
	q, ok := parseListQuery(w, r.URL.Query())
	if !ok {
		return
	}
	s.mu.Lock()
	n := len(s.filtered(q))
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"object": "total_count", "total_count": n})
}

// handleGetUser answers GET /v1/users/{id}.
func (s *Server) handleGetUser(w http.ResponseWriter, r *http.Request) {
	a, ok := s.rendered(r.PathValue("id"))
	if !ok {
		writeUserNotFound(w)
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

// metadataPatch is the body of PATCH /v1/users/{id}/metadata. A field that is
// absent or null leaves that metadata alone.
type metadataPatch struct {
	PublicMetadata  json.RawMessage `json:"public_metadata"`
	PrivateMetadata json.RawMessage `json:"private_metadata"`
	UnsafeMetadata  json.RawMessage `json:"unsafe_metadata"`
}

// handleUpdateMetadata answers PATCH /v1/users/{id}/metadata: a deep merge of
// each given metadata into the user's, answered with the updated user.
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

	var body metadataPatch
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		writeError(w, http.StatusBadRequest, "malformed_request", "malformed request",
			"The request body is not valid JSON: "+err.Error())
		return
	}
	patches := make([]map[string]any, 3)
	for i, f := range []struct {
		name string
		raw  json.RawMessage
	}{
		{"public_metadata", body.PublicMetadata},
		{"private_metadata", body.PrivateMetadata},
		{"unsafe_metadata", body.UnsafeMetadata},
	} {
		if len(f.raw) == 0 || string(f.raw) == "null" {
			continue
		}
		if err := json.Unmarshal(f.raw, &patches[i]); err != nil {
			writeParamError(w, "form_param_format_invalid", f.name, f.name+" must be a JSON object")
			return
		}
	}

	s.mu.Lock()
	u, ok := s.users[id]
	var a clerkevent.User
	if ok {
		for i, dst := range []map[string]any{u.PublicMetadata, u.PrivateMetadata, u.UnsafeMetadata} {
			if patches[i] != nil {
				mergeMetadata(dst, patches[i])
			}
		}
		u.UpdatedAt = toMillis(now)
		a = render(u)
	}
	s.mu.Unlock()
	if !ok {
		writeUserNotFound(w)
		return
	}
	writeJSON(w, http.StatusOK, a)
}

func writeUserNotFound(w http.ResponseWriter) {
	writeError(w, http.StatusNotFound, "resource_not_found", "not found", "User not found")
}

// handleNoEndpoint answers everything the fake does not implement.
func handleNoEndpoint(w http.ResponseWriter, r *http.Request) {
	long := "clerkfake does not implement " + r.Method + " " + r.URL.Path
	if !strings.HasPrefix(r.URL.Path, "/v1/") {
		long += " (the Backend API is under /v1: set BackendConfig.URL to <fake base>/v1)"
	}
	writeError(w, http.StatusNotFound, "resource_not_found", "not found", long)
}
