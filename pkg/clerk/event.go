// Package clerk holds what creditgate knows of Clerk: the webhook event
// envelope and payloads (decoded leniently: Clerk adds fields over time, but
// exactly: keys match by case), and a wrapper around Clerk's Backend API.
package clerk

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

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

// MaxEmailLen bounds a primary email address creditgate stores. Addresses are
// at most 254 bytes by RFC 5321; longer text is not an address and, past
// about 2.7 kB, would not even fit the email index.
const MaxEmailLen = 320

// decodeOptions: keys match exactly (encoding/json v1 matches "ID" to a field
// tagged "id", so {"id":"a","ID":"b"} meant one user here and another to
// anything that read PostgreSQL's normalised copy); a repeated key is an
// error, since a body that says two things cannot be trusted for either;
// invalid UTF-8 in a field creditgate does not read must not block a grant.
var decodeOptions = json.JoinOptions(
	json.MatchCaseInsensitiveNames(false),
	jsontext.AllowDuplicateNames(false),
	jsontext.AllowInvalidUTF8(true),
)

// Decode implements ledger.Decoder for Clerk's webhook bodies.
//
// The fields the ledger needs (type, data.id, data.updated_at) are checked
// strictly: a bad one is an error wrapping ledger.ErrInvalidEvent that says
// which field is wrong. A field it does not need never fails the event: a
// primary email it cannot use is left out and named in Change.IgnoredFields.
// The returned Change carries whatever could be read (event type, user id)
// even on error, so that a rejection is stored with as much context as the
// body has.
func Decode(body []byte) (ledger.Change, error) {
	var c ledger.Change
	var env struct {
		Type jsontext.Value `json:"type"`
		Data jsontext.Value `json:"data"`
	}
	// One pass validates the whole body and splits it; the data object is
	// decoded once more below, into only the fields we read.
	if err := json.Unmarshal(body, &env, decodeOptions); err != nil {
		return c, invalid("%s", bodyError(err))
	}
	switch env.Type.Kind() {
	case 0, 'n':
		return c, invalid("missing field \"type\"")
	case '"':
	default:
		return c, invalid("field \"type\" must be a string")
	}
	t, err := stringOf(env.Type)
	if err != nil {
		return c, invalid("field \"type\" is not valid text")
	}
	if err := checkType(t); err != nil {
		return c, err
	}
	c.EventType = t
	switch env.Data.Kind() {
	case 0, 'n':
		return c, invalid("missing field \"data\"")
	case '{':
	default:
		return c, invalid("field \"data\" must be an object")
	}

	if !strings.HasPrefix(c.EventType, "user.") {
		// Not ours to act on; keep the user it concerns when it names one
		// (session.* and others carry data.user_id).
		var d struct {
			UserID jsontext.Value `json:"user_id"`
		}
		if json.Unmarshal(env.Data, &d, decodeOptions) == nil && d.UserID.Kind() == '"' {
			if id, err := stringOf(d.UserID); err == nil && checkUserID("data.user_id", id) == nil {
				c.ClerkUserID = id
			}
		}
		return c, nil
	}

	// The fields we read, raw, so that each is judged on its own: a bad id
	// or version rejects the event, a bad email is only left out.
	var u struct {
		ID                    jsontext.Value `json:"id"`
		UpdatedAt             jsontext.Value `json:"updated_at"`
		PrimaryEmailAddressID jsontext.Value `json:"primary_email_address_id"`
		EmailAddresses        jsontext.Value `json:"email_addresses"`
	}
	if err := json.Unmarshal(env.Data, &u, decodeOptions); err != nil {
		return c, invalid("field \"data\": %s", bodyError(err))
	}
	switch u.ID.Kind() {
	case 0, 'n':
		return c, invalid("missing field \"data.id\"")
	case '"':
	default:
		return c, invalid("field \"data.id\" must be a string")
	}
	id, err := stringOf(u.ID)
	if err != nil {
		return c, invalid("field \"data.id\" is not valid text")
	}
	if err := checkUserID("data.id", id); err != nil {
		return c, err
	}
	c.ClerkUserID = id

	switch c.EventType {
	case EventUserCreated, EventUserUpdated:
		c.Kind = ledger.ChangeUserCreated
		if c.EventType == EventUserUpdated {
			c.Kind = ledger.ChangeUserUpdated
		}
		if c.UpdatedAt, err = updatedAt(u.UpdatedAt); err != nil {
			return c, err
		}
		email, why := primaryEmail(u.PrimaryEmailAddressID, u.EmailAddresses)
		if why != "" {
			c.IgnoredFields = append(c.IgnoredFields, ledger.IgnoredField{Field: "email", Reason: why})
		}
		c.Email = email
	case EventUserDeleted:
		c.Kind = ledger.ChangeUserDeleted
	}
	return c, nil
}

