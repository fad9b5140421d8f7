package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

const pgInstall = "apt-get install -y postgresql (or scripts/install-deps.sh)"

// Postgres is a throw-away PostgreSQL server on a loopback port, running as
// an unprivileged user when the tests run as root.
type Postgres struct {
	Host    string
	Port    int
	DataDir string
	dir     string
	bin     string
	args    []string
	cred    *syscall.Credential
	proc    *Process
}

// PostgresOption changes how PostgreSQL is started.
type PostgresOption func(*pgOptions)

type pgOptions struct {
	settings        [][2]string
	certPEM, keyPEM []byte
}

// WithPostgresSetting passes -c name=value to the server, e.g.
// shared_preload_libraries=pg_stat_statements.
func WithPostgresSetting(name, value string) PostgresOption {
	return func(o *pgOptions) { o.settings = append(o.settings, [2]string{name, value}) }
}

// WithPostgresTLS turns on ssl with the given PEM certificate (chain) and key.
func WithPostgresTLS(certPEM, keyPEM []byte) PostgresOption {
	return func(o *pgOptions) { o.certPEM, o.keyPEM = certPEM, keyPEM }
}

func pgBinary(name string) (string, error) {
	return LookBinary(name, "", pgInstall, "/usr/lib/postgresql/*/bin/"+name)
}

// unprivileged returns the credential to run PostgreSQL with when the tests
// run as root (WARDEN_PG_USER, default "postgres"), or nil.
func unprivileged() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	name := os.Getenv("WARDEN_PG_USER")
	if name == "" {
		name = "postgres"
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL refuses to run as root and user %q does not exist (create it, or set WARDEN_PG_USER): %w", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// NewPostgres initialises a fresh cluster in a temp dir and starts it.
func NewPostgres(opts ...PostgresOption) (*Postgres, error) {
	var o pgOptions
	for _, opt := range opts {
		opt(&o)
	}
	initdb, err := pgBinary("initdb")
	if err != nil {
		return nil, err
	}
	bin, err := pgBinary("postgres")
	if err != nil {
		return nil, err
	}
	cred, err := unprivileged()
	if err != nil {
		return nil, err
	}
	p := &Postgres{Host: "127.0.0.1", bin: bin, cred: cred}
	if err := p.makeDir("warden-pg-"); err != nil {
		return nil, err
	}
	fail := func(err error) (*Postgres, error) {
		os.RemoveAll(p.dir)
		return nil, err
	}
	cmd := exec.Command(initdb, "-D", p.DataDir, "--auth=trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("initdb: %w\n%s", err, out))
	}
	if o.certPEM != nil {
		for name, data := range map[string][]byte{"server.crt": o.certPEM, "server.key": o.keyPEM} {
			path := filepath.Join(p.DataDir, name)
			if err := os.WriteFile(path, data, 0o600); err != nil {
				return fail(fmt.Errorf("write %s: %w", name, err))
			}
			if cred != nil {
				if err := os.Chown(path, int(cred.Uid), int(cred.Gid)); err != nil {
					return fail(fmt.Errorf("chown %s: %w", name, err))
				}
			}
		}
		o.settings = append(o.settings, [2]string{"ssl", "on"}, [2]string{"ssl_cert_file", "server.crt"}, [2]string{"ssl_key_file", "server.key"})
	}
	for _, s := range o.settings {
		p.args = append(p.args, "-c", s[0]+"="+s[1])
	}
	if err := p.startOnFreePort(); err != nil {
		return fail(err)
	}
	return p, nil
}

// makeDir creates the server's temp dir (owned by the user it runs as)
// and sets dir and DataDir.
func (p *Postgres) makeDir(prefix string) error {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return fmt.Errorf("postgres temp dir: %w", err)
	}
	if p.cred != nil {
		if err := os.Chown(dir, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
			os.RemoveAll(dir)
			return fmt.Errorf("chown postgres dir: %w", err)
		}
	}
	p.dir, p.DataDir = dir, filepath.Join(dir, "data")
	return nil
}

