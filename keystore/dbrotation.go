package keystore

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/dkimmilter/dkimmilter/config"
)

// RotationTable is the table where rotation keeps, per key with a query
// and domain, its state and the key that signs (doc/rotation.md). The
// admin creates it (the README gives its CREATE TABLE and GRANTs): the
// daemon never creates or alters tables.
const RotationTable = "dkimmilter_rotation"

// RotationSchema is the table's definition, as the README gives it: the
// tests make theirs with it, and `check` names it in its hint.
const RotationSchema = `CREATE TABLE dkimmilter_rotation (
    key                text NOT NULL,
    domain             text NOT NULL,
    state              jsonb NOT NULL,
    active_selector    text,
    active_private_key text,
    updated            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key, domain)
)`

// rotationActiveQuery reads the key rotation switched a domain to. NULL
// columns: rotation has not switched yet, the key query's key signs.
const rotationActiveQuery = "SELECT active_selector, active_private_key FROM " + RotationTable + " WHERE key = $1 AND domain = $2"

// EncodePEM is pk as a PKCS #8 PEM block, as key files hold it and as
// rotation stores the keys it makes in the database.
func EncodePEM(pk *PrivateKey) (string, error) {
	der, err := x509.MarshalPKCS8PrivateKey(pk.Signer)
	if err != nil {
		return "", fmt.Errorf("encoding the key: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), nil
}

// rotatedKey is the key rotation switched domain to, for a rotating key
// with a query: nil when rotation has not switched it (no row, or NULL
// columns). A row that cannot sign is the answer's err, as for the key
// query's rows.
func (s *Store) rotatedKey(ctx context.Context, ck *config.Key, domain string) (*dbAnswer, error) {
	found, err := s.dbs.db.fetch(ctx, rotationActiveQuery, false, 1, ck.Name, domain)
	if err != nil {
		return nil, fmt.Errorf("%s (keys.%s rotates: the table %s must exist, and the daemon's user must be able to read it; the README says how to create it): %w", RotationTable, ck.Name, RotationTable, err)
	}
	if len(found) == 0 || found[0].selector == nil && found[0].key == nil {
		return nil, nil
	}
	sel, file, pk, err := ParseKeyRow(found[0].selector, found[0].key)
	if err != nil {
		return &dbAnswer{err: s.rowError(ck, domain, fmt.Errorf("%s: %w", RotationTable, err))}, nil
	}
	return &dbAnswer{selector: sel, file: file, key: pk}, nil
}

// ConnConfig is a copy of the pool's connection settings, for a
// connection of its own: rotation holds its advisory lock on one, outside
// the pool, so that the lock lives exactly as long as that session.
func (d *DB) ConnConfig() *pgx.ConnConfig { return d.db.pool.Config().ConnConfig.Copy() }

// Query runs sql on the pool within query_timeout and calls scan for
// each row: rotation reads the states of the hosts that do not rotate,
// for their metrics, and the commands show them.
func (d *DB) Query(ctx context.Context, sql string, scan func(pgx.Rows) error, args ...any) error {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Database.QueryTimeout)
	defer cancel()
	rows, err := d.db.pool.Query(ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("PostgreSQL (%s): %w", d.db.target, err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("PostgreSQL (%s): %w", d.db.target, err)
	}
	return nil
}

// CheckRotationTable checks, as the role the DSN connects as, what the
// rotation of keys with a query needs: the table with its columns, and
// the right to read, insert and update its rows. A missing table or
// grant would otherwise be found at the first rotation step, days after
// the reload, and every lookup of a rotating key would fail at once.
func (d *DB) CheckRotationTable(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Database.QueryTimeout)
	defer cancel()
	hint := "create it as the README says (" + strings.Join(strings.Fields(RotationSchema), " ") + "), then GRANT SELECT, INSERT, UPDATE ON " + RotationTable + " TO the daemon's role"
	if _, err := d.db.pool.Exec(ctx, "SELECT key, domain, state, active_selector, active_private_key, updated FROM "+RotationTable+" LIMIT 0"); err != nil {
		return fmt.Errorf("PostgreSQL (%s): keys with a query rotate, and need the table %s: %w (hint: %s)", d.db.target, RotationTable, err, hint)
	}
	var role string
	var can [3]bool
	err := d.db.pool.QueryRow(ctx, "SELECT current_user, has_table_privilege($1, 'SELECT'), has_table_privilege($1, 'INSERT'), has_table_privilege($1, 'UPDATE')",
		RotationTable).Scan(&role, &can[0], &can[1], &can[2])
	if err != nil {
		return fmt.Errorf("PostgreSQL (%s): checking the grants on %s: %w", d.db.target, RotationTable, err)
	}
	var missing []string
	for i, p := range []string{"SELECT", "INSERT", "UPDATE"} {
		if !can[i] {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("PostgreSQL (%s): role %s may not %s rows of %s, where rotation keeps its states (hint: GRANT SELECT, INSERT, UPDATE ON %s TO %s)",
			d.db.target, role, strings.Join(missing, " or "), RotationTable, RotationTable, role)
	}
	return nil
}

// RotatedDomains counts the domains of keys.NAME whose rotation switched
// them to a key it made (0 without the table): once rotate is removed
// from a key with a query, the key table's keys sign again, and their
// records may have been revoked and deleted by rotation since.
func (d *DB) RotatedDomains(ctx context.Context, name string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Database.QueryTimeout)
	defer cancel()
	var n int
	err := d.db.pool.QueryRow(ctx, "SELECT count(*) FROM "+RotationTable+" WHERE key = $1 AND active_selector IS NOT NULL", name).Scan(&n)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "42P01" { // undefined_table: never rotated here
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("PostgreSQL (%s): %s: %w", d.db.target, RotationTable, err)
	}
	return n, nil
}
