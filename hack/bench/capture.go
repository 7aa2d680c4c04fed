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
	if !c.on {
		return ctx
	}
	// pgx takes its options from the head of the arguments.
	args := d.Args
	for len(args) > 0 && isOption(args[0]) {
		args = args[1:]
	}
	if c.lastEnd || len(c.stmts) == 0 {
		c.trip++
	}
	c.lastEnd = false
	c.stmts = append(c.stmts, captured{sql: d.SQL, args: append([]any(nil), args...), trip: c.trip})
	return ctx
}

func isOption(arg any) bool {
	switch arg.(type) {
	case pgx.QueryExecMode, pgx.QueryResultFormats, pgx.QueryResultFormatsByOID, pgx.QueryRewriter:
		return true
	}
	return false
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

// trips is how many round trips the statements took.
func trips(stmts []captured) int {
	if len(stmts) == 0 {
		return 0
	}
	return stmts[len(stmts)-1].trip - stmts[0].trip + 1
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
	for _, m := range markers {
		m.hits = 0
	}
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
		var values []string
		byValue := map[string]*marker{}
		for _, m := range markers {
			if m.text && byValue[m.value] == nil {
				values, byValue[m.value] = append(values, regexp.QuoteMeta(m.value)), m
			}
		}
		if values == nil {
			return quote(v)
		}
		return concat(v, regexp.MustCompile(strings.Join(values, "|")), quote, func(value string) string {
			byValue[value].hits++
			return byValue[value].expr
		})
	}
	return quote(fmt.Sprint(a))
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

var (
	literal  = regexp.MustCompile(`'(?:[^']|'')*'`)
	colonVar = regexp.MustCompile(`:\b`) // a colon before a letter, digit or _
)

// protectColons rewrites the string literals of a statement that hold a
// colon followed by a letter, digit or _, which pgbench would take for a
// variable: 'api:x:debit:' becomes ('api' || ':' || 'x' || ':' || 'debit:'),
// the same text.
func protectColons(q string) string {
	return literal.ReplaceAllStringFunc(q, func(lit string) string {
		return concat(lit[1:len(lit)-1], colonVar, func(s string) string { return "'" + s + "'" },
			func(string) string { return "':'" })
	})
}

// concat is s as SQL text pieces joined with ||: what re matches becomes
// expr(match), the text around it lit(text). Without a match it is lit(s).
func concat(s string, re *regexp.Regexp, lit, expr func(string) string) string {
	var parts []string
	last := 0
	for _, at := range re.FindAllStringIndex(s, -1) {
		if at[0] > last {
			parts = append(parts, lit(s[last:at[0]]))
		}
		parts = append(parts, expr(s[at[0]:at[1]]))
		last = at[1]
	}
	if parts == nil {
		return lit(s)
	}
	if last < len(s) {
		parts = append(parts, lit(s[last:]))
	}
	return "(" + strings.Join(parts, " || ") + ")"
}