// Versions Clerk can have written: after 2000 and before 5000. The ledger
// narrows this to the delivery's own time (ledger.CheckVersion); this bound
// only keeps the milliseconds inside what time.Time and PostgreSQL hold.
var (
	minUpdatedAtMillis = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	maxUpdatedAtMillis = time.Date(5000, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
)

// updatedAt reads data.updated_at: whole Unix milliseconds, or absent, null
// or 0 for "no version".
func updatedAt(v jsontext.Value) (time.Time, error) {
	switch v.Kind() {
	case 0, 'n':
		return time.Time{}, nil
	case '0':
	default:
		return time.Time{}, invalid("field \"data.updated_at\" must be a number of Unix milliseconds, not %s", kindName(v.Kind()))
	}
	ms, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		return time.Time{}, invalid("field \"data.updated_at\" must be whole Unix milliseconds, got %.40s", v)
	}
	switch {
	case ms == 0:
		return time.Time{}, nil
	case ms < minUpdatedAtMillis:
		return time.Time{}, invalid("field \"data.updated_at\" (%d) is before the year 2000: Clerk sends Unix milliseconds", ms)
	case ms > maxUpdatedAtMillis:
		return time.Time{}, invalid("field \"data.updated_at\" (%d) is not a time Clerk can have written", ms)
	}
	return time.UnixMilli(ms).UTC(), nil
}

// primaryEmail finds the primary address. It never fails the event: a
// missing address is "" with no reason; one that cannot be used is "" with
// the reason it was left out.
func primaryEmail(primaryID, addresses jsontext.Value) (email, ignored string) {
	switch primaryID.Kind() {
	case 0, 'n':
		return "", "" // phone-only and web3 users have none
	case '"':
	default:
		return "", "data.primary_email_address_id is not a string"
	}
	pid, err := stringOf(primaryID)
	if err != nil {
		return "", "data.primary_email_address_id is not valid text"
	}
	if k := addresses.Kind(); k == 0 || k == 'n' {
		return "", ""
	}
	var list []struct {
		ID           jsontext.Value `json:"id"`
		EmailAddress jsontext.Value `json:"email_address"`
	}
	if err := json.Unmarshal(addresses, &list, decodeOptions); err != nil {
		return "", "data.email_addresses is not a list of address objects"
	}
	for _, a := range list {
		if a.ID.Kind() != '"' {
			continue
		}
		if id, err := stringOf(a.ID); err != nil || id != pid {
			continue
		}
		if a.EmailAddress.Kind() != '"' {
			return "", "the primary email_address is not a string"
		}
		e, err := stringOf(a.EmailAddress)
		switch {
		case err != nil || !utf8.ValidString(e) || strings.ContainsFunc(e, unicode.IsControl):
			return "", "the primary email address is not valid text"
		case len(e) > MaxEmailLen:
			return "", fmt.Sprintf("the primary email address is longer than %d bytes", MaxEmailLen)
		}
		return e, ""
	}
	return "", ""
}

// stringOf unquotes a JSON string. Invalid UTF-8 and lone surrogate escapes
// are reported as errors rather than replaced, so that no id is silently
// rewritten.
func stringOf(v jsontext.Value) (string, error) {
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", err
	}
	return s, nil
}

// checkType accepts the event types Clerk names: dotted words such as
// user.created or organizationMembership.deleted.
func checkType(v string) error {
	if v == "" {
		return invalid("field \"type\" is empty")
	}
	if len(v) > maxIDLen {
		return invalid("field \"type\" is longer than %d bytes", maxIDLen)
	}
	for _, r := range v {
		if !isIDChar(r) && r != '.' {
			return invalid("field \"type\" must be letters, digits, '.', '_' or '-' (such as user.created)")
		}
	}
	return nil
}

// checkUserID accepts what a Clerk id is: a prefix and base62, such as
// user_2NNEqL2nrIRdJ194ndJqAHwEfxC. The id becomes a row key, an
// idempotency key and a path segment of Clerk API calls, so nothing else
// is trusted: no spaces, no slashes, no dots, no control characters.
func checkUserID(field, v string) error {
	if v == "" {
		return invalid("field %q is empty", field)
	}
	if len(v) > maxIDLen {
		return invalid("field %q is longer than %d bytes", field, maxIDLen)
	}
	for _, r := range v {
		if !isIDChar(r) {
			if !unicode.IsPrint(r) || r == utf8.RuneError {
				return invalid("field %q holds a non-printable character", field)
			}
			return invalid("field %q must be letters, digits, '_' or '-' (a Clerk id such as user_2NNEqL2nrIRdJ194ndJqAHwEfxC)", field)
		}
	}
	return nil
}

func isIDChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-'
}

// bodyError says briefly why a body is not a JSON object we can read.
func bodyError(err error) string {
	if serr, ok := errors.AsType[*jsontext.SyntacticError](err); ok {
		if errors.Is(serr.Err, jsontext.ErrDuplicateName) {
			return fmt.Sprintf("body repeats the key at %s", pointer(serr.JSONPointer))
		}
		return "body is not valid JSON"
	}
	if serr, ok := errors.AsType[*json.SemanticError](err); ok && serr.JSONPointer == "" {
		return "body is not a JSON object"
	}
	return "body is not valid JSON"
}

func pointer(p jsontext.Pointer) string {
	if p == "" {
		return "the top level"
	}
	s := string(p)
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return strconv.Quote(s)
}

func kindName(k jsontext.Kind) string {
	switch k {
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case '{':
		return "an object"
	case '[':
		return "an array"
	}
	return "that"
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ledger.ErrInvalidEvent, fmt.Sprintf(format, args...))
}
