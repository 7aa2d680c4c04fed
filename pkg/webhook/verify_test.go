package webhook_test

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	svix "github.com/svix/svix-webhooks/go"

	"github.com/creditgate/creditgate/pkg/webhook"

	"github.com/creditgate/creditgate/pkg/webhook/svixsender"
)

// Signing secrets as Clerk shows them: whsec_ and the base64 of the key.
var (
	secretA       = "whsec_" + base64.StdEncoding.EncodeToString([]byte("creditgate test secret A 32 byte"))
	secretB       = "whsec_" + base64.StdEncoding.EncodeToString([]byte("creditgate test secret B 32 byte"))
	secretUnknown = "whsec_" + base64.StdEncoding.EncodeToString([]byte("somebody else's secret, 32 bytes"))
)

// signature returns Svix's "v1,<base64>" signature of body, made by the
// svix-webhooks library exactly as Svix makes it (through the project's
// sender kit).
func signature(t testing.TB, secret, svixID string, ts time.Time, body []byte) string {
	t.Helper()
	return signed(t, secret, svixID, ts, body).Get("svix-signature")
}

// signed returns the svix-* headers of a delivery of body signed with secret
// at ts.
func signed(t testing.TB, secret, svixID string, ts time.Time, body []byte) http.Header {
	t.Helper()
	h, err := svixsender.Sign(secret, svixsender.Message{ID: svixID, Body: body}, ts)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return h
}

func TestParseSecrets(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		value   string
		want    []string
		wantErr string
	}{
		{name: "one", value: secretA, want: []string{secretA}},
		{name: "space separated", value: secretA + " " + secretB, want: []string{secretA, secretB}},
		{name: "comma separated", value: secretA + "," + secretB, want: []string{secretA, secretB}},
		{name: "comma and spaces", value: " " + secretA + " ,  " + secretB + ",", want: []string{secretA, secretB}},
		{name: "newline and tab", value: secretA + "\n\t" + secretB + "\n", want: []string{secretA, secretB}},
		{name: "empty", value: "", wantErr: "no secret given"},
		{name: "only separators", value: " , \n", wantErr: "no secret given"},
		{name: "no prefix", value: "c2VjcmV0", wantErr: "secret 1 of 1 does not start with whsec_"},
		{name: "second without prefix", value: secretA + " c2VjcmV0", wantErr: "secret 2 of 2 does not start with whsec_"},
		{name: "other prefix", value: "wh_" + strings.TrimPrefix(secretA, "whsec_"), wantErr: "does not start with whsec_"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := webhook.ParseSecrets(tt.value)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseSecrets(%q) = %v, %v; want error containing %q", tt.value, got, err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "c2VjcmV0") {
					t.Errorf("error %q echoes the secret", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSecrets(%q): %v", tt.value, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseSecrets(%q) (-want +got):\n%s", tt.value, diff)
			}
		})
	}
}

func TestNewVerifierRefusesBadSecrets(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		secrets []string
		wantErr string
	}{
		{"none", nil, "no signing secret"},
		{"no prefix", []string{secretA, "c2VjcmV0"}, "secret 2 of 2 does not start with whsec_"},
		{"not base64", []string{"whsec_not*base64!"}, "secret 1 of 1 is not valid base64 after whsec_"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v, err := webhook.NewVerifier(tt.secrets)
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("NewVerifier = %v, %v; want error %q", v, err, tt.wantErr)
			}
			for _, s := range tt.secrets {
				if strings.Contains(err.Error(), strings.TrimPrefix(s, "whsec_")) {
					t.Errorf("error %q echoes a secret", err)
				}
			}
		})
	}
}

