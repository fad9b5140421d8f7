package testenv

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestPostgresPauseResumeAndRestart(t *testing.T) {
	pg := StartPostgres(t)
	ctx := context.Background()
	if err := pg.Exec(ctx, "postgres", "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	// A connection opened before the pause must hang too: backends leave
	// the postmaster's process group.
	open, err := pgx.Connect(ctx, pg.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close(ctx)
	if err := pg.Pause(); err != nil {
		t.Fatal(err)
	}
	qctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	err = pg.Exec(qctx, "postgres", "SELECT 1")
	cancel()
	if err == nil {
		t.Fatal("new connection to paused server succeeded")
	}
	qctx, cancel = context.WithTimeout(ctx, 500*time.Millisecond)
	_, err = open.Exec(qctx, "SELECT 1")
	cancel()
	if err == nil {
		t.Fatal("query on an open connection to a paused server succeeded")
	}
	if err := pg.Resume(); err != nil {
		t.Fatal(err)
	}
	if err := pg.Exec(ctx, "postgres", "SELECT 1"); err != nil {
		t.Fatalf("after resume: %v", err)
	}
	pg.Kill()
	if err := pg.Exec(ctx, "postgres", "SELECT 1"); err == nil {
		t.Fatal("query against killed server succeeded")
	}
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	if err := pg.Exec(ctx, "postgres", "SELECT 1"); err != nil {
		t.Fatalf("after restart: %v", err)
	}
}

func TestRedisKillAndRestart(t *testing.T) {
	r := StartRedis(t)
	ping := func() error {
		c, err := net.DialTimeout("tcp", r.Addr, time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
		if _, err := c.Write([]byte("PING\r\n")); err != nil {
			return err
		}
		buf := make([]byte, 7)
		_, err = c.Read(buf)
		return err
	}
	if err := ping(); err != nil {
		t.Fatal(err)
	}
	if err := r.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := ping(); err == nil {
		t.Fatal("paused redis answered")
	}
	if err := r.Resume(); err != nil {
		t.Fatal(err)
	}
	if err := ping(); err != nil {
		t.Fatalf("after resume: %v", err)
	}
	r.Kill()
	if err := ping(); err == nil {
		t.Fatal("killed redis answered")
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	if err := ping(); err != nil {
		t.Fatalf("after restart: %v", err)
	}
}
