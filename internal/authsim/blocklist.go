package authsim

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
)

// Gateway is the simulated nginx in front of the service: the sources its
// blocklist file denies never reach the service, so they leave no log
// line. The file holds nginx `deny <address or CIDR>;` lines (comments
// and blank lines are skipped), as warden-remediator's block-source
// writes them; like nginx, the gateway reads it at start and on POST
// /-/reload, not when the file changes.
type Gateway struct {
	path string

	mu     sync.RWMutex
	denied []netip.Prefix
}

// NewGateway reads the blocklist file; a missing file is an empty list.
func NewGateway(path string) (*Gateway, error) {
	g := &Gateway{path: path}
	if err := g.Reload(); err != nil {
		return nil, err
	}
	return g, nil
}

// Reload re-reads the blocklist file. On error the previous list stays.
func (g *Gateway) Reload() error {
	f, err := os.Open(g.path)
	if errors.Is(err, os.ErrNotExist) {
		g.set(nil)
		return nil
	}
	if err != nil {
		return fmt.Errorf("blocklist: %w", err)
	}
	defer f.Close()
	denied, err := parseDenyLines(f)
	if err != nil {
		return fmt.Errorf("blocklist %s: %w", g.path, err)
	}
	g.set(denied)
	return nil
}

func (g *Gateway) set(denied []netip.Prefix) {
	g.mu.Lock()
	g.denied = denied
	g.mu.Unlock()
}

func parseDenyLines(r io.Reader) ([]netip.Prefix, error) {
	var out []netip.Prefix
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		v, ok := strings.CutPrefix(line, "deny ")
		if !ok || !strings.HasSuffix(v, ";") {
			return nil, fmt.Errorf("line %d: want \"deny <address or CIDR>;\", got %q", n, line)
		}
		v = strings.TrimSpace(strings.TrimSuffix(v, ";"))
		p, err := netip.ParsePrefix(v)
		if err != nil {
			a, aerr := netip.ParseAddr(v)
			if aerr != nil {
				return nil, fmt.Errorf("line %d: %q is neither an address nor a CIDR", n, v)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, sc.Err()
}

// Denied reports whether the gateway refuses the source.
func (g *Gateway) Denied(source string) bool {
	if g == nil {
		return false
	}
	a, err := netip.ParseAddr(source)
	if err != nil {
		return false
	}
	a = a.Unmap()
	g.mu.RLock()
	defer g.mu.RUnlock()
	for _, p := range g.denied {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Denies returns the denied ranges as last loaded.
func (g *Gateway) Denies() []string {
	g.mu.RLock()
	defer g.mu.RUnlock()
	out := make([]string, len(g.denied))
	for i, p := range g.denied {
		out[i] = p.String()
	}
	return out
}

// ServeHTTP answers POST /-/reload (re-read the file; 500 keeps the old
// list) and GET /-/blocklist (the denied ranges as loaded).
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/-/reload" && r.Method == http.MethodPost:
		if err := g.Reload(); err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"denied": g.Denies()})
	case r.URL.Path == "/-/blocklist" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, map[string]any{"denied": g.Denies()})
	default:
		http.Error(w, "POST /-/reload or GET /-/blocklist", http.StatusMethodNotAllowed)
	}
}

// SetGateway puts the gateway in front of the simulator: its denied
// sources generate no traffic, and POST /api/v1/auth/login from them is
// refused with 403 before the service sees it.
func (s *Sim) SetGateway(g *Gateway) {
	s.mu.Lock()
	s.gateway = g
	s.mu.Unlock()
}

// deniedLocked reports whether the gateway refuses src.
func (s *Sim) deniedLocked(src string) bool { return s.gateway.Denied(src) }
