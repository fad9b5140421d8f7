package redis

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"

	"github.com/warden-sre/warden/internal/testenv"
)

// redisCommandCounter counts the commands (each one a round trip) a client
// sends.
type redisCommandCounter struct{ n atomic.Int64 }

func (h *redisCommandCounter) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (h *redisCommandCounter) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h *redisCommandCounter) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}

// BenchmarkRedisScrape measures one full Collect against a loopback Redis
// with keys in three databases, next to the bare PING + INFO round trips
// it needs (the floor).
func BenchmarkRedisScrape(b *testing.B) {
	if testing.Short() {
		b.Skip("starts its own server; skipped with -short")
	}
	r := testenv.StartRedis(b)
	for db, n := range map[int]int{0: 100, 3: 10, 7: 1} {
		rc := redisClient(b, r.Addr, db)
		for i := range n {
			if err := rc.Set(context.Background(), fmt.Sprintf("k%d", i), "v", time.Duration(i%2)*time.Hour).Err(); err != nil {
				b.Fatal(err)
			}
		}
	}
	c, _ := newTestRedisCollector(b, Target{Address: r.Addr})
	counter := &redisCommandCounter{}
	c.client.AddHook(counter)
	ch := make(chan prometheus.Metric, 256)

	b.Run("collect", func(b *testing.B) {
		ctx := b.Context()
		b.ReportAllocs()
		counter.n.Store(0)
		metrics := 0
		for b.Loop() {
			if err := c.Collect(ctx, ch); err != nil {
				b.Fatal(err)
			}
			for len(ch) > 0 {
				<-ch
				metrics++
			}
		}
		b.ReportMetric(float64(counter.n.Load())/float64(b.N), "round_trips/op")
		b.ReportMetric(float64(metrics)/float64(b.N), "metrics/op")
	})
	b.Run("bare_ping_info", func(b *testing.B) {
		ctx := b.Context()
		b.ReportAllocs()
		for b.Loop() {
			if err := c.client.Ping(ctx).Err(); err != nil {
				b.Fatal(err)
			}
			if err := c.client.Info(ctx).Err(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("raw_socket_ping_info", func(b *testing.B) {
		// The same two round trips without any client library.
		conn, err := net.Dial("tcp", r.Addr)
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		buf := make([]byte, 64<<10)
		b.ReportAllocs()
		for b.Loop() {
			for _, cmd := range []string{"PING\r\n", "INFO\r\n"} {
				if _, err := conn.Write([]byte(cmd)); err != nil {
					b.Fatal(err)
				}
				if err := redisReadReply(conn, buf); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}

// redisReadReply reads one simple-string or bulk-string reply.
func redisReadReply(conn net.Conn, buf []byte) error {
	n, err := conn.Read(buf)
	if err != nil {
		return err
	}
	if buf[0] != '$' {
		return nil // +PONG
	}
	var size, i int
	for i = 1; buf[i] != '\r'; i++ {
		size = size*10 + int(buf[i]-'0')
	}
	total := i + 2 + size + 2
	for n < total {
		m, err := conn.Read(buf[n:])
		if err != nil {
			return err
		}
		n += m
	}
	return nil
}

func BenchmarkParseRedisInfo(b *testing.B) {
	raw := readRedisFixture(b, "redis-info-7.0-master.txt")
	b.Run("parse", func(b *testing.B) {
		b.SetBytes(int64(len(raw)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := parseRedisInfo(raw); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parse_and_emit", func(b *testing.B) {
		ch := make(chan prometheus.Metric, 256)
		descs := newRedisDescs("bench")
		b.SetBytes(int64(len(raw)))
		b.ReportAllocs()
		for b.Loop() {
			info, err := parseRedisInfo(raw)
			if err != nil {
				b.Fatal(err)
			}
			info.emit(ch, descs)
			for len(ch) > 0 {
				<-ch
			}
		}
	})
}
