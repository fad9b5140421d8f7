// Package browser runs a headless Chromium for tests that must see a page
// the way a person does (the remediator's status page, the HTML report):
// rendered, with the DOM a browser builds, and as a screenshot someone can
// look at afterwards.
package browser

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// chromiumPaths are where Debian's chromium package (scripts/install-deps.sh)
// and the usual alternatives put the binary.
var chromiumPaths = []string{"chromium", "chromium-browser", "google-chrome"}

// Chromium returns the path of the browser binary: $WARDEN_CHROMIUM, else
// the first of chromiumPaths found on $PATH.
func Chromium() (string, error) {
	if p := os.Getenv("WARDEN_CHROMIUM"); p != "" {
		return p, nil
	}
	for _, name := range chromiumPaths {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no Chromium found (tried %v; scripts/install-deps.sh installs Debian's chromium)", chromiumPaths)
}

// Start runs a headless Chromium with a fresh profile for the test and
// returns a browser tab's context, valid until the test ends. A test that
// needs a browser is skipped under -short, like the tests that need a
// server; otherwise a missing browser fails the test.
func Start(t testing.TB) context.Context {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a browser (skipped under -short)")
	}
	path, err := Chromium()
	if err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1000),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	// The first action starts the browser, whose life is tied to the
	// context of that action: it must be ctx itself, not one with a
	// shorter deadline.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	return ctx
}

// Screenshot saves a full-page PNG of the current page as name (".png" is
// added) in $WARDEN_SCREENSHOT_DIR if set, else in the test's artifact
// directory (kept with go test -artifacts), and logs where it is.
func Screenshot(ctx context.Context, t *testing.T, name string) string {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	dir := os.Getenv("WARDEN_SCREENSHOT_DIR")
	if dir == "" {
		dir = t.ArtifactDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
	return path
}

// SetAuthorization makes the tab send an Authorization header with every
// request (for example "Basic " + base64 of user:password), as a person's
// browser does after the login prompt.
func SetAuthorization(ctx context.Context, t testing.TB, value string) {
	t.Helper()
	if _, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
		Headers: network.Headers{"Authorization": value},
	}); err != nil {
		t.Fatalf("set Authorization header: %v", err)
	}
}

// BasicAuth is the Authorization header value for user and password.
func BasicAuth(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

// Text returns the visible text of the element sel selects (a CSS
// selector, or a text search), failing the test when it cannot.
func Text(ctx context.Context, t testing.TB, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(sel))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}
