package main

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warden-sre/warden/internal/testenv"
	"github.com/warden-sre/warden/remediator"
)

const (
	carolToken = "carol-token-0123456789"
	daveToken  = "dave-token-0123456789"
)

// A missing file (the optional Secret's empty mount) or one without any
// name:token line turns the endpoint off; a malformed or unreadable one is
// an error that names the file and the line, never a token.
func TestApprovalTokensFileRead(t *testing.T) {
	dir := t.TempDir()
	emptyMount := filepath.Join(dir, "empty-mount")
	if err := os.Mkdir(emptyMount, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name      string
		path      string
		wantOff   string
		wantN     int
		wantErr   []string
		notInErrs []string
	}{
		{name: "empty Secret mount", path: filepath.Join(emptyMount, "tokens"), wantOff: "does not exist"},
		{name: "empty file", path: testenv.WriteFile(t, dir, "empty", ""), wantOff: "no name:token line"},
		{name: "comments only", path: testenv.WriteFile(t, dir, "comments", "# nobody approves over HTTP\n\n"), wantOff: "no name:token line"},
		{name: "two approvers", path: testenv.WriteFile(t, dir, "good", "# on-call\ncarol:"+carolToken+"\ndave: "+daveToken+" \n"), wantN: 2},
		{
			name: "short token", path: testenv.WriteFile(t, dir, "short", "carol:"+carolToken+"\ndave:short-secret\n"),
			wantErr: []string{"--web.approvals-tokens-file", "line 2", "dave", "shorter than 16"}, notInErrs: []string{"short-secret", carolToken},
		},
		{
			name: "line without a name", path: testenv.WriteFile(t, dir, "noname", "fedcba9876543210-secret\n"),
			wantErr: []string{"line 1", "want name:token"}, notInErrs: []string{"fedcba9876543210-secret"},
		},
		{
			name: "a token shared by two people", path: testenv.WriteFile(t, dir, "shared", "carol:"+carolToken+"\ndave:"+carolToken+"\n"),
			wantErr: []string{"line 2", "already someone else's"}, notInErrs: []string{carolToken},
		},
		{name: "a directory, not the file in it", path: emptyMount, wantErr: []string{"--web.approvals-tokens-file", "is a directory"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := &approvalTokensFile{path: tt.path}
			r, err := a.read()
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("read: no error, off %q, %d approvers", r.off, r.tokens.Len())
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not say %q", err, w)
					}
				}
				for _, secret := range tt.notInErrs {
					if strings.Contains(err.Error(), secret) {
						t.Errorf("error %q reveals a token", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if !strings.Contains(r.off, tt.wantOff) || (tt.wantOff == "") != (r.off == "") || r.tokens.Len() != tt.wantN {
				t.Errorf("read: off %q, %d approvers; want off %q, %d approvers", r.off, r.tokens.Len(), tt.wantOff, tt.wantN)
			}
		})
	}
}

// The log names the file and the number of approvers, never a token, and
// says when the endpoint turns off.
func TestApprovalTokensApplyLogsNoToken(t *testing.T) {
	dir := t.TempDir()
	path := testenv.WriteFile(t, dir, "tokens", "carol:"+carolToken+"\n")
	var log bytes.Buffer
	var inForce []int
	a := &approvalTokensFile{path: path, logger: slog.New(slog.NewTextHandler(&log, nil))}
	a.set = func(tok remediator.ApprovalTokens) { inForce = append(inForce, tok.Len()) }
	for _, content := range []string{"carol:" + carolToken + "\n", "carol:" + carolToken + "\n", "carol:" + carolToken + "\ndave:" + daveToken + "\n", ""} {
		testenv.WriteFile(t, dir, "tokens", content)
		r, err := a.read()
		if err != nil {
			t.Fatal(err)
		}
		a.apply(r)
	}
	if want := []int{1, 2, 0}; !slices.Equal(inForce, want) {
		t.Errorf("approvers put in force %v, want %v (an unchanged file is not applied again)", inForce, want)
	}
	for _, w := range []string{"approvals endpoint on", "approvers=2", "approvals endpoint off"} {
		if !strings.Contains(log.String(), w) {
			t.Errorf("log lacks %q:\n%s", w, log.String())
		}
	}
	if strings.Contains(log.String(), carolToken) || strings.Contains(log.String(), daveToken) {
		t.Errorf("log reveals a token:\n%s", log.String())
	}
}

// approvalsStatus is the status of GET /api/v1/approvals with token.
func approvalsStatus(t *testing.T, base, token string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+"/api/v1/approvals", nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// How the binary starts with each state of --web.approvals-tokens-file:
// off with 404 and a log line when it is not set, missing (the shipped
// Deployment's optional Secret not created) or without approvers; on with
// a good file; refusing to start, naming the problem, with a bad one.
func TestApprovalsEndpointAtStart(t *testing.T) {
	dir := t.TempDir()
	emptyMount := filepath.Join(dir, "approvers")
	if err := os.Mkdir(emptyMount, 0o755); err != nil {
		t.Fatal(err)
	}
	webhookToken := testenv.WriteFile(t, dir, "webhook-token", "webhook-token-0123456789")
	policy := testenv.WriteFile(t, dir, "remediator.yml", restartPolicy("r", "A", "rust-security"))
	for _, tt := range []struct {
		name string
		args []string
		// wantExit: the start is refused with these words in the output.
		wantExit []string
		wantLog  string
		// status of GET /api/v1/approvals without a token and with carol's.
		wantAnon, wantCarol int
	}{
		{name: "flag not set", wantLog: "no --web.approvals-tokens-file", wantAnon: 404, wantCarol: 404},
		{name: "Secret not created: empty mount", args: []string{"--web.approvals-tokens-file=" + filepath.Join(emptyMount, "tokens")}, wantLog: "does not exist", wantAnon: 404, wantCarol: 404},
		{name: "file without approvers", args: []string{"--web.approvals-tokens-file=" + testenv.WriteFile(t, dir, "none", "# none yet\n")}, wantLog: "no name:token line", wantAnon: 404, wantCarol: 404},
		{name: "two approvers", args: []string{"--web.approvals-tokens-file=" + testenv.WriteFile(t, dir, "good", "carol:"+carolToken+"\ndave:"+daveToken+"\n")}, wantLog: "approvers=2", wantAnon: 401, wantCarol: 200},
		{name: "malformed file", args: []string{"--web.approvals-tokens-file=" + testenv.WriteFile(t, dir, "bad", "carol:"+carolToken+"\ndave "+daveToken+"\n")}, wantExit: []string{"--web.approvals-tokens-file", "line 2: want name:token"}},
		{name: "short token", args: []string{"--web.approvals-tokens-file=" + testenv.WriteFile(t, dir, "short", "carol:tooshort\n")}, wantExit: []string{"line 1", "carol", "shorter than 16"}},
		{name: "the mount directory instead of the file", args: []string{"--web.approvals-tokens-file=" + emptyMount}, wantExit: []string{"--web.approvals-tokens-file", "is a directory"}},
		{name: "negative refresh interval", args: []string{"--web.approvals-tokens-file=" + emptyMount + "/tokens", "--web.approvals-tokens-refresh-interval=-1s"}, wantExit: []string{"--web.approvals-tokens-refresh-interval"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"--web.bearer-token-file=" + webhookToken}, tt.args...)
			if tt.wantExit != nil {
				// Checked before anything else: --config.check and a
				// start both refuse, and no token leaks.
				for _, mode := range [][]string{{"--config.check"}, {"--kubeconfig=" + filepath.Join(dir, "kubeconfig-never-read")}} {
					code, out := testenv.RunBinary(t, 30*time.Second, binary(t), append(append([]string{"--config.file=" + policy}, mode...), args...)...)
					if code != 1 {
						t.Errorf("%v: exit code %d, want 1:\n%s", mode, code, out)
					}
					for _, w := range tt.wantExit {
						if !bytes.Contains(out, []byte(w)) {
							t.Errorf("%v: output does not say %q:\n%s", mode, w, out)
						}
					}
					if bytes.Contains(out, []byte(daveToken)) || bytes.Contains(out, []byte("tooshort")) {
						t.Errorf("%v: output reveals a token:\n%s", mode, out)
					}
				}
				return
			}
			p := startRemediator(t, policy, args...)
			p.waitOutput(t, "the approvals endpoint's state logged", func(out string) bool {
				return strings.Contains(out, "approvals endpoint") && strings.Contains(out, tt.wantLog)
			})
			if code := approvalsStatus(t, p.URL, ""); code != tt.wantAnon {
				t.Errorf("GET /api/v1/approvals without a token: %d, want %d", code, tt.wantAnon)
			}
			if code := approvalsStatus(t, p.URL, carolToken); code != tt.wantCarol {
				t.Errorf("GET /api/v1/approvals as carol: %d, want %d", code, tt.wantCarol)
			}
			if strings.Contains(p.Output(), carolToken) {
				t.Errorf("the log reveals a token:\n%s", p.Output())
			}
		})
	}
}

