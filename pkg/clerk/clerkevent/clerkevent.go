// Package clerkevent builds Clerk's webhook events as Clerk sends them: every
// documented field of the user and session objects, in Clerk's field order,
// with Clerk-shaped ids (KSUIDs) and realistic sizes (~1.7 KB for
// user.created), so that the receiver's lenient decoding meets the fields it
// does not read. It is the one place the project's senders, tests, e2e suite
// and benchmark get their bodies from; odd cases (a missing email, a given
// updated_at) are options of Event, not copies of a body.
package clerkevent

import (
	"cmp"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/segmentio/ksuid"
)

// The event types Body builds.
const (
	UserCreated    = "user.created"
	UserUpdated    = "user.updated"
	UserDeleted    = "user.deleted"
	SessionCreated = "session.created"
)

// Types lists the event types Body builds.
var Types = []string{UserCreated, UserUpdated, UserDeleted, SessionCreated}

// Event says what one Clerk event is about.
type Event struct {
	Type   string
	UserID string
	// Email is the user's primary address; empty means none (a phone or
	// social sign-up).
	Email string
	// OtherEmails are further, non-primary addresses, listed before the
	// primary one (the receiver must pick the primary by id, not position).
	OtherEmails []string
	// Phone, if set, is the user's primary phone number.
	Phone string
	// InstanceID is the Clerk instance; empty means a fixed one.
	InstanceID string
	// At is when Clerk emitted the event (its timestamp, and the user's
	// created_at for user.created); zero means now.
	At time.Time
	// Version is the user's updated_at in Unix milliseconds; 0 means At.
	Version int64
}

// MustBody is Body for a type known to be valid.
func (e Event) MustBody() []byte {
	b, err := e.Body()
	if err != nil {
		panic(err)
	}
	return b
}

// NewID returns prefix_ and a KSUID, the shape of Clerk's and Svix's ids
// (user_2NNEqL2nrIRdJ194ndJqAHwEfxC): ids made in the same second share
// their leading digits, so indexes see the insert pattern of real traffic.
func NewID(prefix string) string {
	return prefix + "_" + ksuid.New().String()
}

// EmailFor derives a stable, unique address for a generated user.
func EmailFor(userID string) string {
	return "load+" + userID + "@example.com"
}

var (
	firstNames = []string{"Ada", "Grace", "Alan", "Barbara", "Edsger", "Frances", "Ken", "Radia"}
	lastNames  = []string{"Lovelace", "Hopper", "Turing", "Liskov", "Dijkstra", "Allen", "Thompson", "Perlman"}
)

// eventAttributes are the same for every event: a browser's sign-up request.
var eventAttributes = json.RawMessage(`{"http_request":{"client_ip":"192.0.2.10","user_agent":` +
	`"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"}}`)

// User is Clerk's User object, its fields (like those below) in Clerk's
// alphabetical order: what user.created and user.updated events carry and
// the Backend API answers (the fake Clerk API renders its users with it).
type User struct {
	BackupCodeEnabled             bool            `json:"backup_code_enabled"`
	Banned                        bool            `json:"banned"`
	CreateOrganizationEnabled     bool            `json:"create_organization_enabled"`
	CreatedAt                     int64           `json:"created_at"`
	DeleteSelfEnabled             bool            `json:"delete_self_enabled"`
	EmailAddresses                []EmailAddress  `json:"email_addresses"`
	EnterpriseAccounts            []any           `json:"enterprise_accounts"`
	ExternalAccounts              []any           `json:"external_accounts"`
	ExternalID                    *string         `json:"external_id"`
	FirstName                     string          `json:"first_name"`
	HasImage                      bool            `json:"has_image"`
	ID                            string          `json:"id"`
	ImageURL                      string          `json:"image_url"`
	LastActiveAt                  int64           `json:"last_active_at"`
	LastName                      string          `json:"last_name"`
	LastSignInAt                  *int64          `json:"last_sign_in_at"`
	LegalAcceptedAt               *int64          `json:"legal_accepted_at"`
	Locked                        bool            `json:"locked"`
	LockoutExpiresInSeconds       *int64          `json:"lockout_expires_in_seconds"`
	MFADisabledAt                 *int64          `json:"mfa_disabled_at"`
	MFAEnabledAt                  *int64          `json:"mfa_enabled_at"`
	Object                        string          `json:"object"`
	Passkeys                      []any           `json:"passkeys"`
	PasswordEnabled               bool            `json:"password_enabled"`
	PhoneNumbers                  []any           `json:"phone_numbers"`
	PrimaryEmailAddressID         *string         `json:"primary_email_address_id"`
	PrimaryPhoneNumberID          *string         `json:"primary_phone_number_id"`
	PrimaryWeb3WalletID           *string         `json:"primary_web3_wallet_id"`
	PrivateMetadata               json.RawMessage `json:"private_metadata"`
	ProfileImageURL               string          `json:"profile_image_url"`
	PublicMetadata                json.RawMessage `json:"public_metadata"`
	SAMLAccounts                  []any           `json:"saml_accounts"`
	TOTPEnabled                   bool            `json:"totp_enabled"`
	TwoFactorEnabled              bool            `json:"two_factor_enabled"`
	UnsafeMetadata                json.RawMessage `json:"unsafe_metadata"`
	UpdatedAt                     int64           `json:"updated_at"`
	Username                      *string         `json:"username"`
	VerificationAttemptsRemaining int             `json:"verification_attempts_remaining"`
	Web3Wallets                   []any           `json:"web3_wallets"`
}

