package webhook

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	svix "github.com/svix/svix-webhooks/go"
)

// Verification failure reasons; they are metric label values.
const (
	ReasonMissingHeaders   = "missing_headers"
	ReasonInvalidHeaders   = "invalid_headers"
	ReasonTimestampTooOld  = "timestamp_too_old"
	ReasonTimestampTooNew  = "timestamp_too_new"
	ReasonInvalidSignature = "invalid_signature"
)

// Tolerance is how far a svix-timestamp may be from now, either way.
const Tolerance = 5 * time.Minute

// maxSvixIDLen bounds the svix-id header; Svix's are ~30 bytes.
const maxSvixIDLen = 255

// VerifyError says why a delivery was not accepted as Svix-signed.
type VerifyError struct {
	Reason string
	Detail string
}

func (e *VerifyError) Error() string { return e.Detail }

// Verifier checks Svix signatures against one or more signing secrets, so an
// operator can rotate CLERK_WEBHOOK_SIGNING_SECRET without dropping deliveries.
type Verifier struct {
	hooks []*svix.Webhook
	now   func() time.Time
}

// ParseSecrets splits a CLERK_WEBHOOK_SIGNING_SECRET value holding one or more
// whsec_ secrets separated by spaces or commas.
func ParseSecrets(v string) ([]string, error) {
	fields := strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
	if len(fields) == 0 {
		return nil, errors.New("no secret given")
	}
	for i, f := range fields {
		if !strings.HasPrefix(f, "whsec_") {
			return nil, fmt.Errorf("secret %d of %d does not start with whsec_", i+1, len(fields))
		}
	}
	return fields, nil
}

// NewVerifier returns a Verifier accepting a signature made with any of secrets.
func NewVerifier(secrets []string) (*Verifier, error) {
	if len(secrets) == 0 {
		return nil, errors.New("no signing secret")
	}
	v := &Verifier{now: time.Now}
	for i, s := range secrets {
		if !strings.HasPrefix(s, "whsec_") {
			return nil, fmt.Errorf("secret %d of %d does not start with whsec_", i+1, len(secrets))
		}
		wh, err := svix.NewWebhook(s)
		if err != nil {
			// Never echo the secret.
			return nil, fmt.Errorf("secret %d of %d is not valid base64 after whsec_", i+1, len(secrets))
		}
		v.hooks = append(v.hooks, wh)
	}
	return v, nil
}

// Verify checks the Svix headers and signature over the raw body. The header
// checks come first so that each failure has a precise reason; the signature
// itself is checked by svix-webhooks, which accepts any of several v1
// signatures in one header (Svix's own rotation).
func (v *Verifier) Verify(body []byte, h http.Header) error {
	id, ts, sig := h.Get("svix-id"), h.Get("svix-timestamp"), h.Get("svix-signature")
	var missing []string
	for _, p := range []struct{ name, v string }{{"svix-id", id}, {"svix-timestamp", ts}, {"svix-signature", sig}} {
		if p.v == "" {
			missing = append(missing, p.name)
		}
	}
	if len(missing) > 0 {
		return &VerifyError{ReasonMissingHeaders, "missing header(s): " + strings.Join(missing, ", ")}
	}
	if len(id) > maxSvixIDLen || strings.ContainsFunc(id, func(r rune) bool { return r <= ' ' || r > '~' }) {
		return &VerifyError{ReasonInvalidHeaders, "svix-id must be at most 255 printable ASCII characters"}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return &VerifyError{ReasonInvalidHeaders, "svix-timestamp is not a Unix timestamp"}
	}
	now := v.now()
	switch t := time.Unix(sec, 0); {
	case now.Sub(t) > Tolerance:
		return &VerifyError{ReasonTimestampTooOld, "svix-timestamp is more than 5 minutes old"}
	case t.Sub(now) > Tolerance:
		return &VerifyError{ReasonTimestampTooNew, "svix-timestamp is more than 5 minutes in the future"}
	}
	// Only the svix-* headers: svix-webhooks would fall back to webhook-*.
	hdr := http.Header{}
	hdr.Set("svix-id", id)
	hdr.Set("svix-timestamp", ts)
	hdr.Set("svix-signature", sig)
	for _, wh := range v.hooks {
		// The timestamp was checked above, with a precise reason.
		if wh.VerifyIgnoringTimestamp(body, hdr) == nil {
			return nil
		}
	}
	return &VerifyError{ReasonInvalidSignature, "no signature matches a configured signing secret"}
}
