package clerkfake

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// apiError is the body of every Clerk Backend API error. clerk-sdk-go only
// turns a response into *clerk.APIErrorResponse when "errors" is a non-null
// array; anything else it returns as errors.New(body), losing the status.
type apiError struct {
	Errors  []apiErrorItem `json:"errors"`
	TraceID string         `json:"clerk_trace_id,omitempty"`
}

type apiErrorItem struct {
	Message     string         `json:"message"`
	LongMessage string         `json:"long_message"`
	Code        string         `json:"code"`
	Meta        map[string]any `json:"meta,omitempty"`
}

// writeError answers a Clerk-shaped error. The trace id is the one serveAPI
// put in the Clerk-Trace-Id header.
func writeError(w http.ResponseWriter, status int, item apiErrorItem) {
	writeJSON(w, status, apiError{Errors: []apiErrorItem{item}, TraceID: w.Header().Get("Clerk-Trace-Id")})
}

// writeParamError answers 422 for a bad query or body parameter, as Clerk
// does for form parameter errors.
func writeParamError(w http.ResponseWriter, code, param, longMessage string) {
	writeError(w, http.StatusUnprocessableEntity, apiErrorItem{
		Code:        code,
		Message:     "is invalid",
		LongMessage: longMessage,
		Meta:        map[string]any{"param_name": param},
	})
}

// writeFault answers an injected fault with the error Clerk would send for
// that status.
func writeFault(w http.ResponseWriter, f Fault) {
	status := f.Status
	if status == 0 {
		status = http.StatusInternalServerError
	}
	if f.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt(ceilSeconds(f.RetryAfter), 10))
	}
	writeError(w, status, errorText(status))
}

// errorText is Clerk's error (code and messages) for a status, as far as Clerk's
// error reference documents them.
func errorText(status int) apiErrorItem {
	switch {
	case status == http.StatusTooManyRequests:
		return apiErrorItem{Code: "too_many_requests", Message: "Too many requests", LongMessage: "Too many requests, retry later"}
	case status == http.StatusUnauthorized:
		return apiErrorItem{Code: "authentication_invalid", Message: "Invalid authentication",
			LongMessage: "Unable to authenticate the request, you need to supply an active API key"}
	case status == http.StatusNotFound:
		return notFound("Resource not found")
	case status >= 500:
		return apiErrorItem{Code: "internal_clerk_error", Message: "Oops, an unexpected error occurred",
			LongMessage: "There was an internal error on our servers. We've been notified and are working on fixing it."}
	}
	text := http.StatusText(status)
	if text == "" {
		text = "Status " + strconv.Itoa(status)
	}
	return apiErrorItem{Code: strings.ReplaceAll(strings.ToLower(text), " ", "_"), Message: text,
		LongMessage: text + " (injected by clerkfake)"}
}

// notFound is Clerk's 404 error, with a long message saying what is missing.
func notFound(longMessage string) apiErrorItem {
	return apiErrorItem{Code: "resource_not_found", Message: "not found", LongMessage: longMessage}
}

// ceilSeconds is d in whole seconds, rounded up, at least 1.
func ceilSeconds(d time.Duration) int64 {
	s := int64((d + time.Second - 1) / time.Second)
	return max(s, 1)
}
