// Package env reads configuration from environment variables with defaults
// and validation, collecting every problem with the name of its variable so
// that start-up fails once with the whole list. It records each name it reads,
// with its default, so the set of variables a binary uses and their defaults
// are derived from its code, one source: `webhook env` and `reconciler env`
// print them and the chart's tests compare its values with them. It never includes a secret's value in an error.
package env

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// Reader reads variables through getenv.
type Reader struct {
	getenv func(string) string
	errs   []error
	vars   []Var
}

// Var is a variable a Reader read, with its default as text ("" when it has
// none: required, a secret, or empty by default).
type Var struct {
	Name, Default string
}

// New returns a Reader over getenv (os.Getenv in main, a map in tests).
func New(getenv func(string) string) *Reader { return &Reader{getenv: getenv} }

func (r *Reader) get(name, def string) string {
	r.vars = append(r.vars, Var{Name: name, Default: def})
	return strings.TrimSpace(r.getenv(name))
}

// Fail records a problem with variable name.
func (r *Reader) Fail(name, format string, args ...any) {
	r.errs = append(r.errs, fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...)))
}

// Err returns every problem recorded, joined, or nil.
func (r *Reader) Err() error { return errors.Join(r.errs...) }

// Vars returns the variables read so far, in order, with their defaults.
func (r *Reader) Vars() []Var { return append([]Var(nil), r.vars...) }

// String returns the variable or def when it is unset.
func (r *Reader) String(name, def string) string {
	if v := r.get(name, def); v != "" {
		return v
	}
	return def
}

// Required returns the variable, recording hint as the problem when unset.
func (r *Reader) Required(name, hint string) string {
	v := r.get(name, "")
	if v == "" {
		r.Fail(name, "required: %s", hint)
	}
	return v
}

// Secret returns the variable like String; callers must not echo it.
func (r *Reader) Secret(name string) string { return r.get(name, "") }

// Int returns the variable as an integer within [lo, hi], or def.
func (r *Reader) Int(name string, def, lo, hi int64) int64 {
	v := r.get(name, strconv.FormatInt(def, 10))
	if v == "" {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < lo || n > hi {
		r.Fail(name, "must be a whole number from %d to %d, got %q", lo, hi, v)
		return def
	}
	return n
}

// Bool returns the variable as a boolean (true/false/1/0), or def.
func (r *Reader) Bool(name string, def bool) bool {
	v := r.get(name, strconv.FormatBool(def))
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		r.Fail(name, "must be true or false, got %q", v)
		return def
	}
	return b
}

// Duration returns the variable as a duration within [lo, hi], or def.
func (r *Reader) Duration(name string, def, lo, hi time.Duration) time.Duration {
	v := r.get(name, durationString(def))
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < lo || d > hi {
		r.Fail(name, "must be a duration from %s to %s such as 30s or 5m, got %q", lo, hi, v)
		return def
	}
	return d
}

// Bytes returns the variable as a size within [lo, hi] bytes, or def. It
// takes a whole number of bytes or one with a KiB, MiB or GiB suffix.
func (r *Reader) Bytes(name string, def, lo, hi int64) int64 {
	v := r.get(name, sizeString(def))
	if v == "" {
		return def
	}
	num, mult := v, int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if strings.HasSuffix(v, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(v, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < lo/mult || n > hi/mult || n*mult < lo {
		r.Fail(name, "must be a size from %s to %s such as 16MiB, got %q", sizeString(lo), sizeString(hi), v)
		return def
	}
	return n * mult
}

// durationString is d as the chart writes it: 5m, not 5m0s.
func durationString(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func sizeString(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return strconv.FormatInt(n, 10)
}

// Addr returns the variable as a listen address host:port or :port, or def.
func (r *Reader) Addr(name, def string) string {
	v := r.String(name, def)
	if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
		r.Fail(name, "must be host:port or :port, got %q", v)
	}
	return v
}

// OneOf returns the variable if it is one of allowed, or def.
func (r *Reader) OneOf(name, def string, allowed ...string) string {
	v := r.String(name, def)
	for _, a := range allowed {
		if v == a {
			return v
		}
	}
	r.Fail(name, "must be one of %s, got %q", strings.Join(allowed, ", "), v)
	return def
}

// URL returns the variable if it is an http(s) URL, or def.
func (r *Reader) URL(name, def string) string {
	v := r.String(name, def)
	if v != "" && !strings.HasPrefix(v, "http://") && !strings.HasPrefix(v, "https://") {
		r.Fail(name, "must be an http:// or https:// URL, got %q", v)
	}
	return v
}

// DatabaseURL returns the required PostgreSQL connection string, checked by
// parse (postgres.CheckURL in main). Its value is never echoed: it holds a
// password.
func (r *Reader) DatabaseURL(name string, parse func(string) error) string {
	v := r.Required(name, "a PostgreSQL URL such as postgres://user:pass@host:5432/creditgate?sslmode=require")
	switch {
	case v == "":
	case !strings.HasPrefix(v, "postgres://") && !strings.HasPrefix(v, "postgresql://") && !strings.Contains(v, "="):
		r.Fail(name, "must be a postgres:// URL or a key=value connection string")
	case parse != nil:
		if err := parse(v); err != nil {
			r.Fail(name, "%v", err)
		}
	}
	return v
}

// UsageMismatches compares a binary's usage text with the variables its
// loader read: every variable must have a line in the usage's environment
// list (the line starts with its name, alone or among comma-separated
// names), and the line must say "(default X" exactly when the loader's
// default is X, non-empty. Each binary's tests call it, so that the text a
// user reads never drifts from the code's defaults.
func UsageMismatches(usage string, vars []Var) []string {
	lines := map[string]string{}
	for _, line := range strings.Split(usage, "\n") {
		f := strings.Fields(line)
		for _, w := range f {
			name := strings.TrimSuffix(w, ",")
			if name == "" || strings.ToUpper(name) != name || strings.ContainsAny(name, "|:/") {
				break
			}
			lines[name] = line
			if !strings.HasSuffix(w, ",") {
				break
			}
		}
	}
	var out []string
	seen := map[string]bool{}
	for _, v := range vars {
		if seen[v.Name] {
			continue
		}
		seen[v.Name] = true
		line, ok := lines[v.Name]
		if !ok {
			out = append(out, v.Name+": not in the usage text")
			continue
		}
		_, stated, has := strings.Cut(line, "(default ")
		if has {
			stated = strings.FieldsFunc(stated, func(r rune) bool { return r == ')' || r == ';' || r == ',' || r == ' ' })[0]
		}
		switch {
		case v.Default != "" && !has:
			out = append(out, fmt.Sprintf("%s: the usage states no default, the loader's is %q", v.Name, v.Default))
		case v.Default == "" && has:
			out = append(out, fmt.Sprintf("%s: the usage states default %q, the loader has none", v.Name, stated))
		case has && stated != v.Default:
			out = append(out, fmt.Sprintf("%s: the usage states default %q, the loader's is %q", v.Name, stated, v.Default))
		}
	}
	return out
}
