package clerkfake

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/creditgate/creditgate/pkg/clerk/clerkevent"
)

// render turns a stored user into Clerk's JSON shape: clerkevent's User,
// the object Clerk's events carry too, with the stored email (under a stable
// id) and metadata. Marshalled here, under the lock, the metadata needs no
// copy.
func render(u *User) clerkevent.User {
	a := clerkevent.NewUser(clerkevent.Event{UserID: u.ID, Email: u.Email}, u.CreatedAt.UnixMilli(), u.UpdatedAt.UnixMilli())
	if u.Email != "" {
		id := emailID(u.ID)
		a.EmailAddresses[0].ID, a.PrimaryEmailAddressID = id, &id
	}
	a.PublicMetadata, a.PrivateMetadata, a.UnsafeMetadata = rawJSON(u.PublicMetadata), rawJSON(u.PrivateMetadata), rawJSON(u.UnsafeMetadata)
	return a
}

// rawJSON encodes stored metadata, which normaliseUser and mergeMetadata keep
// to what JSON decoding gives (so encoding cannot fail) and never nil.
func rawJSON(m map[string]any) json.RawMessage {
	b, err := json.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("clerkfake: stored metadata does not encode: %v", err))
	}
	return b
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

// mergeMetadata merges patch into dst the way Clerk's "update metadata"
// endpoint does: objects are merged key by key at every depth, a key whose
// new value is null is removed, and any other value (arrays included)
// replaces the old one. Nulls inside a new object that has nothing to merge
// with are dropped too, since they would have removed a key that is not there.
// Arrays and scalars of patch are stored as they are: patch is handed over.
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
			dst[k] = pv
		}
	}
}
