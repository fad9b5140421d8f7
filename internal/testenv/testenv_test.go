package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
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

func TestPostgresReplicaStreamsFromPrimary(t *testing.T) {
	primary := StartPostgres(t, WithPostgresSetting("shared_preload_libraries", "pg_stat_statements"))
	replica := StartPostgresReplica(t, primary)
	ctx := context.Background()
	if err := primary.Exec(ctx, "postgres", "CREATE TABLE t (v int)", "INSERT INTO t VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, replica.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var inRecovery bool
	var preload string
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery(), current_setting('shared_preload_libraries')").Scan(&inRecovery, &preload); err != nil {
		t.Fatal(err)
	}
	if !inRecovery || preload != "pg_stat_statements" {
		t.Errorf("replica: in recovery %v, shared_preload_libraries %q; want true and the primary's setting", inRecovery, preload)
	}
	// The row arrives by streaming, after the base backup was taken.
	WaitFor(t, time.Minute, "the primary's row on the replica", func() bool {
		var v int
		return conn.QueryRow(ctx, "SELECT v FROM t").Scan(&v) == nil && v == 42
	})
	var senders int
	pconn, err := pgx.Connect(ctx, primary.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer pconn.Close(ctx)
	if err := pconn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_replication WHERE usename = $1 AND state = 'streaming'", ReplicationUser).Scan(&senders); err != nil || senders != 1 {
		t.Errorf("pg_stat_replication on the primary: %d streaming replicas (err %v), want 1", senders, err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO t VALUES (1)"); err == nil {
		t.Error("the replica accepted a write")
	}
}

func TestRedisKillAndRestart(t *testing.T) {
	r := StartRedis(t)
	// ping answers within wait: a long wait where an answer is expected,
	// so a busy machine cannot fail the test, and a short one where none
	// can come.
	ping := func(wait time.Duration) error {
		c, err := net.DialTimeout("tcp", r.Addr, wait)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(wait))
		if _, err := c.Write([]byte("PING\r\n")); err != nil {
			return err
		}
		buf := make([]byte, 7)
		_, err = io.ReadFull(c, buf)
		return err
	}
	const answers, silent = 30 * time.Second, 500 * time.Millisecond
	if err := ping(answers); err != nil {
		t.Fatal(err)
	}
	if err := r.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := ping(silent); err == nil {
		t.Fatal("paused redis answered")
	}
	if err := r.Resume(); err != nil {
		t.Fatal(err)
	}
	if err := ping(answers); err != nil {
		t.Fatalf("after resume: %v", err)
	}
	r.Kill()
	if err := ping(silent); err == nil {
		t.Fatal("killed redis answered")
	}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	if err := ping(answers); err != nil {
		t.Fatalf("after restart: %v", err)
	}
}

func TestPollStopsOnTrueOnErrorOrWhenTheContextEnds(t *testing.T) {
	calls := 0
	if err := Poll(context.Background(), time.Millisecond, func() (bool, error) { calls++; return calls == 3, nil }); err != nil || calls != 3 {
		t.Errorf("Poll until the third call: err %v after %d calls", err, calls)
	}
	boom := errors.New("boom")
	if err := Poll(context.Background(), time.Millisecond, func() (bool, error) { return false, boom }); !errors.Is(err, boom) {
		t.Errorf("Poll with a failing condition: %v, want boom", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Poll(ctx, time.Hour, func() (bool, error) { return false, nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("Poll with an ended context: %v, want context.Canceled", err)
	}
}

func TestProcessStopsRestartsAndReportsExit(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "sh.log")
	p, err := StartProcess(logPath, func() *exec.Cmd { return exec.Command("sh", "-c", "echo started; exec sleep 600") })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(syscall.SIGKILL, 0) })
	// started waits until the shell has written its line n times, so
	// that Stop does not race the echo.
	started := func(n int) {
		t.Helper()
		err := p.WaitReady(context.Background(), time.Minute, func(context.Context) error {
			if got := strings.Count(Tail(logPath, 10), "started"); got < n {
				return fmt.Errorf("%d start lines", got)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	started(1)
	exited := p.Exited()
	if isClosed(exited) {
		t.Fatal("Exited closed while running")
	}
	if err := p.Start(); err == nil {
		t.Fatal("second Start of a running process succeeded")
	}
	p.Stop(syscall.SIGTERM, time.Minute)
	if !isClosed(exited) || !isClosed(p.Exited()) {
		t.Fatal("Exited not closed after Stop")
	}
	p.Stop(syscall.SIGTERM, time.Minute) // stopping a stopped process does nothing
	if err := p.Start(); err != nil {
		t.Fatalf("start again: %v", err)
	}
	started(2) // the log is appended to across runs
	if isClosed(p.Exited()) {
		t.Fatal("Exited closed after the restart")
	}
	p.Stop(syscall.SIGTERM, time.Minute)
}

func TestWaitReadyKillsAProcessThatExitsAndShowsItsLog(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "sh.log")
	p, err := StartProcess(logPath, func() *exec.Cmd { return exec.Command("sh", "-c", "echo no config file; exit 3") })
	if err != nil {
		t.Fatal(err)
	}
	never := func(context.Context) error { return errors.New("not yet") }
	err = p.WaitReady(context.Background(), time.Hour, never)
	if err == nil || !strings.Contains(err.Error(), "exited") || !strings.Contains(err.Error(), "no config file") {
		t.Fatalf("WaitReady = %v, want an exit error with the log", err)
	}
}

func TestProcessThatExitedByItselfStartsAgain(t *testing.T) {
	p, err := StartProcess(filepath.Join(t.TempDir(), "true.log"), func() *exec.Cmd { return exec.Command("true") })
	if err != nil {
		t.Fatal(err)
	}
	<-p.Exited()
	if err := p.Start(); err != nil {
		t.Fatalf("start after the program exited: %v", err)
	}
	<-p.Exited()
	p.Stop(syscall.SIGTERM, time.Minute)
}

func TestCreateTablesDatabase(t *testing.T) {
	pg := StartPostgres(t)
	ctx := context.Background()
	for _, tc := range []struct {
		tables int
		want   []string
	}{
		{3, []string{"t001", "t002", "t003"}},
		{2, []string{"t001", "t002"}}, // created afresh: no t003 left over
	} {
		if err := pg.CreateTablesDatabase(ctx, "many_tables", tc.tables); err != nil {
			t.Fatal(err)
		}
		conn, err := pgx.Connect(ctx, pg.DSN("many_tables"))
		if err != nil {
			t.Fatal(err)
		}
		rows, err := conn.Query(ctx, `SELECT relname, reltuples::int FROM pg_class
			WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace ORDER BY relname`)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for rows.Next() {
			var name string
			var analyzed int
			if err := rows.Scan(&name, &analyzed); err != nil {
				t.Fatal(err)
			}
			if analyzed != 100 {
				t.Errorf("%s: reltuples %d, want 100 (analyzed)", name, analyzed)
			}
			got = append(got, name)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		conn.Close(ctx)
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("tables %v, want %v", got, tc.want)
		}
	}
}
