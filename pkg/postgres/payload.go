package postgres

import (
	"encoding/json"
	"errors"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"
)

// payloadArgs returns the verified body as the jsonb payload, or, when
// PostgreSQL's jsonb cannot hold it, as raw bytes, so that no body is lost or
// refused. keepRaw also returns the exact bytes when the body is storable as
// jsonb: a failed event is re-run by the reconciler from the bytes Svix
// signed (jsonb normalises keys, numbers and escapes, and a decoder must
// never see a different body on the second run); a rejected one is kept
// byte for byte as evidence.
func payloadArgs(body []byte, keepRaw bool) (payload, raw any) {
	return payloadArgsOf(body, json.Valid(body), keepRaw)
}

// payloadArgsOf is payloadArgs for a body already known to be valid JSON or
// not (a decoded event is), sparing the hot path a second validation.
func payloadArgsOf(body []byte, validJSON, keepRaw bool) (payload, raw any) {
	if !validJSON || !utf8.Valid(body) || !jsonbCanHold(body) {
		return nil, body
	}
	if keepRaw {
		return string(body), body
	}
	return string(body), nil
}

// withPayload runs store with the body's storage arguments and, if
// PostgreSQL refuses the jsonb all the same (a data exception or a program
// limit that jsonbCanHold did not foresee), once more with the body kept
// only as bytes. Whatever it then still refuses is a property of the other
// values, and the error says so (ErrInvalidData through mapError).
func withPayload(body []byte, payload, raw any, store func(payload, raw any) error) error {
	err := store(payload, raw)
	if err != nil && payload != nil && isDataError(err) {
		err = store(nil, body)
	}
	return err
}

// isDataError reports SQLSTATE classes 22 (data exception) and 54 (program
// limit exceeded): the database refused a value for what it is.
func isDataError(err error) bool {
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && len(pgErr.Code) == 5 {
		return pgErr.Code[:2] == "22" || pgErr.Code[:2] == "54"
	}
	return false
}

// maxNumberWeight bounds the decimal exponent of a number kept in jsonb. A
// 9-byte 1e131071 is a valid jsonb number of 131,072 digits (64 kB stored),
// and 1e131072 is refused; numbers in Clerk's events are ids, counts and
// millisecond times. A body with a number outside ±maxNumberWeight digits
// is kept as bytes instead, whole.
const maxNumberWeight = 128

// jsonbCanHold reports whether jsonb takes every part of a valid JSON text:
// no \u0000, surrogate escapes only in high-low pairs, and numbers whose
// digits before and after the point stay within maxNumberWeight.
func jsonbCanHold(body []byte) bool {
	for i := 0; i < len(body); i++ {
		switch c := body[i]; {
		case c == '"':
			end, ok := scanString(body, i+1)
			if !ok {
				return false
			}
			i = end
		case c == '-' || (c >= '0' && c <= '9'):
			end, ok := scanNumber(body, i)
			if !ok {
				return false
			}
			i = end - 1
		}
	}
	return true
}

// scanString checks the escapes of the string starting after its opening
// quote at i and returns the index of its closing quote.
func scanString(b []byte, i int) (int, bool) {
	for ; i < len(b); i++ {
		switch b[i] {
		case '"':
			return i, true
		case '\\':
			i++
			if i >= len(b) || b[i] != 'u' {
				continue
			}
			r, ok := hex4(b, i+1)
			if !ok || r == 0 {
				return 0, false
			}
			i += 4
			switch {
			case r >= 0xDC00 && r <= 0xDFFF:
				return 0, false // a low surrogate without its high one
			case r >= 0xD800 && r <= 0xDBFF:
				if i+2 >= len(b) || b[i+1] != '\\' || b[i+2] != 'u' {
					return 0, false
				}
				lo, ok := hex4(b, i+3)
				if !ok || lo < 0xDC00 || lo > 0xDFFF {
					return 0, false
				}
				i += 6
			}
		}
	}
	return 0, false
}

// scanNumber measures the JSON number starting at i and returns the index
// just after it; ok is false when its magnitude or precision is beyond
// maxNumberWeight decimal places either way.
func scanNumber(b []byte, i int) (end int, ok bool) {
	if b[i] == '-' {
		i++
	}
	intDigits := 0
	leadingZero := i < len(b) && b[i] == '0'
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		intDigits++
	}
	if leadingZero {
		intDigits = 0 // "0.5": no digits before the point
	}
	fracDigits := 0
	if i < len(b) && b[i] == '.' {
		for i++; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
			fracDigits++
		}
	}
	exp := 0
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		neg := false
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			neg = b[i] == '-'
			i++
		}
		for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
			if exp < 1_000_000 {
				exp = exp*10 + int(b[i]-'0')
			}
		}
		if neg {
			exp = -exp
		}
	}
	weight, scale := intDigits+exp, fracDigits-exp
	return i, weight <= maxNumberWeight && scale <= maxNumberWeight
}

func hex4(b []byte, at int) (rune, bool) {
	if at+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[at : at+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c-'a') + 10
		case c >= 'A' && c <= 'F':
			r |= rune(c-'A') + 10
		default:
			return 0, false
		}
	}
	return r, true
}
