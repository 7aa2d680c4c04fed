package main

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"time"
)

// Clerk event types svixsend can send.
const (
	typeUserCreated    = "user.created"
	typeUserUpdated    = "user.updated"
	typeUserDeleted    = "user.deleted"
	typeSessionCreated = "session.created"
)

var eventTypes = []string{typeUserCreated, typeUserUpdated, typeUserDeleted, typeSessionCreated}

// event says what one Clerk event is about; payload turns it into the bytes
// Clerk would send.
type event struct {
	Type       string
	UserID     string
	Email      string
	InstanceID string
	// At is when Clerk emitted the event.
	At time.Time
}

// newID returns prefix_ and a KSUID: 27 base62 digits of a 4-byte timestamp
// (seconds since 2014-05-13, KSUID's epoch) followed by 16 random bytes,
// the shape of Clerk's and Svix's ids (user_2NNEqL2nrIRdJ194ndJqAHwEfxC).
// Like theirs, ids made in the same second share their leading digits, so
// the database's indexes see the insert pattern of real traffic.
func newID(prefix string) string {
	return prefix + "_" + ksuid(time.Now())
}

// ksuidEpoch is KSUID's time origin, in Unix seconds.
const ksuidEpoch = 1_400_000_000

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// ksuid encodes t's KSUID timestamp and 16 random bytes as 27 base62 digits.
func ksuid(t time.Time) string {
	var b [20]byte
	binary.BigEndian.PutUint32(b[:4], uint32(t.Unix()-ksuidEpoch))
	_, _ = rand.Read(b[4:]) // never fails on Linux (Go 1.24+ panics instead)
	return base62Of(b)
}

// base62Of writes 20 big-endian bytes as 27 base62 digits, the most
// significant first, zero-padded (62^27 > 2^160), by dividing by 62 again
// and again.
func base62Of(b [20]byte) string {
	var out [27]byte
	n := b[:]
	for i := len(out) - 1; i >= 0; i-- {
		var rem uint32
		for j := range n {
			cur := rem<<8 | uint32(n[j])
			n[j] = byte(cur / 62)
			rem = cur % 62
		}
		out[i] = base62[rem]
	}
	return string(out[:])
}

// emailFor derives a stable, unique address for a generated user.
func emailFor(userID string) string {
	return "load+" + userID + "@example.com"
}

var (
	firstNames = []string{"Ada", "Grace", "Alan", "Barbara", "Edsger", "Frances", "Ken", "Radia"}
	lastNames  = []string{"Lovelace", "Hopper", "Turing", "Liskov", "Dijkstra", "Allen", "Thompson", "Perlman"}
)

// The envelope and object shapes follow Clerk's webhook payloads (fields in
// Clerk's alphabetical order), so that bodies have a realistic size (~1.7 KB
// for user.created) and the receiver's lenient decoding is exercised by the
// fields it does not read.
type envelope struct {
	Data            any             `json:"data"`
	EventAttributes eventAttributes `json:"event_attributes"`
	InstanceID      string          `json:"instance_id"`
	Object          string          `json:"object"`
	Timestamp       int64           `json:"timestamp"`
	Type            string          `json:"type"`
}

type eventAttributes struct {
	HTTPRequest struct {
		ClientIP  string `json:"client_ip"`
		UserAgent string `json:"user_agent"`
	} `json:"http_request"`
}

type user struct {
	BackupCodeEnabled             bool            `json:"backup_code_enabled"`
	Banned                        bool            `json:"banned"`
	CreateOrganizationEnabled     bool            `json:"create_organization_enabled"`
	CreatedAt                     int64           `json:"created_at"`
	DeleteSelfEnabled             bool            `json:"delete_self_enabled"`
	EmailAddresses                []emailAddress  `json:"email_addresses"`
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

type emailAddress struct {
	CreatedAt    int64        `json:"created_at"`
	EmailAddress string       `json:"email_address"`
	ID           string       `json:"id"`
	LinkedTo     []any        `json:"linked_to"`
	Object       string       `json:"object"`
	Reserved     bool         `json:"reserved"`
	UpdatedAt    int64        `json:"updated_at"`
	Verification verification `json:"verification"`
}

type verification struct {
	Attempts *int   `json:"attempts"`
	ExpireAt *int64 `json:"expire_at"`
	Status   string `json:"status"`
	Strategy string `json:"strategy"`
}

type deletedUser struct {
	Deleted bool   `json:"deleted"`
	ID      string `json:"id"`
	Object  string `json:"object"`
}

type session struct {
	AbandonAt                int64   `json:"abandon_at"`
	Actor                    any     `json:"actor"`
	ClientID                 string  `json:"client_id"`
	CreatedAt                int64   `json:"created_at"`
	ExpireAt                 int64   `json:"expire_at"`
	ID                       string  `json:"id"`
	LastActiveAt             int64   `json:"last_active_at"`
	LastActiveOrganizationID *string `json:"last_active_organization_id"`
	Object                   string  `json:"object"`
	Status                   string  `json:"status"`
	UpdatedAt                int64   `json:"updated_at"`
	UserID                   string  `json:"user_id"`
}

var emptyObject = json.RawMessage(`{}`)

// payload returns the JSON body Clerk would send for e.
func payload(e event) ([]byte, error) {
	now := e.At.UnixMilli()
	env := envelope{InstanceID: e.InstanceID, Object: "event", Timestamp: now, Type: e.Type}
	env.EventAttributes.HTTPRequest.ClientIP = "192.0.2.10"
	env.EventAttributes.HTTPRequest.UserAgent = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 " +
		"(KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
	switch e.Type {
	case typeUserCreated:
		env.Data = newUser(e, now, now)
	case typeUserUpdated:
		// Updated an hour after sign-up.
		env.Data = newUser(e, now-3_600_000, now)
	case typeUserDeleted:
		env.Data = deletedUser{Deleted: true, ID: e.UserID, Object: "user"}
	case typeSessionCreated:
		env.Data = session{
			AbandonAt: now + 30*24*3_600_000, ClientID: newID("client"), CreatedAt: now,
			ExpireAt: now + 7*24*3_600_000, ID: newID("sess"), LastActiveAt: now,
			Object: "session", Status: "active", UpdatedAt: now, UserID: e.UserID,
		}
	default:
		return nil, fmt.Errorf("unknown event type %q", e.Type)
	}
	return json.Marshal(env)
}

func newUser(e event, createdAt, updatedAt int64) user {
	// Pick names from the id, so that one user keeps one name across events.
	f := fnv.New64a()
	_, _ = f.Write([]byte(e.UserID))
	h := f.Sum64()
	first, last := firstNames[h%uint64(len(firstNames))], lastNames[(h/8)%uint64(len(lastNames))]
	idn := newID("idn")
	u := user{
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
	if e.Email != "" {
		u.EmailAddresses = []emailAddress{{
			CreatedAt: createdAt, EmailAddress: e.Email, ID: idn, LinkedTo: []any{},
			Object: "email_address", UpdatedAt: createdAt,
			Verification: verification{Status: "verified", Strategy: "email_code"},
		}}
		u.PrimaryEmailAddressID = &idn
	} else {
		u.EmailAddresses = []emailAddress{}
	}
	return u
}
