// Package actions carries out the remediator's Level-1 fixes against
// Kubernetes (client-go) and Redis (go-redis). It knows nothing of alerts or
// policy: the caller has already decided that an action is allowed, and on
// which target.
package actions

import (
	"context"
	"net/netip"
	"time"
)

// Kind names an action.
type Kind string

// The Level-1 actions.
const (
	Restart    Kind = "restart"
	Scale      Kind = "scale"
	Recycle    Kind = "recycle"
	FlushCache Kind = "flush-cache"
	Reload     Kind = "reload"
	// BlockSource writes a source into the gateway's blocklist ConfigMap
	// and reloads the gateway; ExpireBlocks removes the expired entries.
	BlockSource  Kind = "block-source"
	ExpireBlocks Kind = "expire-blocks"
)

// Request is one action on one target, with every name already resolved
// and checked against the policy's allowlist.
type Request struct {
	Kind       Kind
	Namespace  string
	Deployment string // restart, scale, recycle (owning workload), reload
	Pod        string // recycle

	// scale: exactly one of Replicas (set) or Delta (add, may be negative).
	Replicas    *int32
	Delta       *int32
	MinReplicas int32
	MaxReplicas int32

	// recycle: at most this fraction of the workload's pods may be removed
	// within Window (counted by the caller's audit; see RecentlyRecycled).
	MaxFraction      float64
	RecentlyRecycled int

	// flush-cache
	Redis RedisTarget

	// reload: HTTP request sent to every ready pod of Deployment.
	ReloadScheme string // http or https
	ReloadPort   int
	ReloadPath   string
	ReloadMethod string

	// block-source and expire-blocks: the blocklist ConfigMap (in
	// Namespace) and its data key; Deployment and the Reload fields name
	// the gateway reloaded after a change. Source is blocked for BlockFor
	// unless it overlaps DefaultProtected or Protected, or MaxEntries
	// entries are active already.
	Blocklist    string
	BlocklistKey string
	Source       netip.Prefix
	BlockFor     time.Duration
	MaxEntries   int
	Protected    []netip.Prefix

	// Reason is written into annotations and events (alert name and
	// fingerprint).
	Reason  string
	DryRun  bool
	Timeout time.Duration
}

// RedisTarget is a Redis server and database to flush.
type RedisTarget struct {
	Name     string
	Address  string // host:port
	Username string
	Password string
	TLS      bool
	DB       int
}

// Result says what an action changed and whether the change was verified.
type Result struct {
	// Changed is false for dry runs and for no-op outcomes (e.g. already at
	// the requested replica count).
	Changed bool
	// Verified is true when a read-back confirmed the change (generation
	// advanced, FLUSHDB returned OK, reload endpoints answered 2xx).
	Verified bool
	// Object is the Kubernetes object the action touched, for events:
	// "Deployment/auth-service", "Pod/auth-service-abc".
	Object string
	Detail string
}

// Executor runs actions. Errors are classified by IsTransient; transient
// failures have already been retried with exponential backoff within the
// request's timeout when Run returns.
type Executor interface {
	Run(ctx context.Context, req Request) (Result, error)
}
