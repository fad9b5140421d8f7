//go:build deps

package deps

import (
	_ "github.com/alecthomas/kingpin/v2"
	_ "github.com/cenkalti/backoff/v4"
	_ "github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/prometheus/alertmanager/notify/webhook"
	_ "github.com/prometheus/alertmanager/matcher/compat"
	_ "github.com/prometheus/client_golang/prometheus/testutil"
	_ "github.com/prometheus/common/promslog/flag"
	_ "github.com/prometheus/exporter-toolkit/web/kingpinflag"
	_ "github.com/redis/go-redis/v9"
	_ "go.yaml.in/yaml/v3"
	_ "k8s.io/client-go/kubernetes"
	_ "sigs.k8s.io/controller-runtime/pkg/envtest"
	_ "github.com/prometheus/prometheus/promql/parser"
	_ "github.com/grafana/grafana-foundation-sdk/go/dashboard"
)
