package actions

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MaxBlockFor bounds how long one block-source entry may last: a block
// always ends.
const MaxBlockFor = 24 * time.Hour

// DefaultProtected are the ranges block-source never blocks, whatever the
// policy says: loopback, private (RFC 1918, unique local), link-local,
// carrier-grade NAT and the unspecified addresses.
var DefaultProtected = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("::/128"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("fc00::/7"),
	netip.MustParsePrefix("fe80::/10"),
}

// ErrProtectedSource: the source lies in (or contains) a protected range.
var ErrProtectedSource = errors.New("source is in a protected range")

// BlockEntry is one line of the blocklist: a source denied until Expires.
type BlockEntry struct {
	Prefix  netip.Prefix
	Expires time.Time
}

// ParseSource reads an address or a CIDR; an address becomes its /32 or
// /128. The prefix is masked, so 203.0.113.7/24 reads as 203.0.113.0/24.
func ParseSource(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("source %q: %w", truncateText(s, 60), err)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("source %q: %w", truncateText(s, 60), err)
	}
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("source %q: zoned addresses cannot be blocked", truncateText(s, 60))
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// ProtectedBy returns the protected range the source overlaps, if any. A
// CIDR that contains a protected range overlaps it too.
func ProtectedBy(source netip.Prefix, protected []netip.Prefix) (netip.Prefix, bool) {
	for _, ranges := range [][]netip.Prefix{DefaultProtected, protected} {
		for _, p := range ranges {
			if p.Overlaps(source) {
				return p, true
			}
		}
	}
	return netip.Prefix{}, false
}

// blocklistHeader opens the blocklist the remediator writes. Every other
// line is "deny <prefix>; # expires=<RFC 3339>", which nginx includes as
// is (the comment carries the expiry the remediator enforces).
const blocklistHeader = "# Managed by warden-remediator (block-source); entries are removed when they expire."

// ParseBlocklist reads the blocklist text. Blank lines and comment lines
// are skipped; any other line must be an entry as FormatBlocklist writes it.
func ParseBlocklist(text string) ([]BlockEntry, error) {
	var out []BlockEntry
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		e, err := parseBlockLine(line)
		if err != nil {
			return nil, fmt.Errorf("blocklist line %d: %w", n, err)
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("blocklist: %w", err)
	}
	return out, nil
}

func parseBlockLine(line string) (BlockEntry, error) {
	rule, comment, ok := strings.Cut(line, "#")
	rule = strings.TrimSpace(rule)
	if !ok || !strings.HasPrefix(rule, "deny ") || !strings.HasSuffix(rule, ";") {
		return BlockEntry{}, fmt.Errorf("want \"deny <address or CIDR>; # expires=<time>\", got %q", truncateText(line, 80))
	}
	p, err := ParseSource(strings.TrimSuffix(strings.TrimPrefix(rule, "deny "), ";"))
	if err != nil {
		return BlockEntry{}, err
	}
	v, ok := strings.CutPrefix(strings.TrimSpace(comment), "expires=")
	if !ok {
		return BlockEntry{}, fmt.Errorf("entry %s has no expires=", p)
	}
	t, err := time.Parse(time.RFC3339, strings.TrimSpace(v))
	if err != nil {
		return BlockEntry{}, fmt.Errorf("entry %s: expires: %w", p, err)
	}
	return BlockEntry{Prefix: p, Expires: t}, nil
}

// FormatBlocklist writes entries in the order given.
func FormatBlocklist(entries []BlockEntry) string {
	var b strings.Builder
	b.WriteString(blocklistHeader + "\n")
	for _, e := range entries {
		fmt.Fprintf(&b, "deny %s; # expires=%s\n", e.Prefix, e.Expires.UTC().Format(time.RFC3339))
	}
	return b.String()
}

// activeEntries drops the entries that expired at now.
func activeEntries(entries []BlockEntry, now time.Time) []BlockEntry {
	return slices.DeleteFunc(entries, func(e BlockEntry) bool { return !now.Before(e.Expires) })
}

// blockSource writes the source into the blocklist ConfigMap with its
// expiry (extending an entry already there), refusing protected sources
// and a full list, then reloads the gateway Deployment's pods.
func (e *executor) blockSource(ctx context.Context, log *slog.Logger, req Request) (Result, error) {
	if r, ok := ProtectedBy(req.Source, req.Protected); ok {
		return Result{Object: "ConfigMap/" + req.Blocklist}, permanent(fmt.Errorf("block %s: %w %s", req.Source, ErrProtectedSource, r))
	}
	var until time.Time
	var active int
	res, err := e.editBlocklist(ctx, log, req, func(entries []BlockEntry, now time.Time) ([]BlockEntry, bool, error) {
		entries = activeEntries(entries, now)
		until = now.Add(req.BlockFor).Truncate(time.Second)
		if i := slices.IndexFunc(entries, func(b BlockEntry) bool { return b.Prefix == req.Source }); i >= 0 {
			if !until.After(entries[i].Expires) {
				until = entries[i].Expires
			}
			entries[i].Expires = until
		} else {
			if len(entries) >= req.MaxEntries {
				return nil, false, permanent(fmt.Errorf("block %s: %d active entries already, the most allowed: %w", req.Source, len(entries), ErrBlastRadius))
			}
			entries = append(entries, BlockEntry{Prefix: req.Source, Expires: until})
		}
		active = len(entries)
		return entries, true, nil
	})
	if err != nil {
		return res, err
	}
	what := fmt.Sprintf("blocked %s until %s (%d active entries in ConfigMap %s)", req.Source, until.UTC().Format(time.RFC3339), active, req.Blocklist)
	if req.DryRun {
		what = "dry run: would have " + what
	}
	return e.reloadGateway(ctx, log, req, res, what)
}

