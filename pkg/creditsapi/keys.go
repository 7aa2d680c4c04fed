package creditsapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
)

// MinKeyLen is the shortest API key accepted: 32 characters (a random
// 24-byte key in base64 is 32).
const MinKeyLen = 32

// Caller is an authenticated client: its name (stored as the actor of what
// it does) and scopes.
type Caller struct {
	Name   string
	Scopes []string
}

// Has reports whether the caller holds scope (admin holds every scope).
func (c Caller) Has(scope string) bool {
	return slices.Contains(c.Scopes, scope) || slices.Contains(c.Scopes, ScopeAdmin)
}

// Keys are the API keys of CREDITS_API_KEYS.
type Keys struct {
	keys []apiKey
}

type apiKey struct {
	caller Caller
	sum    [sha256.Size]byte
}

var keyNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// ParseKeys reads CREDITS_API_KEYS: entries name:scopes:key separated by
// spaces or commas, scopes joined with + (read, spend, grant, admin). Errors
// name the entry by position and never echo a key.
func ParseKeys(v string) (*Keys, error) {
	fields := strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
	k := &Keys{}
	names := map[string]bool{}
	for i, f := range fields {
		name, rest, ok1 := strings.Cut(f, ":")
		scopes, key, ok2 := strings.Cut(rest, ":")
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("entry %d of %d is not name:scopes:key", i+1, len(fields))
		}
		if !keyNameRE.MatchString(name) {
			return nil, fmt.Errorf("entry %d of %d: the name must be 1 to 64 letters, digits, _ . or -", i+1, len(fields))
		}
		if names[name] {
			return nil, fmt.Errorf("entry %d of %d: the name %s is used twice", i+1, len(fields), name)
		}
		names[name] = true
		if len(key) < MinKeyLen {
			return nil, fmt.Errorf("entry %d of %d (%s): the key is %d characters, at least %d are needed", i+1, len(fields), name, len(key), MinKeyLen)
		}
		c := Caller{Name: name}
		for _, s := range strings.Split(scopes, "+") {
			if !slices.Contains([]string{ScopeRead, ScopeSpend, ScopeGrant, ScopeAdmin}, s) {
				return nil, fmt.Errorf("entry %d of %d (%s): unknown scope %q (read, spend, grant, admin)", i+1, len(fields), name, s)
			}
			c.Scopes = append(c.Scopes, s)
		}
		k.keys = append(k.keys, apiKey{caller: c, sum: sha256.Sum256([]byte(key))})
	}
	return k, nil
}

// Len is the number of keys.
func (k *Keys) Len() int {
	if k == nil {
		return 0
	}
	return len(k.keys)
}

var errNoCredentials = errors.New("credentials required: Authorization: Bearer <API key or ServiceAccount token>")

// Match finds the caller whose key is token. Every configured key is
// compared, in constant time, so that timing tells nothing.
func (k *Keys) Match(token string) (Caller, bool) {
	sum := sha256.Sum256([]byte(token))
	found := -1
	if k != nil {
		for i := range k.keys {
			if subtle.ConstantTimeCompare(sum[:], k.keys[i].sum[:]) == 1 {
				found = i
			}
		}
	}
	if found < 0 {
		return Caller{}, false
	}
	return k.keys[found].caller, true
}

// bearer is the token of an Authorization: Bearer header, or "".
func bearer(r *http.Request) string {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return ""
	}
	return strings.TrimSpace(token)
}
