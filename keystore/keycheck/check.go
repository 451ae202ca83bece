// Package keycheck checks a key's published DNS record against its private
// key, for `dkimmilter keys check`, `check -dns` and the daemon's hourly
// key-health metrics: what opendkim-testkey does, without its traps (a
// KeyTable run that exits 0 when keys fail, no Ed25519, "key not secure"
// that users read as a file permission problem), and with a hint for every
// problem that says what to do.
//
// Each resolver is asked on its own, so that a resolver that still caches
// an old answer, or an authoritative server that did not load the new
// zone, shows up by name.
package keycheck

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/dkimmilter/dkimmilter/internal/dkim"
	"github.com/dkimmilter/dkimmilter/internal/dns"
	"github.com/dkimmilter/dkimmilter/keystore"
)

// Status is how a key, an answer or a problem fares. The order is
// severity: a key's status is the worst of its answers and problems.
type Status int

const (
	OK   Status = iota
	Warn        // published and usable, but something should change
	Temp        // could not be checked: a timeout or a server failure
	Fail        // verifiers would answer permerror or fail
)

func (s Status) String() string {
	switch s {
	case OK:
		return "ok"
	case Warn:
		return "warn"
	case Temp:
		return "temp"
	}
	return "fail"
}

// Resolver is one resolver to ask, with the name reports use.
type Resolver struct {
	Name string // "127.0.0.1:53", "ns1.example.com (192.0.2.1)"
	dns.Resolver
	// TrustAD says the resolver's AD bit can be believed: a validating
	// resolver on this host (see dns.LocalServer).
	TrustAD bool
	// Authoritative says it is one of the zone's own servers, asked with
	// RD=0. They do not validate, so no DNSSEC status is reported.
	Authoritative bool
}

// Answer is what one resolver answered, and what it means.
type Answer struct {
	Resolver string
	Records  []string // the TXT records, each joined from its strings
	TTL      time.Duration
	AD       bool  // the resolver set the AD bit
	Err      error // a *net.DNSError, or nil
	Status   Status
	Summary  string // "published and matching", "no record (NXDOMAIN)", …
	// KeyRecord: a DKIM key record (even a broken one) is at the name,
	// not only other TXT records. Matching: a usable one with the private
	// key's public key.
	KeyRecord, Matching bool
}

// Problem is one thing wrong, with what to do about it.
type Problem struct {
	Status Status // Warn, Temp or Fail
	Text   string
	Hints  []string // each may hold a record to publish on its second line
}

// Result is the report on one key.
type Result struct {
	Key      string // the keys.NAME
	Domain   string
	Selector string
	DNSName  string // SELECTOR._domainkey.DOMAIN
	File     string
	KeyType  string // of the private key; "" when it was not loaded
	Bits     int
	Record   string // the record to publish: "v=DKIM1; k=…; p=…"
	Status   Status
	Summary  string   // one line: what most resolvers see
	DNSSEC   string   // "validated", "not validated", …; "" when not known
	Zone     string   // with CheckNameServers: the zone whose servers were asked
	NotAsked []string // and its server addresses this host has no route to
	Skipped  []string // and its name servers whose addresses could not be found, with why
	Answers  []Answer
	Problems []Problem
}

// Check looks up k's record with each resolver (at the same time) and
// checks what each sees against k's private key. k.PrivateKey may be nil
// when the key file could not be read: the record is then only checked
// for existence and syntax, and the caller reports why.
func Check(ctx context.Context, k *keystore.Key, resolvers []Resolver, opts ...Option) *Result {
	return check(ctx, k, resolvers, Problem{Status: Temp, Text: "no resolver to ask",
		Hints: []string{"set [dns] nameservers, or give -resolver"}}, opts)
}

// Option tells Check what the configuration says of the key.
type Option func(*keyChecker)

// Unused says that no [[signing]] rule names the key: a revoked record is
// then what a retired key should have, not a failure.
func Unused() Option { return func(c *keyChecker) { c.unused = true } }