// expireBlocks removes the expired entries and, when it removed any,
// reloads the gateway so the block ends there too.
func (e *executor) expireBlocks(ctx context.Context, log *slog.Logger, req Request) (Result, error) {
	var removed []string
	res, err := e.editBlocklist(ctx, log, req, func(entries []BlockEntry, now time.Time) ([]BlockEntry, bool, error) {
		removed = removed[:0]
		for _, b := range entries {
			if !now.Before(b.Expires) {
				removed = append(removed, b.Prefix.String())
			}
		}
		return activeEntries(entries, now), len(removed) > 0, nil
	})
	if err != nil || len(removed) == 0 {
		if err == nil {
			res.Detail = "no expired entries"
		}
		return res, err
	}
	return e.reloadGateway(ctx, log, req, res, "unblocked "+strings.Join(removed, ", ")+" (expired)")
}

// editBlocklist reads the ConfigMap, lets edit change the entries and
// writes them back with the ConfigMap's resourceVersion; on a conflict
// (another replica wrote in between) it starts over on the new content.
func (e *executor) editBlocklist(ctx context.Context, log *slog.Logger, req Request, edit func(entries []BlockEntry, now time.Time) ([]BlockEntry, bool, error)) (Result, error) {
	res := Result{Object: "ConfigMap/" + req.Blocklist}
	cms := e.kube.CoreV1().ConfigMaps(req.Namespace)
	err := e.retry(ctx, log, "update blocklist", func(ctx context.Context) error {
		cm, err := cms.Get(ctx, req.Blocklist, metav1.GetOptions{})
		if err != nil {
			if apierrors.IsNotFound(err) {
				// Creating it would need RBAC on every ConfigMap name.
				return permanent(fmt.Errorf("blocklist ConfigMap %s/%s does not exist (create it with an empty %s): %w", req.Namespace, req.Blocklist, req.BlocklistKey, err))
			}
			return fmt.Errorf("get blocklist ConfigMap %s/%s: %w", req.Namespace, req.Blocklist, err)
		}
		entries, err := ParseBlocklist(cm.Data[req.BlocklistKey])
		if err != nil {
			return permanent(fmt.Errorf("ConfigMap %s/%s key %s: %w", req.Namespace, req.Blocklist, req.BlocklistKey, err))
		}
		entries, write, err := edit(entries, e.now())
		if err != nil || !write {
			return err
		}
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data[req.BlocklistKey] = FormatBlocklist(entries)
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{FieldManager: FieldManager, DryRun: dryRunOpt(req.DryRun)})
		if err != nil {
			return fmt.Errorf("update blocklist ConfigMap %s/%s: %w", req.Namespace, req.Blocklist, err)
		}
		res.Changed = !req.DryRun
		return nil
	})
	return res, err
}

// reloadGateway sends the reload request to the gateway's pods after the
// blocklist changed. The blocklist stays written when the reload fails:
// the failure is reported, and the next reload picks the entry up.
func (e *executor) reloadGateway(ctx context.Context, log *slog.Logger, req Request, res Result, what string) (Result, error) {
	rres, err := e.reload(ctx, log, req)
	res.Detail = what + "; " + rres.Detail
	if err != nil {
		return res, fmt.Errorf("%s, but the gateway reload failed: %w", what, err)
	}
	res.Verified = rres.Verified
	return res, nil
}

func (r Request) validateBlock() error {
	if r.Blocklist == "" || r.BlocklistKey == "" {
		return invalidf("%s needs a blocklist ConfigMap and key", r.Kind)
	}
	if r.Kind == ExpireBlocks {
		return nil
	}
	if !r.Source.IsValid() {
		return invalidf("block-source needs a source")
	}
	if r.BlockFor <= 0 || r.BlockFor > MaxBlockFor {
		return invalidf("block-source duration %s: want more than 0 and at most %s", r.BlockFor, MaxBlockFor)
	}
	if r.MaxEntries < 1 {
		return invalidf("block-source max entries %d: want at least 1", r.MaxEntries)
	}
	return nil
}

// BlocklistConfigMap is an empty blocklist, as the deploy manifests ship it.
func BlocklistConfigMap(namespace, name, key string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Data:       map[string]string{key: FormatBlocklist(nil)},
	}
}

func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
