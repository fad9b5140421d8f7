package certs

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"
)

// certsMaxFileSize caps what is read of one file: certificate bundles are
// small, and a glob that matches something else must not cost memory.
const certsMaxFileSize = 4 << 20

// FilesCollector reads certificates from PEM (or DER) files matched by
// glob patterns at every scrape, so renewed files are picked up.
type FilesCollector struct {
	logger *slog.Logger
	paths  []string
	errors *certsErrorCounter
}

// NewFiles builds the files collector for a validated configuration.
func NewFiles(cfg *FilesConfig, logger *slog.Logger) *FilesCollector {
	return &FilesCollector{
		logger: logger.With("source_kind", certsKindFile),
		paths:  cfg.Paths,
		errors: newCertsErrorCounter(certsKindFile, certsReasonNotFound, certsReasonRead, certsReasonParse),
	}
}

// Name is "certs/files".
func (c *FilesCollector) Name() string { return "certs/files" }

// Collect reads every matching file. A pattern that matches nothing (a file
// that disappeared) and a file that does not parse are reported through the
// source's metrics; neither fails the collector.
func (c *FilesCollector) Collect(ctx context.Context, ch chan<- prometheus.Metric) error {
	seen := map[string]bool{}
	for _, pattern := range c.paths {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("read certificate files: %w", err)
		}
		matches, err := filepath.Glob(pattern)
		if err != nil {
			// Patterns are checked when the configuration loads.
			return fmt.Errorf("glob %q: %w", pattern, err)
		}
		if len(matches) == 0 {
			c.fail(ch, pattern, certsErr(certsReasonNotFound, "no file matches %s", pattern))
			continue
		}
		for _, path := range matches {
			if seen[path] {
				continue
			}
			seen[path] = true
			certs, err := certsReadFile(path)
			if errors.Is(err, errCertsIsDir) {
				continue
			}
			// Certificates that parsed are reported even when another block
			// in the same file did not.
			certsCollectChain(ch, certsKindFile, path, certs, false)
			if err != nil {
				c.fail(ch, path, err)
				continue
			}
			certsSourceSuccess(ch, certsKindFile, path, true)
		}
	}
	c.errors.collect(ch)
	return nil
}

func (c *FilesCollector) fail(ch chan<- prometheus.Metric, source string, err error) {
	reason := certsReason(err, certsReasonRead)
	c.errors.inc(reason)
	c.logger.Debug("reading certificate file failed", "source", source, "reason", reason, "err", err)
	certsSourceSuccess(ch, certsKindFile, source, false)
}

var errCertsIsDir = errors.New("is a directory")

// certsReadFile returns the certificates of one file. A glob such as
// /etc/ssl/certs/* may match directories; they are skipped.
func certsReadFile(path string) ([]*x509.Certificate, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, certsErr(certsReasonNotFound, "%s disappeared: %w", path, err)
		}
		return nil, certsErr(certsReasonRead, "open: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.IsDir() {
		return nil, errCertsIsDir
	}
	data, err := io.ReadAll(io.LimitReader(f, certsMaxFileSize+1))
	if err != nil {
		return nil, certsErr(certsReasonRead, "read %s: %w", path, err)
	}
	if len(data) > certsMaxFileSize {
		return nil, certsErr(certsReasonRead, "%s is larger than %d bytes", path, certsMaxFileSize)
	}
	certs, err := certsParsePEM(data)
	if err != nil {
		return certs, fmt.Errorf("%s: %w", path, err)
	}
	return certs, nil
}

// certsParsePEM returns the certificates of a PEM bundle, skipping every
// other block (private keys above all, which are neither kept nor logged).
// Data without any PEM block is tried as DER. Certificates that parse are
// returned even when another one does not.
func certsParsePEM(data []byte) ([]*x509.Certificate, error) {
	var (
		certs    []*x509.Certificate
		errs     []error
		anyBlock bool
		rest     = data
	)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		anyBlock = true
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			errs = append(errs, fmt.Errorf("certificate %d: %w", len(certs)+len(errs)+1, err))
			continue
		}
		certs = append(certs, cert)
	}
	if !anyBlock && len(data) > 0 {
		if der, err := x509.ParseCertificates(data); err == nil && len(der) > 0 {
			return der, nil
		}
	}
	if len(errs) > 0 {
		return certs, certsErr(certsReasonParse, "%w", errors.Join(errs...))
	}
	if len(certs) == 0 {
		return nil, certsErr(certsReasonParse, "no certificate found")
	}
	return certs, nil
}