// The mounted Secret changes in place: creating it turns the endpoint on,
// a change of approvers takes effect, a malformed change is refused and
// logged with the approvers in force kept, and deleting it turns the
// endpoint off; all without a restart. SIGHUP re-reads it too.
func TestApprovalsEndpointFollowsTheTokensFile(t *testing.T) {
	dir := t.TempDir()
	mount := filepath.Join(dir, "approvers")
	if err := os.Mkdir(mount, 0o755); err != nil {
		t.Fatal(err)
	}
	tokens := filepath.Join(mount, "tokens")
	webhookToken := testenv.WriteFile(t, dir, "webhook-token", "webhook-token-0123456789")
	policy := testenv.WriteFile(t, dir, "remediator.yml", restartPolicy("r", "A", "rust-security"))

	periodic := startRemediator(t, policy, "--web.bearer-token-file="+webhookToken,
		"--web.approvals-tokens-file="+tokens, "--web.approvals-tokens-refresh-interval=100ms")
	onReload := startRemediator(t, policy, "--web.bearer-token-file="+webhookToken,
		"--web.approvals-tokens-file="+tokens, "--web.approvals-tokens-refresh-interval=0")

	for _, step := range []struct {
		name    string
		content string // "" removes the file
		// status of GET /api/v1/approvals for carol and dave afterwards.
		wantCarol, wantDave int
		wantLog             string
	}{
		{name: "Secret created", content: "carol:" + carolToken + "\n", wantCarol: 200, wantDave: 401, wantLog: "approvers=1"},
		{name: "dave added, carol revoked", content: "dave:" + daveToken + "\n", wantCarol: 401, wantDave: 200},
		{name: "malformed change kept out", content: "dave:" + daveToken + "\ncarol " + carolToken + "\n", wantCarol: 401, wantDave: 200, wantLog: "approvals tokens file refused"},
		{name: "Secret deleted", content: "", wantCarol: 404, wantDave: 404, wantLog: "does not exist"},
	} {
		t.Run(step.name, func(t *testing.T) {
			// Kubernetes swaps the mounted file as a whole.
			if step.content == "" {
				if err := os.Remove(tokens); err != nil {
					t.Fatal(err)
				}
			} else {
				tmp := testenv.WriteFile(t, dir, "tokens.new", step.content)
				if err := os.Rename(tmp, tokens); err != nil {
					t.Fatal(err)
				}
			}
			if err := onReload.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			for _, p := range []*remediatorProc{periodic, onReload} {
				testenv.WaitFor(t, time.Minute, "the change to take effect", func() bool {
					return approvalsStatus(t, p.URL, carolToken) == step.wantCarol && approvalsStatus(t, p.URL, daveToken) == step.wantDave
				})
			}
			if step.wantLog != "" {
				periodic.waitOutput(t, "the change logged", func(out string) bool { return strings.Contains(out, step.wantLog) })
			}
		})
	}
	for _, p := range []*remediatorProc{periodic, onReload} {
		if out := p.Output(); strings.Contains(out, carolToken) || strings.Contains(out, daveToken) {
			t.Errorf("the log reveals a token:\n%s", out)
		}
	}
}