// EmailAddress is one of a User's addresses.
type EmailAddress struct {
	CreatedAt    int64        `json:"created_at"`
	EmailAddress string       `json:"email_address"`
	ID           string       `json:"id"`
	LinkedTo     []any        `json:"linked_to"`
	Object       string       `json:"object"`
	Reserved     bool         `json:"reserved"`
	UpdatedAt    int64        `json:"updated_at"`
	Verification Verification `json:"verification"`
}

// Verification is an address's verification state.
type Verification struct {
	Attempts *int   `json:"attempts"`
	ExpireAt *int64 `json:"expire_at"`
	Status   string `json:"status"`
	Strategy string `json:"strategy"`
}

var emptyObject = json.RawMessage(`{}`)

// Body returns the JSON body Clerk would send for e.
func (e Event) Body() ([]byte, error) {
	if e.At.IsZero() {
		e.At = time.Now()
	}
	now := e.At.UnixMilli()
	// Objects without a Go type of their own, the envelope too, are maps:
	// encoding/json writes their keys in Clerk's alphabetical order.
	env := map[string]any{"event_attributes": eventAttributes, "object": "event", "timestamp": now, "type": e.Type,
		"instance_id": cmp.Or(e.InstanceID, "ins_2bCreditgateKitInstance0001")}
	switch e.Type {
	case UserCreated:
		env["data"] = NewUser(e, now, cmp.Or(e.Version, now))
	case UserUpdated:
		// Updated an hour after sign-up, unless Version says when.
		env["data"] = NewUser(e, now-3_600_000, cmp.Or(e.Version, now))
	case UserDeleted:
		env["data"] = map[string]any{"deleted": true, "id": e.UserID, "object": "user"}
	case SessionCreated:
		env["data"] = map[string]any{
			"abandon_at": now + 30*24*3_600_000, "actor": nil, "client_id": NewID("client"), "created_at": now,
			"expire_at": now + 7*24*3_600_000, "id": NewID("sess"), "last_active_at": now,
			"last_active_organization_id": nil, "object": "session", "status": "active", "updated_at": now, "user_id": e.UserID,
		}
	default:
		return nil, fmt.Errorf("unknown event type %q", e.Type)
	}
	return json.Marshal(env)
}

// NewUser returns the User e is about (its email addresses and phone),
// created and last updated at the given Unix milliseconds, with a name
// derived from its id and empty metadata.
func NewUser(e Event, createdAt, updatedAt int64) User {
	// Pick names from the id, so that one user keeps one name across events.
	f := fnv.New64a()
	_, _ = f.Write([]byte(e.UserID))
	h := f.Sum64()
	first, last := firstNames[h%uint64(len(firstNames))], lastNames[(h/8)%uint64(len(lastNames))]
	u := User{
		CreateOrganizationEnabled: true,
		CreatedAt:                 createdAt,
		DeleteSelfEnabled:         true,
		EnterpriseAccounts:        []any{},
		ExternalAccounts:          []any{},
		FirstName:                 first,
		ID:                        e.UserID,
		// Clerk's image URLs carry a base64 blob of this length.
		ImageURL: "https://img.clerk.com/eyJ0eXBlIjoiZGVmYXVsdCIsImlpZCI6Imluc18yOWNyZWRpdGdhdGVzdml4c2VuZCIsInJpZCI6" +
			"InVzZXJfMjl3ODNzeG1ETkd3T3VFdGhjZTVnZzU2RmNDIiwiaW5pdGlhbHMiOiJBTCJ9",
		LastActiveAt:                  updatedAt,
		LastName:                      last,
		Object:                        "user",
		Passkeys:                      []any{},
		PasswordEnabled:               true,
		PhoneNumbers:                  []any{},
		PrivateMetadata:               emptyObject,
		ProfileImageURL:               "https://www.gravatar.com/avatar?d=mp",
		PublicMetadata:                emptyObject,
		SAMLAccounts:                  []any{},
		UnsafeMetadata:                emptyObject,
		UpdatedAt:                     updatedAt,
		VerificationAttemptsRemaining: 100,
		Web3Wallets:                   []any{},
	}
	address := func(id, email string) EmailAddress {
		return EmailAddress{
			CreatedAt: createdAt, EmailAddress: email, ID: id, LinkedTo: []any{},
			Object: "email_address", UpdatedAt: createdAt,
			Verification: Verification{Status: "verified", Strategy: "email_code"},
		}
	}
	u.EmailAddresses = []EmailAddress{}
	for _, other := range e.OtherEmails {
		u.EmailAddresses = append(u.EmailAddresses, address(NewID("idn"), other))
	}
	if e.Email != "" {
		idn := NewID("idn")
		u.EmailAddresses = append(u.EmailAddresses, address(idn, e.Email))
		u.PrimaryEmailAddressID = &idn
	}
	if e.Phone != "" {
		phone := NewID("idn")
		u.PhoneNumbers = []any{map[string]any{
			"id": phone, "object": "phone_number", "phone_number": e.Phone, "reserved_for_second_factor": false,
			"default_second_factor": false, "verification": Verification{Status: "verified", Strategy: "phone_code"},
			"linked_to": []any{}, "backup_codes": nil, "created_at": createdAt, "updated_at": createdAt,
		}}
		u.PrimaryPhoneNumberID = &phone
	}
	return u
}