// startOnFreePort starts the server in DataDir on a free port.
func (p *Postgres) startOnFreePort() (err error) {
	if p.Port, err = FreePort(); err != nil {
		return err
	}
	p.proc = NewProcess(filepath.Join(p.dir, "postgres.log"), p.command)
	return p.Start()
}

// ReplicationUser is the role a replica of NewReplica streams WAL as.
const ReplicationUser = "replicator"

// NewReplica creates a streaming replica of p: a base backup taken with
// pg_basebackup -R (which writes standby.signal and primary_conninfo) as a
// role with REPLICATION, started in a temp dir of its own on a free port
// with p's settings (a hot standby needs limits at least as high as its
// primary's). The replica accepts read-only connections; Stop it on its
// own, before or after p.
func (p *Postgres) NewReplica(ctx context.Context) (*Postgres, error) {
	basebackup, err := pgBinary("pg_basebackup")
	if err != nil {
		return nil, err
	}
	// initdb --auth=trust lets every local user connect, replication
	// included, from 127.0.0.1; only the role is missing.
	if err := p.Exec(ctx, "postgres", fmt.Sprintf(`DO $$ BEGIN
		IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '%[1]s') THEN CREATE ROLE %[1]s WITH LOGIN REPLICATION; END IF;
	END $$`, ReplicationUser)); err != nil {
		return nil, fmt.Errorf("create replication role: %w", err)
	}
	r := &Postgres{Host: p.Host, bin: p.bin, args: p.args, cred: p.cred}
	if err := r.makeDir("warden-pg-replica-"); err != nil {
		return nil, err
	}
	fail := func(err error) (*Postgres, error) {
		os.RemoveAll(r.dir)
		return nil, err
	}
	cmd := exec.CommandContext(ctx, basebackup, "-h", p.Host, "-p", strconv.Itoa(p.Port), "-U", ReplicationUser,
		"-D", r.DataDir, "-R", "-X", "stream", "--checkpoint=fast", "--no-sync")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: r.cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("pg_basebackup: %w\n%s", err, out))
	}
	if err := r.startOnFreePort(); err != nil {
		return fail(err)
	}
	return r, nil
}

// StartPostgresReplica starts a streaming replica of primary for one test
// (see NewReplica) and removes it afterwards; it skips the test under
// -short.
func StartPostgresReplica(t testing.TB, primary *Postgres) *Postgres {
	t.Helper()
	skipUnderShort(t)
	r, err := primary.NewReplica(context.Background())
	if err != nil {
		t.Fatalf("start postgres replica: %v", err)
	}
	t.Cleanup(r.Stop)
	return r
}

// StartPostgres starts PostgreSQL for one test and removes it afterwards;
// it skips the test under -short.
func StartPostgres(t testing.TB, opts ...PostgresOption) *Postgres {
	t.Helper()
	skipUnderShort(t)
	p, err := NewPostgres(opts...)
	if err != nil {
		t.Fatalf("start postgres: %v", err)
	}
	t.Cleanup(p.Stop)
	return p
}

// Start (re)starts the server on its port, e.g. after Kill.
func (p *Postgres) Start() error {
	if err := p.proc.Start(); err != nil {
		return err
	}
	err := p.proc.WaitReady(context.Background(), 30*time.Second, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, p.DSN("postgres"))
		if err != nil {
			return err
		}
		return conn.Close(ctx)
	})
	if err != nil {
		return fmt.Errorf("postgres did not become ready: %w", err)
	}
	return nil
}

func (p *Postgres) command() *exec.Cmd {
	args := append([]string{
		"-D", p.DataDir, "-k", p.dir, "-p", strconv.Itoa(p.Port),
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off",
		"-c", "synchronous_commit=off", "-c", "max_connections=50",
	}, p.args...)
	cmd := exec.Command(p.bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	return cmd
}

// DSN is a connection string for database db as the superuser postgres.
func (p *Postgres) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres@%s:%d/%s?sslmode=disable", p.Host, p.Port, db)
}

