package clerkfake

import (
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"time"
)

// AdminCall is one Call as GET /_fake/calls lists it. The body is text, as
// the Backend API only takes JSON.
type AdminCall struct {
	Method string    `json:"method"`
	Path   string    `json:"path"`
	Query  string    `json:"query,omitempty"`
	Body   string    `json:"body,omitempty"`
	Status int       `json:"status"`
	At     time.Time `json:"at"`
}

// AdminRateLimit is the body of PUT /_fake/rate_limit and, with Violations,
// the answer of GET /_fake/rate_limit.
type AdminRateLimit struct {
	Limit         int     `json:"limit"`
	WindowSeconds float64 `json:"window_seconds"`
	Violations    int     `json:"violations"`
}

// handleAdminAddUsers takes a JSON array of users and stores them.
func (s *Server) handleAdminAddUsers(w http.ResponseWriter, r *http.Request) {
	var in []struct {
		ID              string         `json:"id"`
		Email           string         `json:"email"`
		CreatedAt       int64          `json:"created_at"` // unix ms; 0 means now
		UpdatedAt       int64          `json:"updated_at"` // unix ms; 0 means created_at
		PublicMetadata  map[string]any `json:"public_metadata"`
		PrivateMetadata map[string]any `json:"private_metadata"`
		UnsafeMetadata  map[string]any `json:"unsafe_metadata"`
	}
	if !decodeAdmin(w, r, &in) {
		return
	}
	users := make([]User, len(in))
	for i, a := range in {
		users[i] = User{ID: a.ID, Email: a.Email,
			PublicMetadata: a.PublicMetadata, PrivateMetadata: a.PrivateMetadata, UnsafeMetadata: a.UnsafeMetadata}
		if a.CreatedAt != 0 {
			users[i].CreatedAt = time.UnixMilli(a.CreatedAt)
		}
		if a.UpdatedAt != 0 {
			users[i].UpdatedAt = time.UnixMilli(a.UpdatedAt)
		}
	}
	if err := s.addUsers(users); err != nil {
		writeAdminError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"added": len(users)})
}

// handleAdminListUsers answers every stored user in Clerk's shape, oldest
// first.
func (s *Server) handleAdminListUsers(w http.ResponseWriter, _ *http.Request) {
	all, _ := s.list(listQuery{orderField: "created_at", limit: math.MaxInt})
	writeJSON(w, http.StatusOK, all)
}

func (s *Server) handleAdminDeleteUser(w http.ResponseWriter, r *http.Request) {
	if !s.DeleteUser(r.PathValue("id")) {
		writeAdminError(w, http.StatusNotFound, "no user "+r.PathValue("id"))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleAdminFaults is FailNext over HTTP.
func (s *Server) handleAdminFaults(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Match  string `json:"match"`
		Faults []struct {
			Status            int     `json:"status"`
			RetryAfterSeconds float64 `json:"retry_after_seconds"`
		} `json:"faults"`
	}
	if !decodeAdmin(w, r, &in) {
		return
	}
	faults := make([]Fault, len(in.Faults))
	for i, f := range in.Faults {
		if f.Status != 0 && (f.Status < 100 || f.Status > 599) || f.RetryAfterSeconds < 0 {
			writeAdminError(w, http.StatusBadRequest, "fault "+strconv.Itoa(i)+": bad status or retry_after_seconds")
			return
		}
		faults[i] = Fault{Status: f.Status, RetryAfter: seconds(f.RetryAfterSeconds)}
	}
	s.FailNext(in.Match, faults...)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleAdminCalls(w http.ResponseWriter, _ *http.Request) {
	out := []AdminCall{}
	for _, c := range s.Calls() {
		out = append(out, AdminCall{Method: c.Method, Path: c.Path, Query: c.Query, Body: string(c.Body), Status: c.Status, At: c.At})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleAdminGetRateLimit(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	out := AdminRateLimit{Limit: s.rateLimit, WindowSeconds: s.ratePer.Seconds(), Violations: s.violations}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

// handleAdminSetRateLimit is SetRateLimit over HTTP; limit 0 turns it off.
func (s *Server) handleAdminSetRateLimit(w http.ResponseWriter, r *http.Request) {
	var in AdminRateLimit
	if !decodeAdmin(w, r, &in) {
		return
	}
	if in.Limit > 0 && in.WindowSeconds <= 0 {
		writeAdminError(w, http.StatusBadRequest, "window_seconds must be positive")
		return
	}
	s.SetRateLimit(in.Limit, seconds(in.WindowSeconds))
	w.WriteHeader(http.StatusNoContent)
}

// decodeAdmin decodes a JSON body strictly: a typo in a test's request should
// fail, not be ignored. A 400 has been written when it returns false.
func decodeAdmin(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeAdminError(w, http.StatusBadRequest, "decode body: "+err.Error())
		return false
	}
	return true
}

func writeAdminError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func seconds(f float64) time.Duration {
	return time.Duration(math.Round(f * float64(time.Second)))
}
