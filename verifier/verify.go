// Package verifier checks DKIM signatures (RFC 6376 §6) of a message that
// arrives as a header block and then body chunks, and turns each into one
// of the seven results of RFC 8601 §2.7.1 with a reason an operator can act
// on.
//
// Key lookups for every signature start as soon as the header block is
// known, in parallel, so DNS latency overlaps the body transfer; bodies are
// canonicalized and hashed as they stream, once per distinct (c=, l=,
// hash) triple: rsa-sha1 signatures are checked too (a broken one fails,
// one that verifies is policy, RFC 8301 §3.1) and get SHA-1 hashers of
// their own, so messages without them hash as before.
//
// go-msgauth v0.7.0's dkim.Verify is not used here, for gaps that matter to
// the result table (doc/results.md): it checks x= against the wall clock with no
// skew and no seam, never checks t=, fails every l= signature, hides the
// key's size and t= flags and the selector, permerrors on several TXT
// records, compares i= and d= case-sensitively, and looks keys up one
// signature at a time before reading the body. The tests use it as an
// independent verifier of what our signer produces.
package verifier

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/dkim"
	"github.com/dkimmilter/dkimmilter/internal/dns"
)

// Options configure a Verifier. The zero value of a field selects its
// default; New fills them in.
type Options struct {
	Resolver      dns.Resolver     // where keys are looked up (required)
	Now           func() time.Time // the clock for x= and t=; nil: time.Now
	MinRSABits    int              // RSA keys under this are policy; at least dkim.MinRSABits
	MaxSignatures int              // signatures verified per message; 0: 8
	Timeout       time.Duration    // bound on waiting for keys, per message; 0: 10s
	Skew          time.Duration    // clock skew allowed for t= and x=; 0: 5 minutes
}

// ConfigOptions are the options the configuration gives, with keys
// looked up through r. The message waits for its keys one second longer
// than the resolver's dns.timeout, so that the resolver's own answer (a
// timeout naming the server) wins.
func ConfigOptions(cfg *config.Config, r dns.Resolver) Options {
	return Options{
		Resolver:      r,
		MinRSABits:    cfg.Verify.MinRSABits,
		MaxSignatures: cfg.Verify.MaxSignatures,
		Timeout:       cfg.DNS.Timeout + time.Second,
	}
}

// Verifier holds what every message shares. It is safe for concurrent
// use.
type Verifier struct {
	opts Options
	// records keeps parsed key records by their text: the key cache
	// serves the same record to every message from a domain, and parsing
	// it (base64, ASN.1) each time is most of a verification after the
	// RSA operation itself.
	records *recordCache
}

