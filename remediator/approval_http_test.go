package remediator

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// The approvals endpoint is off (404, whoever asks) until approvers are
// set, and again once they are replaced by none: a deleted tokens Secret
// must revoke everyone.
func TestApprovalsEndpointOffWithoutApprovers(t *testing.T) {
	const carol = "carol-token-0123456789"
	carolOnly, err := ParseApprovalTokens("carol:" + carol + "\n")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		set  []ApprovalTokens
	}{
		{name: "never set"},
		{name: "set to none", set: []ApprovalTokens{{}}},
		{name: "carol, then none", set: []ApprovalTokens{carolOnly, {}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := &Remediator{}
			for _, s := range tt.set {
				r.SetApprovalTokens(s)
			}
			for _, method := range []string{http.MethodGet, http.MethodPost} {
				req := httptest.NewRequest(method, "/api/v1/approvals/0123456789ab", nil)
				req.Header.Set("Authorization", "Bearer "+carol)
				w := httptest.NewRecorder()
				r.ApprovalsHandler().ServeHTTP(w, req)
				if w.Code != http.StatusNotFound {
					t.Errorf("%s as carol: %d, want 404", method, w.Code)
				}
			}
		})
	}
}