// check is Check, with the problem to report when there is no
// resolver to ask.
func check(ctx context.Context, k *keystore.Key, resolvers []Resolver, none Problem, opts []Option) *Result {
	r := &Result{
		Key: k.Name, Domain: k.Domain, Selector: k.Selector, File: k.File,
		DNSName: dkim.DNSName(k.Selector, k.Domain),
	}
	if k.PrivateKey != nil {
		r.KeyType, r.Bits = k.KeyType, k.Bits
		r.Record = keystore.Record(k.PrivateKey)
	}
	r.Answers = make([]Answer, len(resolvers))
	var wg sync.WaitGroup
	for i, res := range resolvers {
		wg.Go(func() {
			a := &r.Answers[i]
			a.Resolver = res.Name
			txt, err := res.LookupTXT(ctx, r.DNSName)
			if err != nil {
				a.Err = err
				return
			}
			a.Records, a.TTL, a.AD = txt.Records, txt.TTL, txt.Authenticated
		})
	}
	wg.Wait()

	c := &keyChecker{k: k, r: r, resolvers: resolvers}
	for _, o := range opts {
		o(c)
	}
	verdicts := make([]*verdict, len(r.Answers))
	for i := range r.Answers {
		a := &r.Answers[i]
		verdicts[i] = c.evaluate(a)
		a.Status, a.Summary, a.Matching = verdicts[i].status, verdicts[i].summary, verdicts[i].matching
		for _, rec := range a.Records {
			a.KeyRecord = a.KeyRecord || isKeyRecord(rec)
		}
	}
	if len(resolvers) == 0 {
		r.Summary = "not checked"
		r.Problems = append(r.Problems, none)
	}
	c.combine(verdicts)
	if pk := k.PrivateKey; pk != nil && pk.KeyType == "rsa" {
		// The key that signs, whatever DNS holds.
		if p := keySizeProblem(pk.Bits, k.Domain); p != nil {
			r.Problems = append(r.Problems, *p)
		}
	}
	r.DNSSEC = dnssecStatus(resolvers, r.Answers)
	for _, p := range r.Problems {
		r.Status = max(r.Status, p.Status)
	}
	return r
}

// verdict is the meaning of one answer.
type verdict struct {
	status   Status
	summary  string
	problems []Problem
	matching bool // a usable DKIM record with the key's public key
}

func (v *verdict) add(s Status, text string, hints ...string) {
	v.status = max(v.status, s)
	v.problems = append(v.problems, Problem{Status: s, Text: text, Hints: hints})
}

type keyChecker struct {
	k         *keystore.Key
	r         *Result
	resolvers []Resolver
	unused    bool // no [[signing]] rule names the key (Unused)
}

// publishHint says to publish the key's record, and prints it.
func (c *keyChecker) publishHint(verb string) string {
	if c.r.Record == "" {
		return fmt.Sprintf("%s the key's record at %s ('dkimmilter keys dns %s' prints it once the key file can be read)", verb, c.r.DNSName, c.k.Name)
	}
	return fmt.Sprintf("%s this TXT record at %s ('dkimmilter keys dns %s' prints it for a zone file, in strings of at most 255 bytes):\n%s",
		verb, c.r.DNSName, c.k.Name, c.r.Record)
}

// evaluate judges one resolver's answer. The RFC 6376 §3.6.1 tags decide
// whether a verifier can use the record with this key:
// https://www.rfc-editor.org/rfc/rfc6376#section-3.6.1
func (c *keyChecker) evaluate(a *Answer) *verdict {
	v := &verdict{}
	if a.Err != nil {
		c.lookupError(v, a)
		return v
	}
	var keyRecs, others []string
	for _, rec := range a.Records {
		if isKeyRecord(rec) {
			keyRecs = append(keyRecs, rec)
		} else {
			others = append(others, rec)
		}
	}
	switch {
	case len(keyRecs) == 0:
		v.summary = "no DKIM key record (other TXT only)"
		v.add(Fail, fmt.Sprintf("the TXT record at %s is not a DKIM key record: %s", c.r.DNSName, quoteList(others)),
			c.publishHint("replace it with"))
		return v
	case len(keyRecs) > 1:
		// RFC 6376 §3.6.2.2: several key records at one name give
		// undefined results; verifiers fail or pick one at random.
		// https://www.rfc-editor.org/rfc/rfc6376#section-3.6.2.2
		v.summary = fmt.Sprintf("%d DKIM key records", len(keyRecs))
		hint := c.publishHint("remove all of them but one, and make it")
		for _, rec := range keyRecs {
			if c.matches(rec) {
				hint = fmt.Sprintf("remove the others and keep only this one, which matches %s:\n%s", c.r.File, rec)
			}
		}
		v.add(Fail, fmt.Sprintf("%d DKIM key records at %s: RFC 6376 §3.6.2.2 leaves the result undefined, and verifiers answer permerror or pick one at random", len(keyRecs), c.r.DNSName), hint)
		return v
	case len(others) > 0:
		v.add(Warn, fmt.Sprintf("%s also holds a TXT record that is not a DKIM key: %s; some verifiers fail when the name has more than one TXT record", c.r.DNSName, quoteList(others)),
			fmt.Sprintf("remove it: %s should hold only the key record (SPF and site verification records belong at the domain itself)", c.r.DNSName))
	}
	c.keyRecord(v, keyRecs[0], a.TTL)
	return v
}

