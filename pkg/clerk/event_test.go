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
		{"emails not array", `{"type":"user.created","data":{"id":"user_1","email_addresses":{}}}`, "data.email_addresses"},
		{"primary id number", `{"type":"user.created","data":{"id":"user_1","primary_email_address_id":5}}`, "data.primary_email_address_id"},
		{"updated_at string", `{"type":"user.updated","data":{"id":"user_1","updated_at":"yesterday"}}`, "data.updated_at"},
		{"updated_at negative", `{"type":"user.updated","data":{"id":"user_1","updated_at":-5}}`, "data.updated_at"},
		{"deleted without id", `{"type":"user.deleted","data":{"deleted":true,"object":"user"}}`, `missing field "data.id"`},
	}
	for _, tt := range tests {
		_, err := clerk.Decode([]byte(tt.body))
		if !errors.Is(err, ledger.ErrInvalidEvent) || !strings.Contains(err.Error(), tt.reason) {
			t.Errorf("%s: err = %v, want ErrInvalidEvent mentioning %q", tt.name, err, tt.reason)
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
		if strings.HasPrefix(c.EventType, "user.") && c.ClerkUserID == "" {
			t.Fatalf("accepted a %s without data.id", c.EventType)
		}
	})
}
