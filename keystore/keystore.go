// Package keystore is the KeyTable and the SigningTable: it loads the
// private keys the configuration names and tells, for the address in a
// message's From field, which keys sign it.
//
// It keeps OpenDKIM's model (opendkim(8) KeyTable, SigningTable as refile)
// so that a migration is a rewrite of the tables into TOML, and fixes its
// traps: the tables are checked against each other at load time, not when
// the first message arrives, and patterns are globs where '*' is the only
// wildcard instead of half-escaped regular expressions.
package keystore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/dkim"
)

// Key is one KeyTable entry resolved for a From domain: its d= and file
// have no '%' left.
type Key struct {
	Name     string
	Domain   string
	Selector string
	File     string
	*PrivateKey
}

// Selection is what a SigningTable rule says for one address.
type Selection struct {
	Rule     *config.SigningRule
	Keys     []*Key
	Identity string // i=, with '%' replaced; "" for none
}

// Store holds the loaded keys. It is immutable after Load, apart from the
// cache of keys whose file name depends on the From domain; it is safe for
// concurrent use.
type Store struct {
	cfg   *config.Config
	files map[string]*PrivateKey // key files without '%', loaded up front
	match []matcher              // cfg.Signing's patterns, compiled

	mu  sync.Mutex
	pct map[string]*PrivateKey // key files named with '%', by resolved name

	dbs *dbState // keys with a query; nil without one

	rot *Rotated // keys rotation put in place of the configuration's; may be nil
}

// Load loads every key file whose name does not depend on the From domain
// and checks each. All problems are returned at once, each naming the
// config file and line, the key and the fix. Warnings (RSA keys under 2048
// bits) do not stop loading.
func Load(cfg *config.Config) (s *Store, warnings []string, err error) {
	return LoadFor(cfg, nil)
}

// LoadFor is Load judging the key files' groups by the groups of acct
// (nil: this process): `dkimmilter check`, run as root, loads the keys as
// the user the daemon will run as sees them.
func LoadFor(cfg *config.Config, acct *Account) (s *Store, warnings []string, err error) {
	s = &Store{cfg: cfg, files: map[string]*PrivateKey{}, pct: map[string]*PrivateKey{}}
	for _, r := range cfg.Signing {
		s.match = append(s.match, compile(strings.ToLower(r.From)))
	}
	var errs []error
	for _, name := range cfg.KeyNames() {
		ck := cfg.Keys[name]
		if strings.Contains(ck.File, "%") || ck.Query != "" {
			// Loaded per From domain, when a message needs it.
			continue
		}
		pk, err := ReadPrivateKeyFor(ck.File, acct)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: keys.%s: %w", cfg.Where(ck.Line), name, err))
			continue
		}
		if pk.KeyType == "rsa" && pk.Bits < dkim.RecommendedRSABits {
			warnings = append(warnings, fmt.Sprintf("%s: keys.%s: %s is a %d-bit RSA key; RFC 8301 §3.2 says signers should use 2048 bits (hint: 'dkimmilter keys rotate -d %s%s' makes a 2048-bit key under a new selector and prints the steps to switch to it)",
				cfg.Where(ck.Line), name, ck.File, pk.Bits, ck.Domain, configFlag(cfg)))
		}
		s.files[ck.File] = pk
	}
	if len(errs) > 0 {
		return nil, warnings, errors.Join(errs...)
	}
	// The pool is made, not connected: start-up does not wait for the
	// database, nor depend on how many domains it holds.
	if s.dbs, err = openDBState(cfg); err != nil {
		return nil, warnings, err
	}
	return s, warnings, nil
}

// configFlag is " -config FILE" for a hint that names a command, when the
// configuration is not at the default path.
func configFlag(cfg *config.Config) string {
	if cfg.File == "" || cfg.File == config.DefaultPath {
		return ""
	}
	return " -config " + cfg.File
}

// Lookup returns the keys that sign mail from addr (the address of the
// first From field), or nil when no rule matches. An error means a rule
// matched but one of its keys cannot be used: the message must not go out
// unsigned by accident, so the milter applies actions.sign_error.
func (s *Store) Lookup(addr string) (*Selection, error) {
	local, domain, ok := splitAddress(addr)
	if !ok {
		return nil, nil
	}
	// One deadline for the whole lookup, every query key of every rule
	// tried: a message waits for the database no longer than
	// query_timeout, however many keys ask it.
	ctx := context.Background()
	if s.dbs != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.Database.QueryTimeout)
		defer cancel()
	}
	var lower string
	for i, r := range s.cfg.Signing {
		if !s.match[i].match(local, domain, &lower) {
			continue
		}
		sel, err := s.selection(ctx, r, domain)
		if errors.Is(err, errNoDomainKey) {
			continue
		}
		return sel, err
	}
	return nil, nil
}

// errNoDomainKey: a key file named with '%' does not exist for this From
// domain, or a key's query has no row for it. The rule then does not apply, so that one rule with "%" can
// cover the domains that have keys and leave the others to later rules
// (or unsigned), instead of deferring their mail forever.
var errNoDomainKey = errors.New("no key file for this domain")

