// Package chart tests the Helm chart in charts/creditgate: helm lint, the
// rendered manifests decoded strictly into Kubernetes types, the values
// schema, the alerts (promtool) and that every metric the dashboard and the
// alerts use is one a running webhook or reconciler exports. The tests shell
// out to helm and promtool from hack/tools.sh's cache or PATH.
package chart

import (
	"fmt"
	"sort"
	"strings"
)

// listKeywords are PromQL keywords followed by a parenthesised list of label
// names, which are not metrics.
var listKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

// operatorKeywords are PromQL keywords and literals that are neither metrics
// nor followed by a label list.
var operatorKeywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true,
	"inf": true, "nan": true,
}

// MetricNames returns the metric names a PromQL expression selects, sorted and
// without duplicates. It is a tokenizer, not a parser (promtool checks the
// syntax): an identifier is a metric name unless it is a keyword, a function
// or aggregation (followed by "(" or by/without), or a label name inside a by/without/on/
// ignoring/group_left/group_right list or a {…} matcher block. String
// literals, comments and […] ranges are skipped. A selector without a metric
// name ({__name__=~"…"}) is an error: the names must be checkable.
func MetricNames(expr string) ([]string, error) {
	seen := map[string]bool{}
	s := expr
	i := 0
	for i < len(s) {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '"' || c == '\'' || c == '`':
			end, err := skipString(s, i)
			if err != nil {
				return nil, err
			}
			i = end
		case c == '{':
			// A matcher block with no metric name before it.
			return nil, fmt.Errorf("selector without a metric name at offset %d in %q", i, expr)
		case c == '[':
			end := strings.IndexByte(s[i:], ']')
			if end < 0 {
				return nil, fmt.Errorf("unclosed [ at offset %d in %q", i, expr)
			}
			i += end + 1
		case isDigit(c) || (c == '.' && i+1 < len(s) && isDigit(s[i+1])):
			// Numbers (1, 0.5, 1e3, 0x1f) and durations (5m, 1h30m).
			for i < len(s) && (isIdentChar(s[i]) || s[i] == '.') {
				i++
			}
		case isIdentStart(c):
			start := i
			for i < len(s) && isIdentChar(s[i]) {
				i++
			}
			word := s[start:i]
			next := skipSpace(s, i)
			lower := strings.ToLower(word)
			switch {
			case listKeywords[lower]:
				if next < len(s) && s[next] == '(' {
					end := strings.IndexByte(s[next:], ')')
					if end < 0 {
						return nil, fmt.Errorf("unclosed label list after %s in %q", word, expr)
					}
					i = next + end + 1
				}
			case operatorKeywords[lower]:
			case next < len(s) && s[next] == '(':
				// A function or an aggregation.
			case listKeywords[strings.ToLower(wordAt(s, next))]:
				// An aggregation with its grouping first: sum by (x) (…).
			default:
				seen[word] = true
				if next < len(s) && s[next] == '{' {
					end, err := skipBraces(s, next)
					if err != nil {
						return nil, err
					}
					i = end
				}
			}
		case strings.IndexByte("+-*/%^=!<>,()@:", c) >= 0:
			i++
		default:
			return nil, fmt.Errorf("unexpected %q at offset %d in %q", c, i, expr)
		}
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// skipString returns the offset just past the string literal starting at i.
func skipString(s string, i int) (int, error) {
	q := s[i]
	for j := i + 1; j < len(s); j++ {
		switch {
		case s[j] == '\\' && q != '`':
			j++
		case s[j] == q:
			return j + 1, nil
		}
	}
	return 0, fmt.Errorf("unterminated string at offset %d in %q", i, s)
}

// skipBraces returns the offset just past the {…} block starting at i,
// skipping string literals inside it.
func skipBraces(s string, i int) (int, error) {
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case '"', '\'', '`':
			end, err := skipString(s, j)
			if err != nil {
				return 0, err
			}
			j = end - 1
		case '}':
			return j + 1, nil
		}
	}
	return 0, fmt.Errorf("unclosed { at offset %d in %q", i, s)
}

// wordAt returns the identifier starting at i, if any.
func wordAt(s string, i int) string {
	j := i
	for j < len(s) && isIdentChar(s[j]) {
		j++
	}
	return s[i:j]
}

func skipSpace(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
		i++
	}
	return i
}

func isDigit(c byte) bool      { return c >= '0' && c <= '9' }
func isIdentStart(c byte) bool { return c == '_' || c == ':' || (c|0x20 >= 'a' && c|0x20 <= 'z') }
func isIdentChar(c byte) bool  { return isIdentStart(c) || isDigit(c) }
