package clerkfake

import "net/http"

// apiRoutes lists the Backend API endpoints the fake implements. Anything
// else under the server gets a Clerk-shaped 404 naming the request, so a
// client calling an endpoint the fake lacks fails loudly.
func (s *Server) apiRoutes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/users", s.handleListUsers)
	mux.HandleFunc("GET /v1/users/count", s.handleCountUsers)
	mux.HandleFunc("GET /v1/users/{id}", s.handleGetUser)
	mux.HandleFunc("PATCH /v1/users/{id}/metadata", s.handleUpdateMetadata)
	mux.HandleFunc("GET /v1/jwks", s.handleJWKS)
	mux.HandleFunc("/", handleNoEndpoint)
	return mux
}

// adminRoutes lists the admin API that lets another process drive the fake.
// It needs no key and its requests are not recorded as calls.
func (s *Server) adminRoutes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_fake/healthz", handleHealthz)
	mux.HandleFunc("GET /_fake/users", s.handleAdminListUsers)
	mux.HandleFunc("POST /_fake/users", s.handleAdminAddUsers)
	mux.HandleFunc("GET /_fake/users/{id}", s.handleAdminGetUser)
	mux.HandleFunc("DELETE /_fake/users/{id}", s.handleAdminDeleteUser)
	mux.HandleFunc("POST /_fake/faults", s.handleAdminFaults)
	mux.HandleFunc("GET /_fake/calls", s.handleAdminCalls)
	mux.HandleFunc("GET /_fake/rate_limit", s.handleAdminGetRateLimit)
	mux.HandleFunc("PUT /_fake/rate_limit", s.handleAdminSetRateLimit)
	mux.HandleFunc("POST /_fake/reset", s.handleAdminReset)
	mux.HandleFunc("/_fake/", func(w http.ResponseWriter, r *http.Request) {
		writeAdminError(w, http.StatusNotFound, "no admin endpoint "+r.Method+" "+r.URL.Path)
	})
	return mux
}