func (s *Store) selection(ctx context.Context, r *config.SigningRule, domain string) (*Selection, error) {
	sel := &Selection{Rule: r, Identity: strings.ReplaceAll(r.Identity, "%", domain)}
	for _, name := range r.Keys {
		if ck := s.cfg.Keys[name]; ck != nil && strings.Contains(ck.Domain+ck.File, "%") && !signableDomain(domain) {
			// Not a domain this rule can sign for (see signableDomain).
			return nil, errNoDomainKey
		}
		k, err := s.key(ctx, name, domain)
		if err != nil {
			if errors.Is(err, errNoDomainKey) || errors.Is(err, fs.ErrNotExist) && strings.Contains(s.cfg.Keys[name].File, "%") {
				return nil, errNoDomainKey
			}
			return nil, fmt.Errorf("signing rule %q (%s), key %s: %w", r.From, s.cfg.Where(r.Line), name, err)
		}
		sel.Keys = append(sel.Keys, k)
	}
	return sel, nil
}

// signableDomain reports whether a From domain may stand in for '%': it
// becomes the d= of the signature and part of a file name, so it must be a
// DNS name (U-labels allowed). The From field is the client's text, and
// "<a@b.example;l=0>" or a domain with a line break in it would otherwise
// write tags of its own into the DKIM-Signature we add.
func signableDomain(d string) bool {
	if !utf8.ValidString(d) {
		return false
	}
	ascii := strings.Map(func(r rune) rune {
		if r < utf8.RuneSelf {
			return r
		}
		if unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r) {
			return 'x' // what IDNA allows in a label, roughly
		}
		return '!' // not allowed
	}, d)
	return dkim.NameProblem(ascii) == ""
}

func (s *Store) key(ctx context.Context, name, domain string) (*Key, error) {
	ck, ok := s.cfg.Keys[name]
	if !ok {
		// config.Parse rejects dangling references; this is a guard.
		return nil, fmt.Errorf("no [keys.%s] in %s", name, s.cfg.File)
	}
	if ck.Query != "" {
		return s.dbKey(ctx, ck, domain)
	}
	if rk := s.rot.Get(name); rk != nil && rk.Domain == ck.Domain {
		return rk, nil
	}
	k := &Key{Name: name, Domain: ck.Domain, Selector: ck.Selector, File: ck.File}
	if pk, ok := s.files[ck.File]; ok {
		k.PrivateKey = pk
		k.Domain = strings.ReplaceAll(ck.Domain, "%", domain)
		return k, nil
	}
	if strings.ContainsAny(domain, "/\\") || strings.Contains(domain, "..") {
		//lint:ignore ST1005 From is the header field's name
		return nil, fmt.Errorf("From domain %q cannot be used in a file name", domain)
	}
	k.Domain = strings.ReplaceAll(ck.Domain, "%", domain)
	k.File = strings.ReplaceAll(ck.File, "%", domain)
	s.mu.Lock()
	defer s.mu.Unlock()
	if pk, ok := s.pct[k.File]; ok {
		k.PrivateKey = pk
		return k, nil
	}
	pk, err := ReadPrivateKey(k.File)
	if err != nil {
		return nil, err
	}
	if len(s.pct) >= 10000 {
		// Bounded: a '%' rule on "*" sees arbitrary domains, but only the
		// domains that have a key file get this far.
		clear(s.pct)
	}
	s.pct[k.File] = pk
	k.PrivateKey = pk
	return k, nil
}

type matchKind uint8

const (
	matchAll    matchKind = iota // "*"
	matchDomain                  // "*@dom"
	matchSub                     // "*@*.dom"
	matchAddr                    // "local@dom"
	matchGlob                    // anything else
)

// matcher is a compiled SigningTable pattern.
type matcher struct {
	kind    matchKind
	local   string // matchAddr
	domain  string // matchDomain, matchAddr: dom; matchSub: ".dom"
	pattern string // matchGlob
}

// compile classifies a lower-case pattern. The fixed shapes keep the
// lookup free of allocations for the tables most sites have.
func compile(p string) matcher {
	if p == "*" {
		return matcher{kind: matchAll}
	}
	local, domain, ok := strings.Cut(p, "@")
	switch {
	case !ok || strings.Contains(domain, "@"):
	case local == "*" && !strings.Contains(domain, "*"):
		return matcher{kind: matchDomain, domain: domain}
	case local == "*" && strings.HasPrefix(domain, "*.") && !strings.Contains(domain[2:], "*"):
		return matcher{kind: matchSub, domain: domain[1:]}
	case !strings.Contains(p, "*"):
		return matcher{kind: matchAddr, local: local, domain: domain}
	}
	return matcher{kind: matchGlob, pattern: p}
}

// match: domain is lower-case; addr is the lower-cased "local@domain",
// made on first need and kept for the next rule.
func (m *matcher) match(local, domain string, addr *string) bool {
	switch m.kind {
	case matchAll:
		return true
	case matchDomain:
		return m.domain == domain
	case matchSub:
		return strings.HasSuffix(domain, m.domain)
	case matchAddr:
		return m.domain == domain && strings.EqualFold(m.local, local)
	}
	if addr == nil {
		addr = new(string)
	}
	if *addr == "" {
		*addr = strings.ToLower(local) + "@" + domain
	}
	return config.GlobMatch(m.pattern, *addr)
}

// splitAddress splits an address into local part and lower-cased domain.
func splitAddress(addr string) (local, domain string, ok bool) {
	i := strings.LastIndexByte(addr, '@')
	if i <= 0 || i == len(addr)-1 {
		return "", "", false
	}
	return addr[:i], strings.ToLower(strings.TrimSuffix(addr[i+1:], ".")), true
}