// Addr is host:port.
func (p *Postgres) Addr() string { return fmt.Sprintf("%s:%d", p.Host, p.Port) }

// Exec runs SQL statements in database db.
func (p *Postgres) Exec(ctx context.Context, db string, sql ...string) error {
	conn, err := pgx.Connect(ctx, p.DSN(db))
	if err != nil {
		return fmt.Errorf("connect %s: %w", db, err)
	}
	defer conn.Close(ctx)
	for _, s := range sql {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("exec %q: %w", s, err)
		}
	}
	return nil
}

// CreateDatabase creates a fresh database for one test and returns its DSN.
func (p *Postgres) CreateDatabase(t testing.TB, name string) string {
	t.Helper()
	if err := p.Exec(context.Background(), "postgres", fmt.Sprintf("CREATE DATABASE %s", pgx.Identifier{name}.Sanitize())); err != nil {
		t.Fatalf("create database: %v", err)
	}
	return p.DSN(name)
}

// CreateTablesDatabase creates database name afresh (dropping one of that
// name) holding tables t001 … tN (numbers zero-padded to at least three
// digits), each with a primary key and 100 rows, analyzed: the many-tables
// fixture of the per-table benchmarks.
func (p *Postgres) CreateTablesDatabase(ctx context.Context, name string, tables int) error {
	db := pgx.Identifier{name}.Sanitize()
	if err := p.Exec(ctx, "postgres", "DROP DATABASE IF EXISTS "+db, "CREATE DATABASE "+db); err != nil {
		return err
	}
	width := max(3, len(strconv.Itoa(tables)))
	return p.Exec(ctx, name,
		fmt.Sprintf(`DO $$ BEGIN FOR i IN 1..%d LOOP
			EXECUTE format('CREATE TABLE t%%s (id int PRIMARY KEY, pad text)', lpad(i::text, %d, '0'));
			EXECUTE format('INSERT INTO t%%s SELECT g, repeat(''x'', 50) FROM generate_series(1, 100) g', lpad(i::text, %[2]d, '0'));
		END LOOP; END $$`, tables, width),
		"ANALYZE")
}

// PID is the postmaster's process id (0 while stopped); the backends run
// below it.
func (p *Postgres) PID() int { return p.proc.PID() }

// Pause freezes the postmaster and every backend (SIGSTOP): connections
// stay open and nothing answers.
func (p *Postgres) Pause() error { return p.proc.Pause() }

// SignalPostmaster sends sig to the postmaster alone. SIGSTOP freezes it
// while its backends run on: sessions already open keep answering, new
// connections are accepted by the kernel and never served. SIGCONT undoes
// it (before Stop).
func (p *Postgres) SignalPostmaster(sig syscall.Signal) error {
	p.proc.mu.Lock()
	defer p.proc.mu.Unlock()
	if p.proc.cmd == nil {
		return fmt.Errorf("signal postmaster: not running")
	}
	return syscall.Kill(p.proc.cmd.Process.Pid, sig)
}

// Resume unfreezes the server.
func (p *Postgres) Resume() error { return p.proc.Resume() }

// Kill ends the server abruptly; Start brings it back on the same port.
func (p *Postgres) Kill() {
	if p.proc != nil {
		p.proc.Stop(syscall.SIGKILL, time.Second)
		os.Remove(filepath.Join(p.DataDir, "postmaster.pid"))
	}
}

// Stop shuts the server down (fast shutdown) and removes its files.
func (p *Postgres) Stop() {
	if p.proc != nil {
		p.proc.Stop(syscall.SIGINT, 10*time.Second)
	}
	os.RemoveAll(p.dir)
}
