package clerk_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/creditgate/creditgate/pkg/clerk"
	"github.com/creditgate/creditgate/pkg/ledger"
)

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeDocumentedPayloads(t *testing.T) {
	t.Parallel()
	tests := []struct {
		file string
		want ledger.Change
	}{
		{"user.created.json", ledger.Change{Kind: ledger.ChangeUserCreated, EventType: "user.created",
			ClerkUserID: "user_29w83sxmDNGwOuEthce5gg56FcC", Email: "example@example.org",
			UpdatedAt: time.UnixMilli(1654012591835).UTC()}},
		{"user.updated.json", ledger.Change{Kind: ledger.ChangeUserUpdated, EventType: "user.updated",
			ClerkUserID: "user_29w83sxmDNGwOuEthce5gg56FcC", Email: "example@example.org",
			UpdatedAt: time.UnixMilli(1654012824306).UTC()}},
		{"user.deleted.json", ledger.Change{Kind: ledger.ChangeUserDeleted, EventType: "user.deleted",
			ClerkUserID: "user_29wBMCtzATuFJut8jO2VNTVekS4"}},
	}
	for _, tt := range tests {
		got, err := clerk.Decode(readFixture(t, tt.file))
		if err != nil {
			t.Errorf("%s: %v", tt.file, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tt.file, diff)
		}
	}
}

func TestDecodePrimaryEmail(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, data, want string
	}{
		{"primary is second", `{"id":"user_1","email_addresses":[{"id":"a","email_address":"a@x"},{"id":"b","email_address":"b@x"}],"primary_email_address_id":"b"}`, "b@x"},
		{"no primary", `{"id":"user_1","email_addresses":[{"id":"a","email_address":"a@x"}],"primary_email_address_id":null}`, ""},
		{"primary not listed", `{"id":"user_1","email_addresses":[],"primary_email_address_id":"zz"}`, ""},
		{"phone only", `{"id":"user_1","phone_numbers":[{"id":"p","phone_number":"+1"}]}`, ""},
		{"escaped", `{"id":"user_1","email_addresses":[{"id":"a","email_address":"a\u0040x"}],"primary_email_address_id":"a"}`, "a@x"},
	}
	for _, tt := range tests {
		got, err := clerk.Decode([]byte(`{"type":"user.created","data":` + tt.data + `}`))
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if got.Email != tt.want {
			t.Errorf("%s: email = %q, want %q", tt.name, got.Email, tt.want)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body, reason string
	}{
		{"empty", ``, "not valid JSON"},
		{"array", `[1]`, "not a JSON object"},
		{"no type", `{"data":{"id":"user_1"}}`, `missing field "type"`},
		{"type number", `{"type":1,"data":{"id":"user_1"}}`, `"type" must be a string`},
		{"empty type", `{"type":"","data":{"id":"user_1"}}`, `"type" is empty`},
		{"no data", `{"type":"user.created"}`, `missing field "data"`},
		{"data string", `{"type":"user.created","data":"x"}`, `"data" must be an object`},
		{"no id", `{"type":"user.created","data":{}}`, `missing field "data.id"`},
		{"null id", `{"type":"user.created","data":{"id":null}}`, `missing field "data.id"`},
		{"id number", `{"type":"user.created","data":{"id":7}}`, `"data.id" must be a string`},
		{"id too long", `{"type":"user.created","data":{"id":"` + strings.Repeat("x", 256) + `"}}`, "longer than 255"},
		{"id with newline", `{"type":"user.created","data":{"id":"user\n1"}}`, "non-printable"},
		{"updated_at string", `{"type":"user.updated","data":{"id":"user_1","updated_at":"yesterday"}}`, "data.updated_at"},
		{"updated_at negative", `{"type":"user.updated","data":{"id":"user_1","updated_at":-5}}`, "data.updated_at"},
		{"updated_at fraction", `{"type":"user.updated","data":{"id":"user_1","updated_at":1654012591835.5}}`, "whole Unix milliseconds"},
		{"updated_at exponent", `{"type":"user.updated","data":{"id":"user_1","updated_at":1.654e12}}`, "whole Unix milliseconds"},
		{"updated_at huge", `{"type":"user.updated","data":{"id":"user_1","updated_at":1e1000000}}`, "whole Unix milliseconds"},
		{"updated_at int64 max", `{"type":"user.updated","data":{"id":"user_1","updated_at":9223372036854775807}}`, "not a time Clerk can have written"},
		{"updated_at year 300000", `{"type":"user.updated","data":{"id":"user_1","updated_at":9405595996800000}}`, "not a time Clerk can have written"},
		{"updated_at in seconds", `{"type":"user.updated","data":{"id":"user_1","updated_at":1654012591}}`, "before the year 2000"},
		{"deleted without id", `{"type":"user.deleted","data":{"deleted":true,"object":"user"}}`, `missing field "data.id"`},
		{"id of spaces", `{"type":"user.created","data":{"id":"   "}}`, `"data.id" must be letters, digits`},
		{"id with a space", `{"type":"user.created","data":{"id":"user 1"}}`, `"data.id" must be letters, digits`},
		{"id with a slash", `{"type":"user.created","data":{"id":"user_1/../x"}}`, `"data.id" must be letters, digits`},
		{"id lone surrogate", `{"type":"user.created","data":{"id":"user_\udc00"}}`, `"data.id" is not valid text`},
		{"id invalid UTF-8", "{\"type\":\"user.created\",\"data\":{\"id\":\"user_\xff\"}}", `"data.id" is not valid text`},
		{"id twice", `{"type":"user.created","data":{"id":"user_a","id":"user_b"}}`, `repeats the key at "/data/id"`},
		{"type twice", `{"type":"user.created","type":"user.deleted","data":{"id":"user_a"}}`, `repeats the key at "/type"`},
		{"type with a space", `{"type":"user created","data":{"id":"user_a"}}`, `"type" must be letters`},
	}
	for _, tt := range tests {
		_, err := clerk.Decode([]byte(tt.body))
		if !errors.Is(err, ledger.ErrInvalidEvent) || !strings.Contains(err.Error(), tt.reason) {
			t.Errorf("%s: err = %v, want ErrInvalidEvent mentioning %q", tt.name, err, tt.reason)
		}
	}
}