func TestVerify(t *testing.T) {
	t.Parallel()
	body := []byte(`{"type":"user.created","data":{"id":"user_1"}}`)
	const id = "msg_verify"
	now := time.Now()
	good := signature(t, secretA, id, now, body)
	ts := strconv.FormatInt(now.Unix(), 10)
	headers := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}

	tests := []struct {
		name       string
		secrets    []string
		body       []byte
		header     http.Header
		wantReason string // "" means verified
	}{
		{
			name:    "valid",
			secrets: []string{secretA},
			header:  headers("svix-id", id, "svix-timestamp", ts, "svix-signature", good),
		},
		{
			name:    "our rotation: signed with the first of two secrets",
			secrets: []string{secretA, secretB},
			header:  headers("svix-id", id, "svix-timestamp", ts, "svix-signature", good),
		},
		{
			name:    "our rotation: signed with the second of two secrets",
			secrets: []string{secretB, secretA},
			header:  headers("svix-id", id, "svix-timestamp", ts, "svix-signature", good),
		},
		{
			name:    "svix rotation: only the second of two signatures is valid",
			secrets: []string{secretA},
			header: headers("svix-id", id, "svix-timestamp", ts,
				"svix-signature", signature(t, secretUnknown, id, now, body)+" "+good),
		},
		{
			name:    "svix rotation: unknown version before a valid v1",
			secrets: []string{secretA},
			header: headers("svix-id", id, "svix-timestamp", ts,
				"svix-signature", "v1a,"+strings.TrimPrefix(good, "v1,")+" "+good),
		},
		{
			name:    "timestamp 4 minutes old",
			secrets: []string{secretA},
			header: headers("svix-id", id, "svix-timestamp", strconv.FormatInt(now.Add(-4*time.Minute).Unix(), 10),
				"svix-signature", signature(t, secretA, id, now.Add(-4*time.Minute), body)),
		},
		{
			name:       "missing svix-id",
			secrets:    []string{secretA},
			header:     headers("svix-timestamp", ts, "svix-signature", good),
			wantReason: webhook.ReasonMissingHeaders,
		},
		{
			name:       "missing svix-timestamp",
			secrets:    []string{secretA},
			header:     headers("svix-id", id, "svix-signature", good),
			wantReason: webhook.ReasonMissingHeaders,
		},
		{
			name:       "missing svix-signature",
			secrets:    []string{secretA},
			header:     headers("svix-id", id, "svix-timestamp", ts),
			wantReason: webhook.ReasonMissingHeaders,
		},
		{
			// svix-webhooks falls back to these; the receiver must not.
			name:       "only webhook-* headers",
			secrets:    []string{secretA},
			header:     headers("webhook-id", id, "webhook-timestamp", ts, "webhook-signature", good),
			wantReason: webhook.ReasonMissingHeaders,
		},
		{
			name:       "svix-id with a space",
			secrets:    []string{secretA},
			header:     headers("svix-id", "msg verify", "svix-timestamp", ts, "svix-signature", good),
			wantReason: webhook.ReasonInvalidHeaders,
		},
		{
			name:       "svix-id too long",
			secrets:    []string{secretA},
			header:     headers("svix-id", strings.Repeat("m", 256), "svix-timestamp", ts, "svix-signature", good),
			wantReason: webhook.ReasonInvalidHeaders,
		},
		{
			name:       "timestamp not a number",
			secrets:    []string{secretA},
			header:     headers("svix-id", id, "svix-timestamp", now.Format(time.RFC3339), "svix-signature", good),
			wantReason: webhook.ReasonInvalidHeaders,
		},
		{
			name:    "timestamp 6 minutes old",
			secrets: []string{secretA},
			header: headers("svix-id", id, "svix-timestamp", strconv.FormatInt(now.Add(-6*time.Minute).Unix(), 10),
				"svix-signature", signature(t, secretA, id, now.Add(-6*time.Minute), body)),
			wantReason: webhook.ReasonTimestampTooOld,
		},
		{
			name:    "timestamp 6 minutes in the future",
			secrets: []string{secretA},
			header: headers("svix-id", id, "svix-timestamp", strconv.FormatInt(now.Add(6*time.Minute).Unix(), 10),
				"svix-signature", signature(t, secretA, id, now.Add(6*time.Minute), body)),
			wantReason: webhook.ReasonTimestampTooNew,
		},
		{
			name:       "signed with another secret",
			secrets:    []string{secretA, secretB},
			header:     headers("svix-id", id, "svix-timestamp", ts, "svix-signature", signature(t, secretUnknown, id, now, body)),
			wantReason: webhook.ReasonInvalidSignature,
		},
		{
			name:       "body changed after signing",
			secrets:    []string{secretA},
			body:       []byte(`{"type":"user.created","data":{"id":"user_2"}}`),
			header:     headers("svix-id", id, "svix-timestamp", ts, "svix-signature", good),
			wantReason: webhook.ReasonInvalidSignature,
		},
		{
			name:       "svix-id changed after signing",
			secrets:    []string{secretA},
			header:     headers("svix-id", "msg_other", "svix-timestamp", ts, "svix-signature", good),
			wantReason: webhook.ReasonInvalidSignature,
		},
		{
			name:       "timestamp changed after signing",
			secrets:    []string{secretA},
			header:     headers("svix-id", id, "svix-timestamp", strconv.FormatInt(now.Unix()-1, 10), "svix-signature", good),
			wantReason: webhook.ReasonInvalidSignature,
		},
		{
			name:       "signature without version",
			secrets:    []string{secretA},
			header:     headers("svix-id", id, "svix-timestamp", ts, "svix-signature", strings.TrimPrefix(good, "v1,")),
			wantReason: webhook.ReasonInvalidSignature,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v, err := webhook.NewVerifier(tt.secrets)
			if err != nil {
				t.Fatal(err)
			}
			b := body
			if tt.body != nil {
				b = tt.body
			}
			err = v.Verify(b, tt.header)
			if tt.wantReason == "" {
				if err != nil {
					t.Fatalf("Verify = %v, want nil", err)
				}
				return
			}
			var ve *webhook.VerifyError
			if !errors.As(err, &ve) {
				t.Fatalf("Verify = %v, want a *VerifyError with reason %q", err, tt.wantReason)
			}
			if ve.Reason != tt.wantReason {
				t.Errorf("Verify reason = %q (%v), want %q", ve.Reason, err, tt.wantReason)
			}
		})
	}
}

