package clerkevent_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/creditgate/creditgate/pkg/clerk/clerkevent"
)

// clerkShape is what creditgate reads of a Clerk event.
type clerkShape struct {
	Type       string `json:"type"`
	Object     string `json:"object"`
	Timestamp  int64  `json:"timestamp"`
	InstanceID string `json:"instance_id"`
	Data       struct {
		ID                    string  `json:"id"`
		Object                string  `json:"object"`
		Deleted               bool    `json:"deleted"`
		UserID                string  `json:"user_id"`
		UpdatedAt             int64   `json:"updated_at"`
		PrimaryEmailAddressID *string `json:"primary_email_address_id"`
		EmailAddresses        []struct {
			ID           string `json:"id"`
			EmailAddress string `json:"email_address"`
		} `json:"email_addresses"`
	} `json:"data"`
}

func TestBodiesAreClerkShaped(t *testing.T) {
	t.Parallel()
	at := time.UnixMilli(1_790_000_000_123)
	tests := []struct {
		ev clerkevent.Event
		// minSize and maxSize bound the body, to keep it Clerk-sized.
		minSize, maxSize int
		wantObject       string
		check            func(t *testing.T, ev clerkShape)
	}{
		{clerkevent.Event{Type: clerkevent.UserCreated, UserID: "user_abc", Email: "ada@example.com", At: at}, 1400, 2200, "user",
			func(t *testing.T, ev clerkShape) {
				if ev.Data.ID != "user_abc" || ev.Data.PrimaryEmailAddressID == nil || len(ev.Data.EmailAddresses) != 1 ||
					ev.Data.EmailAddresses[0].ID != *ev.Data.PrimaryEmailAddressID ||
					ev.Data.EmailAddresses[0].EmailAddress != "ada@example.com" || ev.Data.UpdatedAt != at.UnixMilli() {
					t.Errorf("user data = %+v", ev.Data)
				}
			}},
		{clerkevent.Event{Type: clerkevent.UserUpdated, UserID: "user_abc", Email: "ada@example.com", At: at, Version: 1_790_000_999_000}, 1400, 2200, "user",
			func(t *testing.T, ev clerkShape) {
				if ev.Data.UpdatedAt != 1_790_000_999_000 {
					t.Errorf("updated_at = %d, want the given version", ev.Data.UpdatedAt)
				}
			}},
		{clerkevent.Event{Type: clerkevent.UserCreated, UserID: "user_phone", At: at}, 1200, 2200, "user",
			func(t *testing.T, ev clerkShape) {
				if ev.Data.PrimaryEmailAddressID != nil || len(ev.Data.EmailAddresses) != 0 {
					t.Errorf("a user without email has %+v", ev.Data)
				}
			}},
		{clerkevent.Event{Type: clerkevent.UserDeleted, UserID: "user_abc", At: at}, 100, 600, "user",
			func(t *testing.T, ev clerkShape) {
				if ev.Data.ID != "user_abc" || !ev.Data.Deleted {
					t.Errorf("deleted data = %+v", ev.Data)
				}
			}},
		{clerkevent.Event{Type: clerkevent.SessionCreated, UserID: "user_abc", At: at}, 300, 1000, "session",
			func(t *testing.T, ev clerkShape) {
				if ev.Data.UserID != "user_abc" || !strings.HasPrefix(ev.Data.ID, "sess_") {
					t.Errorf("session data = %+v", ev.Data)
				}
			}},
	}
	for _, tt := range tests {
		body, err := tt.ev.Body()
		if err != nil {
			t.Fatal(err)
		}
		if n := len(body); n < tt.minSize || n > tt.maxSize {
			t.Errorf("%s: body is %d bytes, want %d..%d", tt.ev.Type, n, tt.minSize, tt.maxSize)
		}
		var ev clerkShape
		if err := json.Unmarshal(body, &ev); err != nil {
			t.Fatalf("%s: body is not JSON: %v", tt.ev.Type, err)
		}
		if ev.Type != tt.ev.Type || ev.Object != "event" || ev.Data.Object != tt.wantObject ||
			ev.Timestamp != at.UnixMilli() || !strings.HasPrefix(ev.InstanceID, "ins_") {
			t.Errorf("%s: envelope = %+v", tt.ev.Type, ev)
		}
		tt.check(t, ev)
	}
	if _, err := (clerkevent.Event{Type: "user.exploded"}).Body(); err == nil {
		t.Error("Body of an unknown type: no error")
	}
}

func TestNewID(t *testing.T) {
	t.Parallel()
	const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	a, b := clerkevent.NewID("user"), clerkevent.NewID("user")
	for _, id := range []string{a, b} {
		if !strings.HasPrefix(id, "user_") || len(id) != len("user_")+27 || strings.Trim(id[5:], base62) != "" {
			t.Errorf("NewID = %q, want user_ and 27 base62 digits (a KSUID, like Clerk's ids)", id)
		}
	}
	if a == b {
		t.Errorf("two NewIDs are both %s", a)
	}
}
