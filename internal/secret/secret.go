// Package secret reads credentials from a file or an environment variable,
// the one way both binaries do it.
//
// Re-read policy: Value reads its source every time it is called, so a
// rotated file takes effect at the next call. Callers choose when to call:
// the exporter on every new connection, the remediator when its policy is
// loaded or reloaded. Surrounding white space is trimmed, as Alertmanager
// and Prometheus do for credentials_file, and an empty value is an error.
package secret

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// ErrEmpty is returned when a source exists but holds only white space.
var ErrEmpty = errors.New("secret is empty")

// Secret names where a credential comes from; it never holds the value in
// the configuration file itself.
type Secret struct {
	File string `yaml:"file"`
	Env  string `yaml:"env"`
}

// IsSet reports whether the secret names a source.
func (s Secret) IsSet() bool { return s.File != "" || s.Env != "" }

// Validate checks that exactly one source is named and that it can be read.
func (s Secret) Validate() error {
	if s.File != "" && s.Env != "" {
		return errors.New("set file or env, not both")
	}
	_, err := s.Value()
	return err
}

// Value reads the secret now. An unset Secret yields "" and no error.
func (s Secret) Value() (string, error) {
	switch {
	case s.File != "":
		return ReadFile(s.File)
	case s.Env != "":
		v, ok := os.LookupEnv(s.Env)
		if !ok {
			return "", fmt.Errorf("environment variable %s is not set", s.Env)
		}
		v = strings.TrimSpace(v)
		if v == "" {
			return "", fmt.Errorf("environment variable %s: %w", s.Env, ErrEmpty)
		}
		return v, nil
	}
	return "", nil
}

// ReadFile reads a credential file, trims surrounding white space and
// refuses an empty one. The error names the file, never its content.
func ReadFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read secret file: %w", err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("secret file %s: %w", path, ErrEmpty)
	}
	return v, nil
}
