package certs

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkCertsScrape1000Endpoints measures one scrape of 1,000 TLS
// endpoints, each its own loopback listener (its own port, accept loop and
// handshake), presenting a leaf and an intermediate (ECDSA P-256). Server
// and client share the machine, so ns/op includes the servers' side of
// every handshake.
func BenchmarkCertsScrape1000Endpoints(b *testing.B) {
	const endpoints = 1000
	certsRaiseFileLimit(b, endpoints+512)
	chain := certsNewChain(b)
	cert := chain.Leaf.TLSCertificate(chain.Intermediate)
	ca := certsWriteFile(b, b.TempDir(), "ca.pem", chain.Root.CertPEM())

	targets := make([]Endpoint, endpoints)
	for i := range targets {
		targets[i] = Endpoint{Address: certsServeTLS(b, cert, nil), ServerName: "auth.warden.test"}
	}

	for _, concurrency := range []int{16, 64} {
		b.Run(fmt.Sprintf("concurrency=%d", concurrency), func(b *testing.B) {
			c := certsEndpoints(b, &EndpointsConfig{CAFile: ca, Concurrency: concurrency, Targets: targets})
			ctx := context.Background()
			check := true
			b.ReportAllocs()
			cpuStart := certsProcessCPU(b)
			for b.Loop() {
				ctx, cancel := context.WithTimeout(ctx, time.Minute)
				if check {
					// The first scrape must read every endpoint, or the
					// benchmark measures failures.
					got, err := certsCollect(b, ctx, c)
					if err != nil {
						b.Fatal(err)
					}
					ok := 0
					for key, v := range got {
						if strings.HasPrefix(key, "warden_certs_chain_verified{") && v == 1 {
							ok++
						}
					}
					if ok != endpoints {
						b.Fatalf("%d of %d endpoints read and verified", ok, endpoints)
					}
					check = false
				} else {
					ch := make(chan prometheus.Metric, 8*endpoints)
					if err := c.Collect(ctx, ch); err != nil {
						b.Fatal(err)
					}
				}
				cancel()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/endpoints, "ns/endpoint")
			// CPU time of the whole process (probes and the servers' side of
			// each handshake): unlike ns/op, it does not grow when other
			// processes compete for the machine.
			b.ReportMetric(float64((certsProcessCPU(b)-cpuStart).Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}

func certsProcessCPU(b *testing.B) time.Duration {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// certsRaiseFileLimit lifts the soft limit on open files: every listener
// holds a descriptor, and each probe in flight two more.
func certsRaiseFileLimit(b *testing.B, want uint64) {
	b.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	if lim.Cur >= want {
		return
	}
	if lim.Max < want {
		b.Fatalf("open file limit %d (hard %d) is below the %d the benchmark needs: raise it with ulimit -n", lim.Cur, lim.Max, want)
	}
	old := lim.Cur
	lim.Cur = want
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		lim.Cur = old
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	})
}