// isKeyRecord tells a DKIM key record, even a broken one, from the other
// TXT records a name may hold (SPF, site verifications).
func isKeyRecord(rec string) bool {
	_, err := dkim.ParseKeyRecord(rec)
	return err == nil || !errors.Is(err, dkim.ErrNotKeyRecord) ||
		strings.HasPrefix(strings.TrimLeft(rec, " \t"), "v=DKIM1")
}

// matches reports whether rec carries the private key's public key.
func (c *keyChecker) matches(rec string) bool {
	kr, err := dkim.ParseKeyRecord(rec)
	return err == nil && c.k.PrivateKey != nil && publicKeysEqual(c.k.Signer.Public(), kr.Key)
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && b != nil && e.Equal(b)
}

// keyRecord judges the one key record at the name.
func (c *keyChecker) keyRecord(v *verdict, rec string, ttl time.Duration) {
	kr, err := dkim.ParseKeyRecord(rec)
	pk := c.k.PrivateKey
	switch {
	case kr != nil && pk != nil && kr.KeyType != pk.KeyType && (kr.KeyType == "rsa" || kr.KeyType == "ed25519"):
		said := "k=" + kr.KeyType
		if !strings.Contains(rec, "k=") {
			said = "no k= (which means rsa)"
		}
		v.summary = fmt.Sprintf("k=%s record, but the key is %s", kr.KeyType, pk.KeyType)
		v.add(Fail, fmt.Sprintf("the record has %s but %s holds an %s key", said, c.r.File, pk.KeyType),
			c.publishHint("publish"),
			fmt.Sprintf("or, if the published key is the right one, point keys.%s at its %s key file", c.k.Name, kr.KeyType))
		return
	case errors.Is(err, dkim.ErrKeyRevoked) && c.unused:
		// A retired key, revoked as it should be (RFC 6376 §3.6.1):
		// nothing signs with it.
		v.summary = "key revoked (empty p=), and no rule signs with it"
		v.add(Warn, fmt.Sprintf("the key is revoked (empty p=) and no [[signing]] rule names keys.%s: it is retired", c.k.Name),
			fmt.Sprintf("remove the [keys.%s] table and delete %s; keep the revoked record a while, so that verifiers of old mail get \"key revoked\" rather than \"no key\"", c.k.Name, c.r.File),
			"or, if the key is meant to sign again, "+c.publishHint("publish"))
		return
	case errors.Is(err, dkim.ErrKeyRevoked):
		v.summary = "key revoked (empty p=)"
		v.add(Fail, "the key is revoked: the record's p= is empty, so every signature made with it fails (permerror \"key revoked\")",
			fmt.Sprintf("if keys.%s is retired, take it out of the [[signing]] rules", c.k.Name),
			c.publishHint("otherwise publish"))
		return
	case errors.Is(err, dkim.ErrRecordCut):
		v.summary = "record cut at 255 bytes"
		v.add(Fail, fmt.Sprintf("the record is exactly 255 bytes, the most one TXT string holds, and its key is incomplete: it was cut (permerror for verifiers): %q", rec),
			"a DNS panel or a zone file kept only the first 255 bytes: enter the record as several quoted strings of at most 255 bytes each, as the zone line below does, or in a panel that splits long values itself",
			c.publishHint("publish"))
		return
	case err != nil:
		v.summary = "unusable key record"
		v.add(Fail, fmt.Sprintf("verifiers cannot use the key record (permerror): %v: %q", err, rec), c.publishHint("replace it with"))
		return
	}
	v.summary = "published"
	if pk != nil {
		if publicKeysEqual(pk.Signer.Public(), kr.Key) {
			v.summary, v.matching = "published and matching", true
		} else {
			v.summary = "published, but a different key"
			v.add(Fail, fmt.Sprintf("p= is not the public key of %s: every signature would fail (\"signature did not verify\")", c.r.File),
				c.publishHint("publish"),
				fmt.Sprintf("or, if the published key is the right one, keys.%s points at the wrong key file or selector", c.k.Name),
				fmt.Sprintf("if you changed the record within its TTL (%s), resolvers may still serve the old one: check again after that", ttl))
		}
	}
	// These would make verifiers refuse the key whatever p= holds. The
	// hash is sha256 for both algorithms we sign with (RFC 8301, RFC 8463).
	if !kr.AllowsHash("sha256") {
		v.add(Fail, fmt.Sprintf("h=%s does not allow sha256, which every signature from this key uses", strings.Join(kr.Hashes, ":")),
			"remove h= from the record (or write h=sha256)")
	}
	if !kr.AllowsEmail() {
		v.add(Fail, fmt.Sprintf("s=%s does not allow the key to be used for email", strings.Join(kr.Services, ":")),
			"remove s= from the record (or write s=email)")
	}
	if pk == nil && kr.KeyType == "rsa" {
		// Without the private key, the published key is all there is.
		if p := keySizeProblem(kr.Bits, c.r.Domain); p != nil {
			v.add(p.Status, p.Text, p.Hints...)
		}
	}
	// RFC 6376 §3.6.1 t=y: verifiers must not treat the domain's failed
	// signatures differently from unsigned mail, so a broken setup goes
	// unnoticed.
	if kr.Testing() {
		v.add(Warn, "t=y: the domain says it is testing DKIM, so receivers treat failing signatures like no signature",
			"remove t=y from the record once signatures verify")
	}
}