// FuzzVerifyAgreesWithSvix: the verifier computes Svix's v1 HMAC itself
// (svix-webhooks' Verify copies every body three to four times); for any
// body, id, timestamp and signature header, both must agree.
func FuzzVerifyAgreesWithSvix(f *testing.F) {
	now := time.Now()
	good := func(body string) string {
		wh, _ := svix.NewWebhook(secretA)
		s, _ := wh.Sign("msg_1", now, []byte(body))
		return s
	}
	f.Add([]byte(`{"type":"user.created"}`), "msg_1", int64(0), good(`{"type":"user.created"}`))
	f.Add([]byte(`{}`), "msg_1", int64(0), "v1,bad v2,x "+good(`{}`))
	f.Add([]byte(`{}`), "msg_1", int64(0), good(`{}`)+" v1,"+strings.Repeat("A", 43)+"=")
	f.Add([]byte(""), "msg_1", int64(0), "v1a,"+strings.TrimPrefix(good(""), "v1,"))
	f.Add([]byte("x"), "msg_2", int64(0), good("x"))
	f.Add([]byte("x"), "msg_1", int64(1), good("x"))
	f.Add([]byte("x"), "msg_1", int64(0), strings.Replace(good("x"), "=", "", 1))
	f.Add([]byte("x"), "msg_1", int64(0), good("x")+"  ")
	f.Fuzz(func(t *testing.T, body []byte, id string, skew int64, sig string) {
		v, err := webhook.NewVerifier([]string{secretA, secretB})
		if err != nil {
			t.Fatal(err)
		}
		ts := now.Add(time.Duration(skew%120) * time.Second)
		h := http.Header{}
		h.Set("svix-id", id)
		h.Set("svix-timestamp", strconv.FormatInt(ts.Unix(), 10))
		h.Set("svix-signature", sig)
		sh, err := v.CheckHeaders(h)
		if err != nil {
			return // refused before the signature: no comparison to make
		}
		ours := v.VerifySignature(body, sh) == nil
		theirs := false
		for _, s := range []string{secretA, secretB} {
			wh, _ := svix.NewWebhook(s)
			theirs = theirs || wh.VerifyIgnoringTimestamp(body, h) == nil
		}
		if ours != theirs {
			t.Fatalf("verifier says %v, svix-webhooks says %v (id %q, signature %q)", ours, theirs, id, sig)
		}
	})
}
