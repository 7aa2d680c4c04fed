// Package clerk holds what creditgate knows of Clerk: the webhook event
// envelope and payloads (decoded leniently: Clerk adds fields over time), and
// later a wrapper around Clerk's Backend API.
package clerk

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/creditgate/creditgate/pkg/ledger"
)

// Event types creditgate acts on.
const (
	EventUserCreated = "user.created"
	EventUserUpdated = "user.updated"
	EventUserDeleted = "user.deleted"
)

// maxIDLen bounds ids and event types; Clerk's are ~32 bytes.
const maxIDLen = 255

// Event is the envelope of every Clerk webhook.
type Event struct {
	Type       string          `json:"type"`
	Object     string          `json:"object"`
	Data       json.RawMessage `json:"data"`
	Timestamp  int64           `json:"timestamp"`
	InstanceID string          `json:"instance_id"`
}

// User is the part of Clerk's user object creditgate reads. user.deleted
// carries only ID, Deleted and Object.
type User struct {
	ID                    string         `json:"id"`
	Object                string         `json:"object"`
	Deleted               bool           `json:"deleted"`
	PrimaryEmailAddressID *string        `json:"primary_email_address_id"`
	EmailAddresses        []EmailAddress `json:"email_addresses"`
	// CreatedAt and UpdatedAt are Unix milliseconds.
	CreatedAt int64 `json:"created_at"`
	UpdatedAt int64 `json:"updated_at"`
}

// EmailAddress is one of a user's addresses.
type EmailAddress struct {
	ID           string `json:"id"`
	EmailAddress string `json:"email_address"`
}

// PrimaryEmail returns the address whose id is the primary one, or "" when the
// user has none (phone-only and web3 users).
func (u User) PrimaryEmail() string {
	if u.PrimaryEmailAddressID == nil {
		return ""
	}
	for _, e := range u.EmailAddresses {
		if e.ID == *u.PrimaryEmailAddressID {
			return e.EmailAddress
		}
	}
	return ""
}

// Decode implements ledger.Decoder for Clerk's webhook bodies. Every error
// wraps ledger.ErrInvalidEvent and says which field is wrong. The returned
// Change carries whatever could be read (event type, user id) even on error,
// so that a rejection is stored with as much context as the body has.
func Decode(body []byte) (ledger.Change, error) {
	var c ledger.Change
	var env struct {
		Type json.RawMessage `json:"type"`
		Data json.RawMessage `json:"data"`
	}
	// One pass validates the whole body and splits it; the data object is
	// decoded once more below, into only the fields we read.
	if err := json.Unmarshal(body, &env); err != nil {
		if _, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
			return c, invalid("body is not a JSON object")
		}
		return c, invalid("body is not valid JSON")
	}
	if len(env.Type) == 0 || string(env.Type) == "null" {
		return c, invalid("missing field \"type\"")
	}
	if err := json.Unmarshal(env.Type, &c.EventType); err != nil {
		return c, invalid("field \"type\" must be a string")
	}
	if err := checkID("type", c.EventType); err != nil {
		c.EventType = ""
		return c, err
	}
	if len(env.Data) == 0 || string(env.Data) == "null" {
		return c, invalid("missing field \"data\"")
	}
	if bytes.TrimLeft(env.Data, " \t\r\n")[0] != '{' {
		return c, invalid("field \"data\" must be an object")
	}

	if !strings.HasPrefix(c.EventType, "user.") {
		// Not ours to act on; keep the user it concerns when it names one
		// (session.* and others carry data.user_id).
		var d struct {
			UserID json.RawMessage `json:"user_id"`
		}
		_ = json.Unmarshal(env.Data, &d)
		var id string
		if json.Unmarshal(d.UserID, &id) == nil && checkID("data.user_id", id) == nil {
			c.ClerkUserID = id
		}
		return c, nil
	}

	// The fields we read, with the id raw so that a missing or mistyped id
	// gets its own message.
	var u struct {
		ID                    json.RawMessage `json:"id"`
		PrimaryEmailAddressID *string         `json:"primary_email_address_id"`
		EmailAddresses        []EmailAddress  `json:"email_addresses"`
		UpdatedAt             int64           `json:"updated_at"`
	}
	if err := json.Unmarshal(env.Data, &u); err != nil {
		return c, invalid("field %s", describe(err))
	}
	if len(u.ID) == 0 || string(u.ID) == "null" {
		return c, invalid("missing field \"data.id\"")
	}
	if err := json.Unmarshal(u.ID, &c.ClerkUserID); err != nil {
		return c, invalid("field \"data.id\" must be a string")
	}
	if err := checkID("data.id", c.ClerkUserID); err != nil {
		c.ClerkUserID = ""
		return c, err
	}

	switch c.EventType {
	case EventUserCreated, EventUserUpdated:
		c.Kind = ledger.ChangeUserCreated
		if c.EventType == EventUserUpdated {
			c.Kind = ledger.ChangeUserUpdated
		}
		c.Email = User{PrimaryEmailAddressID: u.PrimaryEmailAddressID, EmailAddresses: u.EmailAddresses}.PrimaryEmail()
		if !utf8.ValidString(c.Email) || strings.ContainsRune(c.Email, 0) {
			return c, invalid("primary email address is not valid text")
		}
		if u.UpdatedAt < 0 {
			return c, invalid("field \"data.updated_at\" must not be negative")
		}
		if u.UpdatedAt > 0 {
			c.UpdatedAt = time.UnixMilli(u.UpdatedAt).UTC()
		}
	case EventUserDeleted:
		c.Kind = ledger.ChangeUserDeleted
	}
	return c, nil
}

// checkID accepts the ids and event types we store: non-empty, bounded,
// printable text.
func checkID(field, v string) error {
	if v == "" {
		return invalid("field %q is empty", field)
	}
	if len(v) > maxIDLen {
		return invalid("field %q is longer than %d bytes", field, maxIDLen)
	}
	for _, r := range v {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return invalid("field %q holds a non-printable character", field)
		}
	}
	return nil
}

func describe(err error) string {
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		return fmt.Sprintf("%q must be of type %s, not %s", "data."+te.Field, te.Type, te.Value)
	}
	return err.Error()
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ledger.ErrInvalidEvent, fmt.Sprintf(format, args...))
}
