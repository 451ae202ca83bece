package pgtest

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { Main(m) }

// The helper's own promise: a server that answers on its socket, fresh
// databases, and a Stop that really cuts clients off until Start.
func TestClusterStopStart(t *testing.T) {
	c := New(t)
	dsn := c.CreateDB(t, "CREATE TABLE t (x int)", "INSERT INTO t VALUES (42)")
	ask := func() (int, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return 0, err
		}
		defer conn.Close(ctx)
		var x int
		err = conn.QueryRow(ctx, "SELECT x FROM t").Scan(&x)
		return x, err
	}
	if x, err := ask(); err != nil || x != 42 {
		t.Fatalf("got %d, %v", x, err)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := ask(); err == nil {
		t.Fatal("a stopped server answered")
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	if x, err := ask(); err != nil || x != 42 {
		t.Fatalf("after restart: %d, %v", x, err)
	}
}

func TestShared(t *testing.T) {
	a, b := Shared(t), Shared(t)
	if a != b {
		t.Fatal("Shared started two clusters")
	}
	dsn1, dsn2 := a.CreateDB(t), a.CreateDB(t)
	if dsn1 == dsn2 {
		t.Fatal("CreateDB reused a name")
	}
}
