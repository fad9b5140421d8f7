package secret

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValue(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	t.Setenv("WARDEN_TEST_SECRET", "  fromenv\n")
	t.Setenv("WARDEN_TEST_BLANK", " \n")
	tests := []struct {
		name    string
		s       Secret
		want    string
		wantErr string
	}{
		{name: "unset", s: Secret{}, want: ""},
		{name: "file trimmed", s: Secret{File: write("a", "\t s3cret \r\n")}, want: "s3cret"},
		{name: "env trimmed", s: Secret{Env: "WARDEN_TEST_SECRET"}, want: "fromenv"},
		{name: "missing file", s: Secret{File: filepath.Join(dir, "nope")}, wantErr: "no such file"},
		{name: "empty file", s: Secret{File: write("b", "\n\n")}, wantErr: "secret is empty"},
		{name: "missing env", s: Secret{Env: "WARDEN_TEST_NOT_SET_ANYWHERE"}, wantErr: "is not set"},
		{name: "blank env", s: Secret{Env: "WARDEN_TEST_BLANK"}, wantErr: "secret is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.s.Value()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Value() error = %v, want containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Value() = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestValueRereadsRotatedFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "pw")
	for _, v := range []string{"first", "second"} {
		if err := os.WriteFile(p, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := Secret{File: p}.Value()
		if err != nil || got != v {
			t.Fatalf("Value() = %q, %v; want %q", got, err, v)
		}
	}
}

func TestValidate(t *testing.T) {
	if err := (Secret{File: "x", Env: "Y"}).Validate(); err == nil || !strings.Contains(err.Error(), "not both") {
		t.Fatalf("both sources: err = %v", err)
	}
	p := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(p, []byte("hunter2pw"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := (Secret{File: p}).Validate(); err != nil {
		t.Fatalf("readable file: %v", err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	err := Secret{File: empty}.Validate()
	if !errors.Is(err, ErrEmpty) {
		t.Fatalf("empty file: err = %v, want ErrEmpty", err)
	}
}

func TestErrorsNeverContainTheValue(t *testing.T) {
	// A secret that cannot be used must not leak into the error text.
	p := filepath.Join(t.TempDir(), "hunter2pw-dir")
	if err := os.Mkdir(p, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := ReadFile(p)
	if err == nil {
		t.Fatal("reading a directory succeeded")
	}
	t.Setenv("WARDEN_TEST_SPACE", "   ")
	_, err = Secret{Env: "WARDEN_TEST_SPACE"}.Value()
	if err == nil || strings.Contains(err.Error(), "   ") {
		t.Fatalf("blank env error = %v", err)
	}
}
