package main

import "testing"

func TestProtectColons(t *testing.T) {
	for in, want := range map[string]string{
		`SELECT 'api:' || id || ':debit:' || $2`:   `SELECT 'api:' || id || (':' || 'debit:') || $2`,
		`x = 'a:b' AND y = 'it''s:1' AND z = '::'`: `x = ('a' || ':' || 'b') AND y = ('it''s' || ':' || '1') AND z = '::'`,
		`SELECT now()::text, ':cg_user'`:           `SELECT now()::text, (':' || 'cg_user')`,
		`no literals :cg_user`:                     `no literals :cg_user`,
	} {
		if got := protectColons(in); got != want {
			t.Errorf("protectColons(%q)\n got %q\nwant %q", in, got, want)
		}
	}
}