// TestDecodeMatchesKeysExactly: encoding/json v1 matched "ID" to the id
// field, so a body with both credited one user here and another when the
// reconciler re-ran PostgreSQL's normalised copy.
func TestDecodeMatchesKeysExactly(t *testing.T) {
	t.Parallel()
	for _, body := range []string{
		`{"type":"user.created","data":{"id":"user_a","ID":"user_b"}}`,
		`{"type":"user.created","data":{"ID":"user_b","id":"user_a"}}`,
		`{"type":"user.created","Type":"user.deleted","data":{"id":"user_a","Id":"user_b"}}`,
	} {
		got, err := clerk.Decode([]byte(body))
		if err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		if got.ClerkUserID != "user_a" || got.Kind != ledger.ChangeUserCreated {
			t.Errorf("%s: decoded %+v, want user.created of user_a", body, got)
		}
	}
	if _, err := clerk.Decode([]byte(`{"TYPE":"user.created","data":{"id":"user_a"}}`)); err == nil {
		t.Error(`"TYPE" was taken for "type"`)
	}
}

// TestDecodeLeavesOutUnusableEmail: the email is not needed for the ledger,
// so an address that cannot be used never fails the event; it is left out
// and named.
func TestDecodeLeavesOutUnusableEmail(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 3000) + "@example.com"
	tests := []struct {
		name, data, reason string
	}{
		{"emails not an array", `"email_addresses":{},"primary_email_address_id":"a"`, "not a list"},
		{"primary id a number", `"primary_email_address_id":5`, "not a string"},
		{"address a number", `"email_addresses":[{"id":"a","email_address":7}],"primary_email_address_id":"a"`, "not a string"},
		{"address too long", `"email_addresses":[{"id":"a","email_address":"` + long + `"}],"primary_email_address_id":"a"`, "longer than 320 bytes"},
		{"address with NUL", `"email_addresses":[{"id":"a","email_address":"a\u0000@x"}],"primary_email_address_id":"a"`, "not valid text"},
		{"address with newline", `"email_addresses":[{"id":"a","email_address":"a\n@x"}],"primary_email_address_id":"a"`, "not valid text"},
		{"address invalid UTF-8", "\"email_addresses\":[{\"id\":\"a\",\"email_address\":\"a\xff@x\"}],\"primary_email_address_id\":\"a\"", "not valid text"},
		{"address lone surrogate", `"email_addresses":[{"id":"a","email_address":"a\ud800@x"}],"primary_email_address_id":"a"`, "not valid text"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := `{"type":"user.created","data":{"id":"user_1","updated_at":1654012591835,` + tt.data + `}}`
			got, err := clerk.Decode([]byte(body))
			if err != nil {
				t.Fatalf("Decode: %v (an unusable email must not fail the event)", err)
			}
			if got.ClerkUserID != "user_1" || got.Email != "" || !got.UpdatedAt.Equal(time.UnixMilli(1654012591835)) {
				t.Errorf("decoded %+v, want user_1 without email", got)
			}
			if len(got.IgnoredFields) != 1 || got.IgnoredFields[0].Field != "email" ||
				!strings.Contains(got.IgnoredFields[0].Reason, tt.reason) {
				t.Errorf("IgnoredFields = %+v, want email: %q", got.IgnoredFields, tt.reason)
			}
			if strings.Contains(got.IgnoredFields[0].Reason, "@") {
				t.Errorf("reason %q holds the address (personal data)", got.IgnoredFields[0].Reason)
			}
		})
	}
}