// keySizeProblem judges an RSA key size. RFC 8301 §3.2: verifiers must
// refuse keys under 1024 bits, and signers should use 2048.
// https://www.rfc-editor.org/rfc/rfc8301#section-3.2
func keySizeProblem(bits int, domain string) *Problem {
	hint := fmt.Sprintf("'dkimmilter keys rotate -d %s' makes a 2048-bit key under a new selector and prints the steps", domain)
	switch {
	case bits < dkim.MinRSABits:
		return &Problem{Status: Fail, Hints: []string{hint},
			Text: fmt.Sprintf("%d-bit RSA key: verifiers refuse RSA keys under %d bits (RFC 8301 §3.2)", bits, dkim.MinRSABits)}
	case bits < dkim.RecommendedRSABits:
		return &Problem{Status: Warn, Hints: []string{hint},
			Text: fmt.Sprintf("%d-bit RSA key: RFC 8301 §3.2 says signers should use 2048 bits, and some receivers already treat smaller keys as weak", bits)}
	}
	return nil
}

// lookupError judges a failed lookup.
func (c *keyChecker) lookupError(v *verdict, a *Answer) {
	de := &net.DNSError{Err: a.Err.Error()}
	errors.As(a.Err, &de)
	switch {
	case de.IsNotFound:
		v.summary = "no record (NXDOMAIN)"
		text := fmt.Sprintf("no record at %s (NXDOMAIN: the name does not exist)", c.r.DNSName)
		if de.Err != "NXDOMAIN" {
			v.summary = "no TXT record (NODATA)"
			text = fmt.Sprintf("%s exists but holds no TXT record (NODATA)", c.r.DNSName)
		}
		v.add(Fail, text+"; verifiers answer permerror \"no key for signature\"",
			c.publishHint("publish"),
			fmt.Sprintf("if you published it already, check the name: it must be exactly %s, for selector %q and domain %q of keys.%s (in a DNS control panel the host field usually takes only %s._domainkey: the full name there gives %s.%s)",
				c.r.DNSName, c.r.Selector, c.r.Domain, c.k.Name, c.r.Selector, c.r.DNSName, c.r.Domain),
			"if you published it just now, resolvers that cached its absence keep that for the zone's negative TTL (the SOA minimum): check again after that")
	case de.IsTimeout:
		v.summary = "no answer (" + de.Err + ")"
		v.add(Temp, fmt.Sprintf("no answer (%s): the key could not be checked there", de.Err),
			"check that the server is up and reachable (dig @SERVER "+c.r.DNSName+" TXT), or raise [dns] timeout / -timeout if it is slow")
	case strings.Contains(de.Err, "connection refused"):
		// Not the zone's fault: the resolver asked is not there.
		v.summary = "no DNS server (connection refused)"
		v.add(Temp, "connection refused: nothing answers DNS at "+a.Resolver+"; the key could not be checked there",
			"the resolver is not running or listens elsewhere: start it, or fix [dns] nameservers (or give -resolver)")
	default:
		v.summary = "lookup failed (" + de.Err + ")"
		hint := "check again later; if it persists, the zone's name servers or its DNSSEC are broken: 'dig +cd " + c.r.DNSName + " TXT' answering where 'dig " + c.r.DNSName + " TXT' fails points at DNSSEC"
		switch {
		case de.Err == "REFUSED":
			hint = "the server refuses to answer this host: it does not offer recursion to it, or, for a zone's own server, it is not authoritative for the zone (a lame delegation: fix the zone's NS records)"
		case strings.HasPrefix(de.Err, "not authoritative"):
			hint = "the server is listed as a name server of the zone but does not serve it (a lame delegation): fix the zone's NS records or the server's configuration"
		}
		v.add(Temp, fmt.Sprintf("%s: the key could not be checked there", de.Err), hint)
	}
}
