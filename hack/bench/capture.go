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
// included) with its arguments: pgbench gets the very SQL the service runs.
type capture struct {
	mu          sync.Mutex
	on, lastEnd bool
	stmts       []captured
	trip        int
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
	for len(args) > 0 {
		switch args[0].(type) {
		case pgx.QueryExecMode, pgx.QueryResultFormats, pgx.QueryResultFormatsByOID, pgx.QueryRewriter:
			args = args[1:]
			continue
		}
		break
	}
	if c.lastEnd || c.trip == 0 {
		c.trip++
	}
	c.lastEnd = false
	c.stmts = append(c.stmts, captured{sql: d.SQL, args: append([]any(nil), args...), trip: c.trip})
	return ctx
}

func (c *capture) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {
	c.mu.Lock()
	c.lastEnd = true
	c.mu.Unlock()
}

// record runs op with capturing on and returns what it sent.
func (c *capture) record(op func() error) ([]captured, error) {
	c.mu.Lock()
	c.on, c.stmts, c.trip = true, nil, 0
	c.mu.Unlock()
	err := op()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.on = false
	return c.stmts, err
}

// trips is how many round trips the statements record returned took.
func trips(stmts []captured) int {
	if len(stmts) == 0 {
		return 0
	}
	return stmts[len(stmts)-1].trip
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
// become pgbench variables (-M prepared makes them parameters again). With
// pipelines, what the service sent together is sent together. It fails if a
// marker never appears or its value is left in the SQL.
func pgbenchScript(stmts []captured, header string, markers []*marker, pipelines bool) (string, error) {
	var texts []string
	for _, m := range markers {
		m.hits = 0
		if m.text {
			texts = append(texts, regexp.QuoteMeta(m.value))
		}
	}
	inText := regexp.MustCompile(strings.Join(texts, "|"))
	find := func(value string, text bool) *marker {
		for _, m := range markers {
			if m.value == value && m.text == text {
				m.hits++
				return m
			}
		}
		return nil
	}
	substitute := func(a any) string {
		if v, ok := a.(driver.Valuer); ok {
			a, _ = v.Value()
		}
		switch v := a.(type) {
		case nil:
			return "NULL"
		case int, int32, int64:
			if m := find(fmt.Sprint(v), false); m != nil {
				return m.expr
			}
			return fmt.Sprint(v)
		case bool:
			return strconv.FormatBool(v)
		case []byte:
			return fmt.Sprintf(`'\x%x'`, v)
		case time.Time:
			// Typed: its colons make protectColons split it into text pieces.
			return quote(v.Format(time.RFC3339Nano)) + "::timestamptz"
		case string:
			if texts == nil {
				return quote(v)
			}
			return concat(v, inText, quote, func(value string) string { return find(value, true).expr })
		}
		return quote(fmt.Sprint(a))
	}
	var b strings.Builder
	b.WriteString(header)
	for i, st := range stmts {
		pipeline := pipelines && (i > 0 && stmts[i-1].trip == st.trip || i+1 < len(stmts) && stmts[i+1].trip == st.trip)
		if pipeline && (i == 0 || stmts[i-1].trip != st.trip) {
			b.WriteString("\\startpipeline\n")
		}
		var err error
		q := param.ReplaceAllStringFunc(st.sql, func(p string) string {
			n, _ := strconv.Atoi(p[1:])
			if n < 1 || n > len(st.args) {
				err = fmt.Errorf("capture: %s without its argument in %q", p, st.sql)
				return p
			}
			return substitute(st.args[n-1])
		})
		if err != nil {
			return "", err
		}
		// pgbench reads a statement up to its semicolon; newlines are fine.
		b.WriteString(strings.TrimSpace(protectColons(q)) + ";\n")
		if pipeline && (i+1 == len(stmts) || stmts[i+1].trip != st.trip) {
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
	matches := re.FindAllString(s, -1)
	if matches == nil {
		return lit(s)
	}
	var parts []string
	for i, text := range re.Split(s, -1) { // one more than matches
		if text != "" {
			parts = append(parts, lit(text))
		}
		if i < len(matches) {
			parts = append(parts, expr(matches[i]))
		}
	}
	return "(" + strings.Join(parts, " || ") + ")"
}