// TestDecodeIgnoresWhatItDoesNotRead: numbers and text no decoder of ours
// reads never fail an event, whatever PostgreSQL thinks of them.
func TestDecodeIgnoresWhatItDoesNotRead(t *testing.T) {
	t.Parallel()
	for _, extra := range []string{
		`"created_at":1e1000000`, `"public_metadata":{"n":-1e-99999,"s":"\u0000"}`, "\"first_name\":\"\xff\xfe\"",
		`"unsafe_metadata":{"x":"\udc00"}`, `"image_url":null`,
	} {
		body := `{"type":"user.created","data":{"id":"user_1",` + extra + `}}`
		if got, err := clerk.Decode([]byte(body)); err != nil || got.ClerkUserID != "user_1" {
			t.Errorf("%s: %+v, %v; want user_1 decoded", body, got, err)
		}
	}
}

func TestDecodeOtherEventTypes(t *testing.T) {
	t.Parallel()
	got, err := clerk.Decode([]byte(`{"type":"session.created","data":{"id":"sess_1","user_id":"user_1"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if got.Kind != ledger.ChangeOther || got.EventType != "session.created" {
		t.Errorf("session.created = %+v, want an ignored change", got)
	}
}

// FuzzDecode checks that Decode never panics, that it either accepts or
// rejects with ErrInvalidEvent, and that what it accepts is storable text.
func FuzzDecode(f *testing.F) {
	for _, name := range []string{"user.created.json", "user.updated.json", "user.deleted.json"} {
		f.Add(readFixture(f, name))
	}
	f.Add([]byte(`{"type":"user.created","data":{"id":"user_1","email_addresses":[{"id":"a","email_address":"\u0000"}],"primary_email_address_id":"a"}}`))
	f.Add([]byte(`{"type":"user.deleted","data":{"id":"user_1","deleted":true,"object":"user","external_id":"x"}}`))
	f.Add([]byte(`{"type":"session.created","data":{"id":1}}`))
	f.Add([]byte(`{"type":"user.created","data":null}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		c, err := clerk.Decode(body)
		if err != nil {
			if !errors.Is(err, ledger.ErrInvalidEvent) {
				t.Fatalf("error %v does not wrap ErrInvalidEvent", err)
			}
			return
		}
		if !json.Valid(body) {
			t.Fatalf("accepted invalid JSON %q", body)
		}
		if c.EventType == "" {
			t.Fatal("accepted an event without a type")
		}
		for _, s := range []string{c.EventType, c.ClerkUserID, c.Email} {
			if !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
				t.Fatalf("accepted unstorable text %q", s)
			}
		}
		if len(c.Email) > clerk.MaxEmailLen || strings.TrimSpace(c.ClerkUserID) != c.ClerkUserID {
			t.Fatalf("accepted email of %d bytes or id %q", len(c.Email), c.ClerkUserID)
		}
		if strings.HasPrefix(c.EventType, "user.") && c.ClerkUserID == "" {
			t.Fatalf("accepted a %s without data.id", c.EventType)
		}
	})
}