// New returns a Verifier with opts, defaults filled in.
func New(opts Options) *Verifier {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	opts.MinRSABits = max(opts.MinRSABits, dkim.MinRSABits)
	if opts.MaxSignatures <= 0 {
		opts.MaxSignatures = 8
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.Skew <= 0 {
		opts.Skew = 5 * time.Minute
	}
	return &Verifier{opts: opts, records: newRecordCache()}
}

// Options returns the verifier's options, defaults filled in: change one
// and call New for a verifier that differs only in that.
func (v *Verifier) Options() Options { return v.opts }

// Message verifies one message. Write the body to it, then call Finish;
// call Close if the message is abandoned.
type Message struct {
	v       *Verifier
	header  dkim.Header
	sigs    []*dkim.Signature
	timeErr []error // x= and t= judged once, at end of headers
	extra   int     // signatures beyond MaxSignatures
	max     int     // Options.MaxSignatures
	lookups map[string]*lookup
	bodies  map[bodyKey]*dkim.BodyHasher
	ctx     context.Context
	cancel  context.CancelFunc
}

// bodyKey names one body hash: signatures that agree on all three share
// it. sha1 is set for rsa-sha1, whose body is hashed with SHA-1; a bool
// beside canon keeps the key 16 bytes, as it was before rsa-sha1 was
// verified, so the maps keyed by it cost messages without one nothing.
type bodyKey struct {
	canon dkim.Canon
	sha1  bool
	limit int64
}

type lookup struct {
	done chan struct{}
	res  *dns.TXTResult
	err  error
}

// Begin parses the DKIM-Signature fields of h and starts their key lookups.
// ctx bounds the lookups together with Options.Timeout.
func (v *Verifier) Begin(ctx context.Context, h dkim.Header) *Message {
	m := &Message{v: v, header: h, max: v.opts.MaxSignatures, lookups: map[string]*lookup{}, bodies: map[bodyKey]*dkim.BodyHasher{}}
	m.ctx, m.cancel = context.WithTimeout(ctx, v.opts.Timeout)
	for _, f := range h {
		if !dkim.EqualFoldASCII(f.Name, "DKIM-Signature") {
			continue
		}
		if len(m.sigs) == m.max {
			m.extra++
			continue
		}
		s := dkim.ParseSignature(f)
		m.sigs = append(m.sigs, s)
		var terr error
		if s.Err == nil {
			terr = m.checkTime(s)
		}
		m.timeErr = append(m.timeErr, terr)
		if s.Err != nil || terr != nil {
			continue
		}
		bk := bodyKey{s.BodyCanon, s.Hash == "sha1", s.Length}
		if m.bodies[bk] == nil {
			m.bodies[bk] = dkim.NewBodyHasher(s.BodyCanon, s.NewHash(), s.Length)
		}
		name := strings.ToLower(s.DNSName())
		if m.lookups[name] == nil {
			l := &lookup{done: make(chan struct{})}
			m.lookups[name] = l
			go func() {
				defer close(l.done)
				l.res, l.err = v.opts.Resolver.LookupTXT(m.ctx, name)
			}()
		}
	}
	return m
}

// Signed reports whether the message has any DKIM-Signature field.
func (m *Message) Signed() bool { return len(m.sigs) > 0 }

// Write feeds a body chunk. It never fails.
func (m *Message) Write(p []byte) (int, error) {
	for _, b := range m.bodies {
		b.Write(p)
	}
	return len(p), nil
}

// Close abandons the message: pending lookups are cancelled.
func (m *Message) Close() { m.cancel() }

// Finish ends the body and returns one Verification per DKIM-Signature
// field, top to bottom; nil for an unsigned message. Beyond MaxSignatures,
// as many again are listed as neutral ("too many signatures") and the rest
// not at all: a message of a thousand junk signatures would otherwise make
// us stamp an Authentication-Results field of hundreds of kilobytes, and
// an unlisted signature is no more a pass than a neutral one.
func (m *Message) Finish() []*Verification {
	defer m.cancel()
	sums := map[bodyKey][]byte{}
	for k, b := range m.bodies {
		sums[k] = b.Sum()
	}
	var out []*Verification
	for i, s := range m.sigs {
		out = append(out, m.verify(s, m.timeErr[i], sums))
	}
	listed := min(m.extra, m.max)
	for i := 0; i < listed; i++ {
		out = append(out, &Verification{Result: Neutral, Err: ErrTooMany})
	}
	if listed > 0 {
		// Name the ignored signatures too, so A-R tells them apart.
		i := 0
		for _, f := range m.header {
			if i == len(out) {
				break
			}
			if dkim.EqualFoldASCII(f.Name, "DKIM-Signature") {
				if i >= len(m.sigs) {
					s := dkim.ParseSignature(f)
					v := out[i]
					v.Signature, v.Domain, v.Selector, v.Algorithm, v.B = s, s.Domain, s.Selector, s.Algorithm, s.B
					v.Identity = s.Identity
				}
				i++
			}
		}
	}
	return out
}

func (m *Message) verify(s *dkim.Signature, timeErr error, sums map[bodyKey][]byte) *Verification {
	v := &Verification{
		Signature: s, Domain: s.Domain, Identity: s.Identity, Selector: s.Selector,
		Algorithm: s.Algorithm, B: s.B,
	}
	fail := func(r Result, err error) *Verification {
		v.Result, v.Err = r, err
		return v
	}
	if s.Err != nil {
		// RFC 6376 §6.1.1: a signature that cannot be evaluated is
		// PERMFAIL.
		return fail(PermError, s.Err)
	}
	if timeErr != nil {
		return fail(PermError, timeErr)
	}

	v.DNSName = s.DNSName()
	l := m.lookups[strings.ToLower(v.DNSName)]
	select {
	case <-l.done:
	default:
		// Still waiting: wait no longer than the message's DNS bound.
		select {
		case <-l.done:
		case <-m.ctx.Done():
			return fail(TempError, ErrDNSTimeout)
		}
	}
	if l.err != nil {
		return fail(dnsResult(l.err))
	}
	v.Authenticated = l.res.Authenticated
	v.Stale = l.res.Stale

	keys, err := m.v.parseKeys(l.res.Records)
	if err != nil {
		return fail(PermError, err)
	}
	// RFC 6376 §3.6.2.2 leaves several records undefined; use the first
	// that verifies, and report on the first one otherwise. A key the
	// signature verifies with but that is not a pass (rsa-sha1, l=, an
	// unsigned From: policy) beats a key it fails with: the signature is
	// not broken.
	var first, verified *Verification
	for _, k := range keys {
		r, ok := m.verifyWithKey(s, k, sums, *v)
		if r.Result == Pass {
			return r
		}
		if ok && verified == nil {
			verified = r
		}
		if first == nil {
			first = r
		}
	}
	if verified != nil {
		return verified
	}
	return first
}

// parsedKey is one candidate key record.
type parsedKey struct {
	text string
	rec  *dkim.KeyRecord
	err  error
}

// parseKeys keeps the TXT records that are DKIM key records (another TXT
// record may share the name). With none left the reason says why.
func (v *Verifier) parseKeys(records []string) ([]parsedKey, error) {
	if len(records) == 0 {
		return nil, ErrNoKey
	}
	var keys []parsedKey
	var notKey error
	for _, t := range records {
		rec, err := v.records.parse(t)
		if errors.Is(err, dkim.ErrNotKeyRecord) {
			if notKey == nil {
				notKey = err
			}
			continue
		}
		keys = append(keys, parsedKey{text: t, rec: rec, err: err})
	}
	if len(keys) == 0 {
		if len(records) == 1 {
			// One record that is not usable as a key: say what is wrong
			// with it rather than "no key".
			return nil, notKey
		}
		return nil, fmt.Errorf("%w (%d TXT records, none a DKIM key)", ErrNoKey, len(records))
	}
	return keys, nil
}

// verifyWithKey checks s with one key record; verified reports that the
// body hash and the signature checked out, whatever the result says.
func (m *Message) verifyWithKey(s *dkim.Signature, k parsedKey, sums map[bodyKey][]byte, v Verification) (_ *Verification, verified bool) {
	fail := func(r Result, err error) (*Verification, bool) {
		v.Result, v.Err = r, err
		return &v, false
	}
	v.Record = k.text
	if k.rec != nil {
		v.KeyType, v.KeyBits, v.Testing = k.rec.KeyType, k.rec.Bits, k.rec.Testing()
	}
	switch {
	case errors.Is(k.err, dkim.ErrKeyRevoked):
		return fail(PermError, ErrKeyRevoked)
	case k.err != nil:
		return fail(PermError, k.err)
	}
	rec := k.rec
	if rec.KeyType != s.KeyType {
		return fail(PermError, fmt.Errorf("key type k=%s does not match a=%s", rec.KeyType, s.Algorithm))
	}
	if !rec.AllowsHash(s.Hash) {
		return fail(PermError, fmt.Errorf("key record h=%s does not allow %s", strings.Join(rec.Hashes, ":"), s.Hash))
	}
	if !rec.AllowsEmail() {
		return fail(PermError, fmt.Errorf("key record s=%s is not for email", strings.Join(rec.Services, ":")))
	}
	if rec.Strict() {
		// t=s: the i= domain must be exactly d= (RFC 6376 §3.6.1).
		if at := strings.LastIndexByte(s.Identity, '@'); !strings.EqualFold(strings.TrimSuffix(s.Identity[at+1:], "."), s.Domain) {
			return fail(PermError, fmt.Errorf("key record t=s forbids i= in a subdomain of d="))
		}
	}
	if rec.KeyType == "rsa" {
		if rec.Bits < m.v.opts.MinRSABits {
			return fail(Policy, fmt.Errorf("%w (%d bits)", dkim.ErrKeyTooShort, rec.Bits))
		}
		if rec.Bits > dkim.MaxRSABits {
			// RFC 8301 §3.2 asks verifiers to handle up to 4096 bits;
			// larger keys are a denial-of-service lever.
			return fail(PermError, fmt.Errorf("key too long (%d bits, at most %d)", rec.Bits, dkim.MaxRSABits))
		}
	}

	bk := bodyKey{s.BodyCanon, s.Hash == "sha1", s.Length}
	body := m.bodies[bk]
	if s.Length >= 0 && body.Length() < s.Length {
		return fail(Fail, ErrBodyTooShort)
	}
	if subtle.ConstantTimeCompare(sums[bk], s.BodyHash) != 1 {
		return fail(Fail, ErrBodyHash)
	}

	input := s.AppendHeaderHashInput(make([]byte, 0, 2048), m.header)
	var ok bool
	switch pub := rec.Key.(type) {
	case *rsa.PublicKey:
		if s.Hash == "sha1" {
			sum := sha1.Sum(input)
			ok = rsa.VerifyPKCS1v15(pub, crypto.SHA1, sum[:], s.Sig) == nil
		} else {
			sum := sha256.Sum256(input)
			ok = rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], s.Sig) == nil
		}
	case ed25519.PublicKey:
		sum := sha256.Sum256(input)
		ok = ed25519.Verify(pub, sum[:], s.Sig)
	}
	if !ok {
		return fail(Fail, ErrSignature)
	}

	// The signature is good. What it does not cover, or its algorithm,
	// can still make it unacceptable.
	policy := func(err error) (*Verification, bool) {
		v.Result, v.Err = Policy, err
		return &v, true
	}
	if s.Hash == "sha1" {
		// RFC 8301 §3.1: verifiers MUST NOT consider rsa-sha1 valid. It
		// verified, so it is policy, never pass; said before l= and From,
		// as the algorithm alone already refuses it.
		return policy(dkim.ErrSHA1)
	}
	if s.Length >= 0 && body.Length() > s.Length {
		// RFC 6376 §8.2: content appended after l= is unsigned.
		return policy(ErrUnsignedContent)
	}
	if m.header.Count("From") > countName(s.Headers, "from") {
		// A From added above the signed one is what the reader sees
		// (RFC 6376 §8.15): the signature does not vouch for it.
		return policy(ErrUnsignedFrom)
	}
	v.Result, v.Err = Pass, nil
	return &v, true
}

// checkTime applies x= and t= with the allowed clock skew.
func (m *Message) checkTime(s *dkim.Signature) error {
	skew := m.v.opts.Skew
	now := m.v.opts.Now()
	if s.HasExpire && now.After(s.Expire.Add(skew)) {
		return ErrExpired
	}
	if s.HasTime && s.Time.After(now.Add(skew)) {
		return ErrFuture
	}
	return nil
}

func countName(names []string, name string) int {
	n := 0
	for _, x := range names {
		if dkim.EqualFoldASCII(x, name) {
			n++
		}
	}
	return n
}

// dnsResult maps a lookup error to a result: a missing record is a
// permanent failure, a resolver that could not answer a temporary one
// (RFC 6376 §6.1.2).
func dnsResult(err error) (Result, error) {
	var de *net.DNSError
	if errors.As(err, &de) {
		switch {
		case de.IsNotFound:
			return PermError, ErrNoKey
		case de.IsTimeout:
			return TempError, ErrDNSTimeout
		}
		return TempError, ErrDNSFailure
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return TempError, ErrDNSTimeout
	}
	return TempError, ErrDNSFailure
}
