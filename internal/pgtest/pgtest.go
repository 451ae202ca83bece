// Package pgtest runs throwaway PostgreSQL servers for tests: initdb and
// pg_ctl from the system's PostgreSQL (Debian's postgresql package) in a
// temporary directory, listening on a unix socket in it and nowhere else,
// with fsync off. initdb refuses to run as root, so as root the server
// runs as the postgres system user (or nobody) and owns its directory.
//
// Without PostgreSQL the tests that need it skip, saying so, except under
// CI=true, where they fail: CI installs it.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Cluster is one running (or stopped) server.
type Cluster struct {
	dir  string // owned by the server's user: data/, the socket, the log
	bin  string // the directory of initdb and pg_ctl
	cred *syscall.Credential
	uid  int

	mu      sync.Mutex
	running bool
}

// Port is the server's port: it only names the socket file in the
// cluster's own directory, so every cluster can use the same.
const Port = 5432

var (
	sharedOnce sync.Once
	shared     *Cluster
	sharedErr  error
	dbSeq      atomic.Int64
)

// Shared returns the test binary's cluster, started on first use; Main
// stops it when the tests end. It skips tb when PostgreSQL is not
// installed (fails under CI=true).
func Shared(tb testing.TB) *Cluster {
	tb.Helper()
	sharedOnce.Do(func() { shared, sharedErr = start() })
	if sharedErr != nil {
		missing(tb, sharedErr)
	}
	return shared
}

// Main runs the tests of a package that uses Shared, then stops the
// shared cluster: use it as the package's TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if shared != nil {
		shared.Remove()
	}
	os.Exit(code)
}

// New starts a cluster of the test's own, removed when the test ends: for
// tests that stop and start the server.
func New(tb testing.TB) *Cluster {
	tb.Helper()
	c, err := start()
	if err != nil {
		missing(tb, err)
	}
	tb.Cleanup(c.Remove)
	return c
}

// ErrMissing: PostgreSQL's server programs are not installed.
var ErrMissing = errors.New("PostgreSQL is not installed (no initdb in /usr/lib/postgresql/*/bin or $PATH); apt-get install postgresql")

func missing(tb testing.TB, err error) {
	tb.Helper()
	if errors.Is(err, ErrMissing) && os.Getenv("CI") != "true" {
		tb.Skipf("skipped: %v", err)
	}
	tb.Fatalf("throwaway PostgreSQL: %v", err)
}

// binDir finds initdb: the newest /usr/lib/postgresql/VERSION/bin
// (Debian does not put the server programs in $PATH), else $PATH.
func binDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return vb - va
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", ErrMissing
}

// serverUser is whom the server runs as: this process, unless it is
// root, which initdb refuses.
func serverUser() (*syscall.Credential, int, error) {
	if os.Geteuid() != 0 {
		return nil, os.Geteuid(), nil
	}
	for _, name := range []string{"postgres", "nobody", "dkimmilter"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, uid, nil
	}
	return nil, 0, errors.New("running as root, and no postgres, nobody or dkimmilter user to run the server as (initdb refuses root)")
}

func start() (*Cluster, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	cred, uid, err := serverUser()
	if err != nil {
		return nil, err
	}
	// Short: the socket path must fit the 107 bytes of sun_path.
	dir, err := os.MkdirTemp("", "pgtest")
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir, bin: bin, cred: cred, uid: uid}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if out, err := c.run("initdb", "-D", c.data(), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C"); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	conf := fmt.Sprintf("\nlisten_addresses = ''\nunix_socket_directories = '%s'\nport = %d\nfsync = off\nfull_page_writes = off\nmax_connections = 200\nshared_buffers = 32MB\n", dir, Port)
	f, err := os.OpenFile(filepath.Join(c.data(), "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err == nil {
		_, err = f.WriteString(conf)
		f.Close()
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := c.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return c, nil
}

func (c *Cluster) data() string { return filepath.Join(c.dir, "data") }

// run runs a PostgreSQL program as the server's user.
func (c *Cluster) run(prog string, args ...string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(c.bin, prog), args...)
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	return cmd.CombinedOutput()
}

// Start starts the server (again) and waits until it accepts connections.
func (c *Cluster) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running {
		return nil
	}
	if out, err := c.run("pg_ctl", "-D", c.data(), "-l", filepath.Join(c.dir, "log"), "-w", "-t", "60", "start"); err != nil {
		log, _ := os.ReadFile(filepath.Join(c.dir, "log"))
		return fmt.Errorf("pg_ctl start: %v\n%s\n%s", err, out, log)
	}
	c.running = true
	return nil
}

// Stop stops the server at once: clients see their connections cut, as
// in a crash.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.running {
		return nil
	}
	if out, err := c.run("pg_ctl", "-D", c.data(), "-m", "immediate", "-w", "stop"); err != nil {
		return fmt.Errorf("pg_ctl stop: %v\n%s", err, out)
	}
	c.running = false
	return nil
}

// Remove stops the server and removes its directory.
func (c *Cluster) Remove() {
	c.Stop()
	os.RemoveAll(c.dir)
}

// DSN returns the connection string of database db, as the superuser.
func (c *Cluster) DSN(db string) string {
	return fmt.Sprintf("host=%s port=%d dbname=%s user=postgres sslmode=disable", c.dir, Port, db)
}

// SocketDir is the directory of the server's unix socket.
func (c *Cluster) SocketDir() string { return c.dir }

// CreateDB makes a fresh database for the test (dropped when it ends),
// runs the setup statements in it, and returns its DSN.
func (c *Cluster) CreateDB(tb testing.TB, setup ...string) string {
	tb.Helper()
	name := fmt.Sprintf("t%d_%d", os.Getpid(), dbSeq.Add(1))
	c.Exec(tb, c.DSN("postgres"), "CREATE DATABASE "+name)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if conn, err := pgx.Connect(ctx, c.DSN("postgres")); err == nil {
			conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			conn.Close(ctx)
		}
	})
	dsn := c.DSN(name)
	for _, s := range setup {
		c.Exec(tb, dsn, s)
	}
	return dsn
}

// Exec runs one statement on dsn, failing tb on error.
func (c *Cluster) Exec(tb testing.TB, dsn, sql string, args ...any) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		tb.Fatalf("connect %s: %v", dsn, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		tb.Fatalf("%s: %v", strings.TrimSpace(sql), err)
	}
}

// CopyRows bulk-loads rows into table's columns on dsn.
func (c *Cluster) CopyRows(tb testing.TB, dsn, table string, columns []string, rows [][]any) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		tb.Fatalf("connect %s: %v", dsn, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.CopyFrom(ctx, pgx.Identifier{table}, columns, pgx.CopyFromRows(rows)); err != nil {
		tb.Fatalf("copy into %s: %v", table, err)
	}
}

// Peer makes the server authenticate role over the unix socket by peer
// authentication, as a `local all ROLE peer` line in pg_hba.conf does:
// only a client running as the system user of that name gets in. Other
// roles keep trust.
func (c *Cluster) Peer(tb testing.TB, role string) {
	tb.Helper()
	hba := filepath.Join(c.data(), "pg_hba.conf")
	old, err := os.ReadFile(hba)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(hba, append([]byte("local all "+role+" peer\n"), old...), 0o600); err != nil {
		tb.Fatal(err)
	}
	if out, err := c.run("pg_ctl", "-D", c.data(), "reload"); err != nil {
		tb.Fatalf("pg_ctl reload: %v\n%s", err, out)
	}
}
