package keystore

import (
	"crypto/ed25519"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/pgtest"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
)

// fillDomains puts n domains d0.example ... into dkim_keys, all with
// the key keyPEM under selector s1.
func fillDomains(tb testing.TB, c *pgtest.Cluster, dsn string, n int, keyPEM []byte) {
	tb.Helper()
	rows := make([][]any, n)
	for i := range rows {
		rows[i] = []any{"d" + strconv.Itoa(i) + ".example", "s1", string(keyPEM)}
	}
	c.CopyRows(tb, dsn, "dkim_keys", []string{"domain", "selector", "private_key"}, rows)
}

// 100,000 domains in the table: loading the keys takes as long as with
// none (nothing is read before a message needs it), and what the store
// keeps in memory is bounded by cache_size, however many domains mail
// comes from.
func TestDatabaseScale(t *testing.T) {
	c := pgtest.Shared(t)
	empty := c.CreateDB(t, keySchema)
	full := c.CreateDB(t, keySchema)
	_, ed, _ := ed25519.GenerateKey(nil)
	fillDomains(t, c, full, 100_000, testkit.KeyPEM(ed, false))

	testkit.RSAKey(2048) // dbStore's fallback key, made once, before timing
	load := func(dsn string) (*Store, time.Duration) {
		start := time.Now()
		s, _ := dbStore(t, dsn, "", "cache_size = 500")
		return s, time.Since(start)
	}
	_, tEmpty := load(empty)
	s, tFull := load(full)
	t.Logf("load: %v with no domain, %v with 100,000", tEmpty, tFull)
	if tFull > 200*time.Millisecond && tFull > 10*tEmpty {
		t.Errorf("loading with 100,000 domains took %v, with none %v: start-up must not depend on the table", tFull, tEmpty)
	}

	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	lookups := func(from, to int) {
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				for i := from + w; i < to; i += 8 {
					if sel, err := s.Lookup("a@d" + strconv.Itoa(i) + ".example"); err != nil || sel == nil {
						t.Errorf("d%d: %+v %v", i, sel, err)
						return
					}
				}
			})
		}
		wg.Wait()
	}
	lookups(0, 1000)
	before := heap()
	lookups(1000, 4000)
	after := heap()
	t.Logf("heap %d KB after 1,000 domains, %d KB after 4,000 (cache_size 500)", before/1024, after/1024)
	if n := s.dbs.cache.len(); n != 500 {
		t.Errorf("%d answers cached, want cache_size 500", n)
	}
	if after > before+4<<20 {
		t.Errorf("the heap grew from %d to %d bytes over 3,000 more domains: the cache is not bounded", before, after)
	}
}

// BenchmarkKeyLookup is the lookup path of a key from the database beside
// a '%' key file, cold (a domain the cache does not have: a query or a
// file read, and the PEM parsed) and warm (a cached key), with a 2048-bit
// RSA key. The database has 100,000 domains; the cold runs cycle through
// more domains than any cache keeps.
func BenchmarkKeyLookup(b *testing.B) {
	pemKey := testkit.KeyPEM(testkit.RSAKey(2048), false)
	b.Run("database", func(b *testing.B) {
		c := pgtest.Shared(b)
		dsn := c.CreateDB(b, keySchema)
		const domains = 100_000
		fillDomains(b, c, dsn, domains, pemKey)
		for _, mode := range []string{"cold", "warm"} {
			b.Run(mode, func(b *testing.B) {
				s := benchStore(b, `
[database]
dsn = `+config.TOMLString(dsn)+`
cache_size = 10000
[keys.db]
domain = "%"
query = "SELECT selector, private_key FROM dkim_keys WHERE domain = $1"
[[signing]]
from = "*"
keys = ["db"]
`)
				benchLookups(b, s, mode, domains)
			})
		}
	})
	b.Run("percent-file", func(b *testing.B) {
		dir := b.TempDir()
		// More files than the store's '%' cache keeps (10,000).
		const domains = 20_000
		for i := range domains {
			if err := os.WriteFile(filepath.Join(dir, "d"+strconv.Itoa(i)+".example.pem"), pemKey, 0o600); err != nil {
				b.Fatal(err)
			}
		}
		for _, mode := range []string{"cold", "warm"} {
			b.Run(mode, func(b *testing.B) {
				s := benchStore(b, `
[keys.files]
domain = "%"
selector = "s1"
file = "`+dir+`/%.pem"
[[signing]]
from = "*"
keys = ["files"]
`)
				benchLookups(b, s, mode, domains)
			})
		}
	})
}

func benchStore(b *testing.B, text string) *Store {
	cfg, err := config.Parse(filepath.Join(b.TempDir(), "dkimmilter.toml"), []byte(text))
	if err != nil {
		b.Fatal(err)
	}
	s, _, err := Load(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.Close)
	return s
}

func benchLookups(b *testing.B, s *Store, mode string, domains int) {
	addrs := make([]string, domains)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("a@d%d.example", i)
	}
	if mode == "warm" {
		addrs = addrs[:1000]
		for _, a := range addrs {
			s.Lookup(a)
		}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if sel, err := s.Lookup(addrs[i%len(addrs)]); err != nil || sel == nil {
			b.Fatalf("%s: %+v %v", addrs[i%len(addrs)], sel, err)
		}
		i++
	}
}
