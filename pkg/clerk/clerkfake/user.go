package clerkfake

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// apiUser is a user as Clerk's Backend API renders it (clerk.User in
// clerk-sdk-go). Fields the fake does not model are answered empty, the way
// Clerk answers them for a user who never set them.
type apiUser struct {
	Object                        string         `json:"object"`
	ID                            string         `json:"id"`
	Username                      *string        `json:"username"`
	FirstName                     *string        `json:"first_name"`
	LastName                      *string        `json:"last_name"`
	ImageURL                      string         `json:"image_url"`
	HasImage                      bool           `json:"has_image"`
	PrimaryEmailAddressID         *string        `json:"primary_email_address_id"`
	PrimaryPhoneNumberID          *string        `json:"primary_phone_number_id"`
	PrimaryWeb3WalletID           *string        `json:"primary_web3_wallet_id"`
	PasswordEnabled               bool           `json:"password_enabled"`
	TwoFactorEnabled              bool           `json:"two_factor_enabled"`
	TOTPEnabled                   bool           `json:"totp_enabled"`
	BackupCodeEnabled             bool           `json:"backup_code_enabled"`
	EmailAddresses                []apiEmail     `json:"email_addresses"`
	PhoneNumbers                  []any          `json:"phone_numbers"`
	Web3Wallets                   []any          `json:"web3_wallets"`
	Passkeys                      []any          `json:"passkeys"`
	ExternalAccounts              []any          `json:"external_accounts"`
	SAMLAccounts                  []any          `json:"saml_accounts"`
	EnterpriseAccounts            []any          `json:"enterprise_accounts"`
	PublicMetadata                map[string]any `json:"public_metadata"`
	PrivateMetadata               map[string]any `json:"private_metadata"`
	UnsafeMetadata                map[string]any `json:"unsafe_metadata"`
	ExternalID                    *string        `json:"external_id"`
	LastSignInAt                  *int64         `json:"last_sign_in_at"`
	Banned                        bool           `json:"banned"`
	Locked                        bool           `json:"locked"`
	LockoutExpiresInSeconds       *int64         `json:"lockout_expires_in_seconds"`
	VerificationAttemptsRemaining int64          `json:"verification_attempts_remaining"`
	DeleteSelfEnabled             bool           `json:"delete_self_enabled"`
	CreateOrganizationEnabled     bool           `json:"create_organization_enabled"`
	LastActiveAt                  *int64         `json:"last_active_at"`
	LegalAcceptedAt               *int64         `json:"legal_accepted_at"`
	CreatedAt                     int64          `json:"created_at"`
	UpdatedAt                     int64          `json:"updated_at"`
}

type apiEmail struct {
	ID           string          `json:"id"`
	Object       string          `json:"object"`
	EmailAddress string          `json:"email_address"`
	Reserved     bool            `json:"reserved"`
	Verification apiVerification `json:"verification"`
	LinkedTo     []any           `json:"linked_to"`
}

type apiVerification struct {
	Status   string `json:"status"`
	Strategy string `json:"strategy"`
	Attempts *int64 `json:"attempts"`
	ExpireAt *int64 `json:"expire_at"`
}

// render turns a stored user into Clerk's JSON shape. The metadata maps are
// deep copies, so the result can be encoded outside the lock.
func render(u *User) apiUser {
	a := apiUser{
		Object:                        "user",
		ID:                            u.ID,
		EmailAddresses:                []apiEmail{},
		PhoneNumbers:                  []any{},
		Web3Wallets:                   []any{},
		Passkeys:                      []any{},
		ExternalAccounts:              []any{},
		SAMLAccounts:                  []any{},
		EnterpriseAccounts:            []any{},
		PublicMetadata:                cloneMap(u.PublicMetadata),
		PrivateMetadata:               cloneMap(u.PrivateMetadata),
		UnsafeMetadata:                cloneMap(u.UnsafeMetadata),
		VerificationAttemptsRemaining: 100,
		DeleteSelfEnabled:             true,
		CreateOrganizationEnabled:     true,
		CreatedAt:                     u.CreatedAt.UnixMilli(),
		UpdatedAt:                     u.UpdatedAt.UnixMilli(),
	}
	if u.Email != "" {
		id := emailID(u.ID)
		a.PrimaryEmailAddressID = &id
		a.EmailAddresses = []apiEmail{{
			ID:           id,
			Object:       "email_address",
			EmailAddress: u.Email,
			Verification: apiVerification{Status: "verified", Strategy: "admin"},
			LinkedTo:     []any{},
		}}
	}
	return a
}

// emailID derives a stable identification id from the user id:
// user_2abc → idn_2abc.
func emailID(userID string) string {
	return "idn_" + strings.TrimPrefix(userID, "user_")
}

// normaliseUser validates u and stores it the way the wire would: times in
// whole milliseconds (UTC), metadata through a JSON round trip, never nil.
func normaliseUser(u User, now time.Time) (*User, error) {
	if u.ID == "" {
		return nil, errors.New("user without an ID")
	}
	if u.CreatedAt.IsZero() {
		u.CreatedAt = now
	}
	if u.UpdatedAt.IsZero() {
		u.UpdatedAt = u.CreatedAt
	}
	u.CreatedAt = toMillis(u.CreatedAt)
	u.UpdatedAt = toMillis(u.UpdatedAt)
	for _, m := range []*map[string]any{&u.PublicMetadata, &u.PrivateMetadata, &u.UnsafeMetadata} {
		n, err := normaliseMap(*m)
		if err != nil {
			return nil, fmt.Errorf("user %s: %w", u.ID, err)
		}
		*m = n
	}
	return &u, nil
}

func toMillis(t time.Time) time.Time { return time.UnixMilli(t.UnixMilli()).UTC() }

// normaliseMap makes m what decoding its JSON would give: float64 numbers,
// []any arrays, map[string]any objects, and a non-nil map.
func normaliseMap(m map[string]any) (map[string]any, error) {
	if len(m) == 0 {
		return map[string]any{}, nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode metadata: %w", err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("decode metadata: %w", err)
	}
	return out, nil
}

func cloneUser(u *User) User {
	c := *u
	c.PublicMetadata = cloneMap(u.PublicMetadata)
	c.PrivateMetadata = cloneMap(u.PrivateMetadata)
	c.UnsafeMetadata = cloneMap(u.UnsafeMetadata)
	return c
}

// cloneMap deep-copies a JSON object; never returns nil.
func cloneMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = cloneValue(v)
	}
	return out
}

func cloneValue(v any) any {
	switch v := v.(type) {
	case map[string]any:
		return cloneMap(v)
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = cloneValue(e)
		}
		return out
	default:
		return v
	}
}

// mergeMetadata merges patch into dst the way Clerk's "update metadata"
// endpoint does: objects are merged key by key at every depth, a key whose
// new value is null is removed, and any other value (arrays included)
// replaces the old one. Nulls inside a new object that has nothing to merge
// with are dropped too, since they would have removed a key that is not there.
func mergeMetadata(dst, patch map[string]any) {
	for k, pv := range patch {
		switch pv := pv.(type) {
		case nil:
			delete(dst, k)
		case map[string]any:
			sub, ok := dst[k].(map[string]any)
			if !ok {
				sub = map[string]any{}
			}
			mergeMetadata(sub, pv)
			dst[k] = sub
		default:
			dst[k] = cloneValue(pv)
		}
	}
}
