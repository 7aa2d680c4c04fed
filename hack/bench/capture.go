package main

import (
	"context"
	"database/sql/driver"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// capture records, while on, every statement pgx sends (BEGIN and COMMIT
// included) with its arguments, so that the benchmark hands pgbench the very
// SQL the service runs, taken from the Go code that sends it rather than
// from a server log.
type capture struct {
	mu      sync.Mutex
	on      bool
	stmts   []captured
	trip    int
	lastEnd bool
}

// captured is one statement, and the trip it went in: statements that
// start before any of them ends were sent together (a pipeline).
type captured struct {
	sql  string
	args []any
	trip int
}

func (c *capture) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.on {
		// pgx takes its options from the head of the arguments.
		args := d.Args
	options:
		for len(args) > 0 {
			switch args[0].(type) {
			case pgx.QueryExecMode, pgx.QueryResultFormats, pgx.QueryResultFormatsByOID, pgx.QueryRewriter:
				args = args[1:]
			default:
				break options
			}
		}
		if c.lastEnd || len(c.stmts) == 0 {
			c.trip++
		}
		c.lastEnd = false
		c.stmts = append(c.stmts, captured{sql: d.SQL, args: append([]any(nil), args...), trip: c.trip})
	}
	return ctx
}

func (c *capture) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastEnd = true
}

// record runs op with capturing on and returns what it sent.
func (c *capture) record(op func() error) ([]captured, error) {
	c.mu.Lock()
	c.on, c.stmts = true, nil
	c.mu.Unlock()
	err := op()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.on = false
	return c.stmts, err
}

// marker is a value of the captured operation that varies per operation: it
// becomes a pgbench variable.
type marker struct {
	value string // the integer's digits, or text found inside text arguments
	expr  string // the SQL that stands for it, with a pgbench variable
	text  bool
	hits  int
}

var param = regexp.MustCompile(`\$(\d+)`)

// pgbenchScript turns the captured statements into a pgbench script: each
// bound parameter becomes a literal of its value, except the markers, which
// become pgbench variables (text around them joined with ||). pgbench -M
// prepared turns the variables back into parameters. With pipelines, the
// statements the service sent together are sent together (\startpipeline,
// for -M prepared or extended). It fails if a marker never appears or its
// value is left in the SQL.
func pgbenchScript(stmts []captured, header string, markers []*marker, pipelines bool) (string, error) {
	var b strings.Builder
	b.WriteString(header)
	size := map[int]int{}
	for _, st := range stmts {
		size[st.trip]++
	}
	for i, st := range stmts {
		if pipelines && size[st.trip] > 1 && (i == 0 || stmts[i-1].trip != st.trip) {
			b.WriteString("\\startpipeline\n")
		}
		var err error
		q := param.ReplaceAllStringFunc(st.sql, func(p string) string {
			n, _ := strconv.Atoi(p[1:])
			if n < 1 || n > len(st.args) {
				err = fmt.Errorf("capture: %s without its argument in %q", p, st.sql)
				return p
			}
			return substitute(st.args[n-1], markers)
		})
		if err != nil {
			return "", err
		}
		// pgbench reads a statement up to its semicolon; newlines are fine.
		b.WriteString(strings.TrimSpace(protectColons(q)))
		b.WriteString(";\n")
		if pipelines && size[st.trip] > 1 && (i == len(stmts)-1 || stmts[i+1].trip != st.trip) {
			b.WriteString("\\endpipeline\n")
		}
	}
	out := b.String()
	for _, m := range markers {
		if m.hits == 0 {
			return "", fmt.Errorf("capture: the value %q never appeared in an argument", m.value)
		}
		if m.text && strings.Contains(out, m.value) {
			return "", fmt.Errorf("capture: the value %q is left in the SQL", m.value)
		}
	}
	return out, nil
}

// substitute is the SQL for one argument.
func substitute(a any, markers []*marker) string {
	if v, ok := a.(driver.Valuer); ok {
		a, _ = v.Value()
	}
	switch v := a.(type) {
	case nil:
		return "NULL"
	case int, int32, int64:
		s := fmt.Sprint(v)
		for _, m := range markers {
			if !m.text && m.value == s {
				m.hits++
				return m.expr
			}
		}
		return s
	case bool:
		return strconv.FormatBool(v)
	case []byte:
		return fmt.Sprintf(`'\x%x'`, v)
	case time.Time:
		// Typed: its colons make protectColons split it into text pieces.
		return quote(v.Format(time.RFC3339Nano)) + "::timestamptz"
	case string:
		var parts []string
		rest := v
		for rest != "" {
			at, which := -1, (*marker)(nil)
			for _, m := range markers {
				if i := strings.Index(rest, m.value); m.text && i >= 0 && (at < 0 || i < at) {
					at, which = i, m
				}
			}
			if which == nil {
				break
			}
			if at > 0 {
				parts = append(parts, quote(rest[:at]))
			}
			parts = append(parts, which.expr)
			which.hits++
			rest = rest[at+len(which.value):]
		}
		if len(parts) == 0 {
			return quote(v)
		}
		if rest != "" {
			parts = append(parts, quote(rest))
		}
		return "(" + strings.Join(parts, " || ") + ")"
	}
	return quote(fmt.Sprint(a))
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// protectColons rewrites the string literals of a statement that hold a
// colon followed by a letter, digit or _, which pgbench would take for a
// variable: 'api:x:debit:' becomes ('api' || ':' || 'x' || ':' || 'debit:'),
// the same text.
func protectColons(q string) string {
	var out strings.Builder
	for {
		start := strings.IndexByte(q, '\'')
		if start < 0 {
			out.WriteString(q)
			return out.String()
		}
		// The literal runs to the next quote not doubled.
		end := start + 1
		for end < len(q) {
			if q[end] == '\'' {
				if end+1 < len(q) && q[end+1] == '\'' {
					end += 2
					continue
				}
				break
			}
			end++
		}
		out.WriteString(q[:start])
		lit := q[start+1 : min(end, len(q))]
		parts := splitColons(lit)
		if len(parts) == 1 {
			out.WriteString("'" + lit + "'")
		} else {
			out.WriteString("(" + strings.Join(parts, " || ") + ")")
		}
		if end >= len(q) {
			return out.String()
		}
		q = q[end+1:]
	}
}

func splitColons(lit string) []string {
	var parts []string
	last := 0
	for i := 0; i+1 < len(lit); i++ {
		c := lit[i+1]
		if lit[i] == ':' && (c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			if i > last {
				parts = append(parts, "'"+lit[last:i]+"'")
			}
			parts = append(parts, "':'")
			last = i + 1
		}
	}
	if len(parts) == 0 {
		return []string{"'" + lit + "'"}
	}
	return append(parts, "'"+lit[last:]+"'")
}
