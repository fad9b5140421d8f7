package demo

import (
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// StatusUser is the basic-auth user of the remediators' status pages in
// the demo (Alertmanager keeps using the bearer token).
const StatusUser = "sre"

// writeStatusPassword picks the status pages' password and writes it
// where --web.basic-auth.password-file reads it.
func (e *Env) writeStatusPassword() (string, error) {
	e.statusPassword = "page-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	path := filepath.Join(e.dir, "status-password")
	return path, os.WriteFile(path, []byte(e.statusPassword+"\n"), 0o600)
}

// StatusPassword is the basic-auth password of the status pages.
func (e *Env) StatusPassword() string { return e.statusPassword }

// StatusPageURL is replica i's status page; withCredentials puts the user
// and password in the URL so a browser opens it without a prompt.
func (e *Env) StatusPageURL(i int, withCredentials bool) string {
	u, err := url.Parse(e.RemediatorURLs[i] + "/")
	if err != nil {
		return e.RemediatorURLs[i] + "/"
	}
	if withCredentials {
		u.User = url.UserPassword(StatusUser, e.statusPassword)
	}
	return u.String()
}
