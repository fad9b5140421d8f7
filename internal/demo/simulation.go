package demo

import (
	"path/filepath"
	"time"
)

// PolicyFile is the policy the remediator replicas run, for a simulation
// of the same policy over the scenario's alert history.
func (e *Env) PolicyFile() string { return filepath.Join(e.dir, "policy.yml") }

// AlertmanagerTiming is how the demo's Alertmanager delivers to the
// remediators (deploy/demo/alertmanager.yml): group_wait 0s, and every
// firing alert again each repeat interval.
func (e *Env) AlertmanagerTiming() (groupWait, repeatInterval time.Duration) {
	return 0, e.opts.RepeatInterval
}
