package exporter

import (
	"strings"
	"testing"
)

// TestParseConfigErrorsNeverShowSecretValues puts a credential where the
// decoder rejects it, in every field that holds or may hold one, and checks
// that the error names the place but never the value.
func TestParseConfigErrorsNeverShowSecretValues(t *testing.T) {
	const pg = "postgres:\n  - name: main\n    dsn: postgres://u@127.0.0.1:1/db\n"
	const rd = "redis:\n  - name: cache\n    address: redis://127.0.0.1:1/0\n"
	const q = "auth:\n  files: [/tmp/auth.log]\n  queries:\n    - name: q\n      dsn: postgres://u@127.0.0.1:1/db\n      sql: select 1\n"
	tests := []struct {
		name   string
		yaml   string
		secret string
	}{
		{"postgres password as a string", pg + "    password: hunter2pw\n", "hunter2pw"},
		{"postgres password as a quoted string", pg + "    password: 'hunter2pw'\n", "hunter2pw"},
		{"postgres long password as a string", pg + "    password: correct-horse-battery\n", "correct"},
		{"postgres password as a mapping key", pg + "    password: {hunter2pw}\n", "hunter2pw"},
		{"postgres password as a repeated key", pg + "    password: {hunter2pw: 1, hunter2pw: 2}\n", "hunter2pw"},
		{"postgres password file of the wrong type", pg + "    password: {file: [hunter2pw]}\n", "hunter2pw"},
		{"postgres password env as a mapping key", pg + "    password: {env: {hunter2pw: 1}}\n", "hunter2pw"},
		{"postgres password in the wrong place", pg + "    max_connections: hunter2pw\n", "hunter2pw"},
		{"postgres password under tables", pg + "    tables: {top_n: hunter2pw}\n", "hunter2pw"},
		{"postgres dsn with password of the wrong type", "postgres:\n  - name: main\n    dsn: [postgres://u:hunter2pw@h/db]\n", "hunter2pw"},
		{"postgres dsn with password in the wrong place", "postgres:\n  - name: main\n    max_connections: 'password=hunter2pw'\n", "hunter2pw"},
		{"postgres short dsn in the wrong place", "postgres:\n  - name: main\n    max_connections: 'pw=hunt'\n", "pw=hunt"},
		{"redis password as a string", rd + "    password: hunter2pw\n", "hunter2pw"},
		{"redis password as a mapping key", rd + "    password: {hunter2pw}\n", "hunter2pw"},
		{"redis password in the wrong place", rd + "    pool_size: hunter2pw\n", "hunter2pw"},
		{"redis username of the wrong type", rd + "    username: {hunter2pw: x}\n", "hunter2pw"},
		{"redis username in the wrong place", rd + "    dial_timeout: hunter2pw\n", "hunter2pw"},
		{"redis address with credentials of the wrong type", "redis:\n  - name: cache\n    address: {redis://u:hunter2pw@h: 1}\n", "hunter2pw"},
		{"auth query password as a string", q + "      password: hunter2pw\n", "hunter2pw"},
		{"auth query password as a mapping key", q + "      password: {hunter2pw}\n", "hunter2pw"},
		{"auth query dsn in the wrong place", q + "      timeout: 'hunter2pw'\n", "hunter2pw"},
		{"auth query dsn of the wrong type", "auth:\n  files: [/tmp/auth.log]\n  queries:\n    - name: q\n      dsn: {postgres://u:hunter2pw@h/db: 1}\n      sql: select 1\n", "hunter2pw"},
		{"postgres password starting with '*'", pg + "    password: *hunter2pw\n", "hunter2pw"},
		{"postgres password starting with '!'", pg + "    password: !hunter2pw x\n", "hunter2pw"},
		{"redis password starting with '!!'", rd + "    password: !!hunter2pw x\n", "hunter2pw"},
		{"redis password as a repeated key of the file", rd + "    password: {file: hunter2pw, file: y}\n", "hunter2pw"},
		{"a password at the top level", "password: hunter2pw\n" + rd, "hunter2pw"},
		{"a password in the scrape section", "scrape: {default_timeout: hunter2pw}\n" + rd, "hunter2pw"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.yaml))
			if err == nil {
				t.Fatal("configuration accepted")
			}
			if strings.Contains(err.Error(), tt.secret) {
				t.Fatalf("error reveals %q: %v", tt.secret, err)
			}
			// yaml gives no line for an alias without an anchor.
			if !strings.Contains(err.Error(), "line ") && !strings.Contains(err.Error(), "unknown anchor") {
				t.Errorf("error does not say where: %v", err)
			}
		})
	}
}
