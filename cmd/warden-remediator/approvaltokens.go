package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/warden-sre/warden/remediator"
)

// approvalTokensFile keeps the approvals endpoint's credentials in step
// with --web.approvals-tokens-file. The shipped Deployment mounts the file
// from an optional Secret, so a missing file (an empty mount) or one
// without any name:token line turns the endpoint off; a malformed or
// unreadable file is an error: at start the binary refuses to run, later
// the credentials in force stay as they were. Kubernetes rewrites a
// mounted Secret in place, so the file is re-read periodically as well as
// on reload: revoking a person's token needs no restart.
type approvalTokensFile struct {
	path   string
	logger *slog.Logger
	set    func(remediator.ApprovalTokens)

	mu sync.Mutex
	// applied identifies what is in force (the content's hash, or why
	// the endpoint is off); refused, the content last refused, so that
	// the periodic re-read logs a bad file once, not every interval.
	applied, refused string
}

// approvalTokensRead is one reading of the file.
type approvalTokensRead struct {
	tokens remediator.ApprovalTokens
	// off says why the endpoint is off; empty when tokens has approvers.
	off string
	// version identifies the content read, never holding a token.
	version string
}

// read reads and parses the file. Errors name the file and the line,
// never a token.
func (a *approvalTokensFile) read() (approvalTokensRead, error) {
	raw, err := os.ReadFile(a.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return approvalTokensRead{off: "the file does not exist (is the Secret created?)", version: "missing"}, nil
	case err != nil:
		return approvalTokensRead{version: "unreadable: " + err.Error()}, fmt.Errorf("--web.approvals-tokens-file: %w", err)
	}
	sum := sha256.Sum256(raw)
	version := hex.EncodeToString(sum[:])
	t, err := remediator.ParseApprovalTokens(string(raw))
	switch {
	case errors.Is(err, remediator.ErrNoApprovalTokens):
		return approvalTokensRead{off: "the file has no name:token line", version: version}, nil
	case err != nil:
		return approvalTokensRead{version: version}, fmt.Errorf("--web.approvals-tokens-file %s: %w", a.path, err)
	}
	return approvalTokensRead{tokens: t, version: version}, nil
}

// apply puts a reading in force and logs when the endpoint turns on or
// off or its approvers change.
func (a *approvalTokensFile) apply(r approvalTokensRead) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.refused = ""
	if r.version == a.applied {
		return
	}
	a.set(r.tokens)
	a.applied = r.version
	if r.off != "" {
		a.logger.Info("approvals endpoint off: /api/v1/approvals answers 404", "file", a.path, "reason", r.off)
		return
	}
	a.logger.Info("approvals endpoint on", "file", a.path, "approvers", r.tokens.Len())
}

// watch re-reads the file every interval until ctx ends.
func (a *approvalTokensFile) watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r, err := a.read()
		if err == nil {
			a.apply(r)
			continue
		}
		a.mu.Lock()
		if r.version != a.refused {
			a.refused = r.version
			a.logger.Error("approvals tokens file refused, the approvers in force stay", "err", err)
		}
		a.mu.Unlock()
	}
}
