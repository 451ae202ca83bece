// Package explain says why the signatures of a saved message fail, for
// `dkimmilter verify`.
//
// The results are the milter's own: Explain runs the same verifier over
// the message. What it adds is the why an operator otherwise gets with dig,
// openssl and guesswork (OpenDKIM's "bad signature data" and nothing more):
// what the DNS answered, the body hashes under both canonicalizations, a
// probe for the usual culprits of a body hash failure (a footer, white
// space, line ends; probe.go), the exact signed header block and
// the usual culprits of a header failure (header.go), whether an
// expired signature would otherwise verify, and DMARC alignment
// (internal/dmarc).
//
// The message is verified again for the what-ifs, with every DNS answer of
// the first run replayed, so that they cost no queries and see the same
// keys.
package explain

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/dkimmilter/dkimmilter/internal/dkim"
	"github.com/dkimmilter/dkimmilter/internal/dmarc"
	"github.com/dkimmilter/dkimmilter/internal/dns"
	"github.com/dkimmilter/dkimmilter/verifier"
)

// Report explains the DKIM verification of one message.
type Report struct {
	Header dkim.Header
	Body   []byte    // with CRLF line ends, as on the wire
	Notes  []string  // how the file was read (line ends, an mbox From line)
	Now    time.Time // the clock the results were computed with

	AuthorDomain string // RFC5322.From domain; "" when AuthorErr is set
	AuthorErr    error

	// Verifications are the milter's results, top to bottom: feed them to
	// verifier.AuthResults. Signatures explains each, in the same order.
	Verifications []*verifier.Verification
	Signatures    []*Explanation
}

// Explanation is everything known about one signature.
type Explanation struct {
	Verification *verifier.Verification // the result the milter stamps
	// Detail is the verification the rest explains: Verification, or for
	// a signature rejected by its dates, Clock.Otherwise.
	Detail *verifier.Verification

	Clock         *ClockCheck      // x= or t= rejected the signature
	DNS           *DNSAnswer       // the key lookup; nil when none was made
	BodyHashes    *BodyHashes      // nil when the signature could not be parsed
	Probe         *Probe           // body hash failures
	SignedHeaders []string         // header failures: the canonical block hashed, line by line
	HeaderHints   []string         // header failures: what probably changed
	Alignment     *dmarc.Alignment // nil without a usable From domain
}

// ClockCheck tells "expired, otherwise valid" from "expired and broken".
type ClockCheck struct {
	Expired bool      // x= has passed; else t= is in the future
	At      time.Time // x= when Expired, else t=
	// RunAt is the clock of the second verification: t= (x= minus one
	// second without t=) for an expired signature, t= for a future one.
	RunAt     time.Time
	Otherwise *verifier.Verification
}

// DNSAnswer is what the key lookup returned.
type DNSAnswer struct {
	Name          string
	Records       []string
	Authenticated bool // AD bit
	Err           error
	ttl           time.Duration
}

// Outcome describes the answer in DNS terms: the record count, NXDOMAIN,
// NODATA, timeout, SERVFAIL, with the server that said so.
func (a *DNSAnswer) Outcome() string {
	if a.Err == nil {
		if len(a.Records) == 1 {
			return "1 TXT record"
		}
		return fmt.Sprintf("%d TXT records", len(a.Records))
	}
	var de *net.DNSError
	if !errors.As(a.Err, &de) {
		return a.Err.Error()
	}
	s := de.Err
	switch {
	case de.IsNotFound && de.Err == "NXDOMAIN":
		s = "NXDOMAIN (no such name)"
	case de.IsNotFound && de.Err == "no TXT record":
		s = "NODATA (the name exists but has no TXT record)"
	}
	if de.Server != "" {
		s += " from " + de.Server
	}
	return s
}

// BodyHashes are the body hashes of the message as it is now, beside bh=,
// with the signature's hash (SHA-1 for rsa-sha1).
type BodyHashes struct {
	Signed          []byte     // bh=
	Canon           dkim.Canon // the body canonicalization c= names
	Simple, Relaxed []byte     // computed, honouring l=
}

// Computed returns the hash under the signature's own canonicalization.
func (b *BodyHashes) Computed() []byte {
	if b.Canon == dkim.Relaxed {
		return b.Relaxed
	}
	return b.Simple
}

// OtherMatches reports that bh= matches the canonicalization the signature
// does not name: the signer declared one and used the other.
func (b *BodyHashes) OtherMatches() bool {
	other := b.Relaxed
	if b.Canon == dkim.Relaxed {
		other = b.Simple
	}
	return !bytes.Equal(b.Computed(), b.Signed) && bytes.Equal(other, b.Signed)
}

// Explain verifies a saved message (LF or CRLF line ends, as sent or as
// delivered) with a verifier made with opts, the milter's, and explains
// every signature. It fails only when raw has no header fields.
func Explain(ctx context.Context, opts verifier.Options, raw []byte) (*Report, error) {
	h, body, notes := dkim.SplitMessage(raw)
	if len(h) == 0 {
		return nil, errors.New("no header fields: not a mail message")
	}
	rec := &recorder{r: opts.Resolver, m: map[string]*DNSAnswer{}}
	opts.Resolver = rec
	now := time.Now()
	if opts.Now != nil {
		now = opts.Now()
	}
	opts.Now = func() time.Time { return now } // one clock for every re-run
	base := verifier.New(opts)

	rep := &Report{Header: h, Body: body, Notes: notes, Now: now}
	rep.AuthorDomain, rep.AuthorErr = dmarc.AuthorDomain(h)
	rep.Verifications = run(ctx, base, h, body)
	aligner := dmarc.NewAligner(rec)
	for i, r := range rep.Verifications {
		e := &Explanation{Verification: r, Detail: r}
		rep.Signatures = append(rep.Signatures, e)
		s := r.Signature
		if s == nil || s.Err != nil || errors.Is(r.Err, verifier.ErrTooMany) {
			continue
		}
		vv := base
		if errors.Is(r.Err, verifier.ErrExpired) || errors.Is(r.Err, verifier.ErrFuture) {
			e.Clock, vv = clockCheck(ctx, base, h, body, i, s, errors.Is(r.Err, verifier.ErrExpired))
			e.Detail = e.Clock.Otherwise
		}
		e.DNS = rec.answer(s.DNSName())
		e.BodyHashes = bodyHashes(s, body)
		switch {
		case errors.Is(e.Detail.Err, verifier.ErrBodyHash):
			e.Probe = probeBody(ctx, vv, h, body, i, s, e.BodyHashes)
		case errors.Is(e.Detail.Err, verifier.ErrSignature):
			e.SignedHeaders = signedHeaderLines(h, s)
			e.HeaderHints = headerHints(ctx, vv, h, body, i, s, e.Detail.Record)
		}
		if rep.AuthorErr == nil {
			e.Alignment = aligner.Align(ctx, rep.AuthorDomain, s.Domain)
		}
	}
	return rep, nil
}

// run verifies a whole message at once.
func run(ctx context.Context, v *verifier.Verifier, h dkim.Header, body []byte) []*verifier.Verification {
	m := v.Begin(ctx, h)
	m.Write(body)
	return m.Finish()
}

// passes reports whether signature i of the message verifies.
func passes(ctx context.Context, v *verifier.Verifier, h dkim.Header, body []byte, i int) bool {
	res := run(ctx, v, h, body)
	return i < len(res) && Verified(res[i])
}

// Verified reports that the signature checked out: a pass, or an rsa-sha1
// signature that verifies, which is policy however good it is (RFC 8301
// §3.1). The what-ifs ask this: no change undone makes rsa-sha1 pass, but
// one can still be what broke it.
func Verified(v *verifier.Verification) bool {
	return v.Result == verifier.Pass || errors.Is(v.Err, dkim.ErrSHA1)
}

// clockCheck verifies again with the clock at signing time (RFC 6376
// §3.5: t= is when the signature was made), which is when the signature
// last had to be valid. It returns the verifier with that clock, for the
// probes.
func clockCheck(ctx context.Context, v *verifier.Verifier, h dkim.Header, body []byte, i int, s *dkim.Signature, expired bool) (*ClockCheck, *verifier.Verifier) {
	c := &ClockCheck{Expired: expired}
	switch {
	case c.Expired:
		c.At = s.Expire
		c.RunAt = s.Expire.Add(-time.Second)
		if s.HasTime {
			c.RunAt = s.Time
		}
	default:
		c.At, c.RunAt = s.Time, s.Time
	}
	opts := v.Options()
	opts.Now = func() time.Time { return c.RunAt }
	at := verifier.New(opts)
	c.Otherwise = run(ctx, at, h, body)[i]
	return c, at
}

func bodyHashes(s *dkim.Signature, body []byte) *BodyHashes {
	return &BodyHashes{
		Signed:  s.BodyHash,
		Canon:   s.BodyCanon,
		Simple:  hashBody(s, dkim.Simple, body),
		Relaxed: hashBody(s, dkim.Relaxed, body),
	}
}

// hashBody hashes body as s would under canonicalization c: with s's
// hash and l=.
func hashBody(s *dkim.Signature, c dkim.Canon, body []byte) []byte {
	b := dkim.NewBodyHasher(c, s.NewHash(), s.Length)
	b.Write(body)
	return b.Sum()
}

// signedHeaderLines returns exactly what the header hash covers: the
// signed fields, canonicalized, then the DKIM-Signature field without its
// b= value (RFC 6376 §3.7, https://www.rfc-editor.org/rfc/rfc6376#section-3.7).
func signedHeaderLines(h dkim.Header, s *dkim.Signature) []string {
	return strings.Split(string(s.AppendHeaderHashInput(nil, h)), "\r\n")
}

// recorder is a Resolver that keeps every answer of the first
// verification and replays it afterwards: the what-if runs then cost no
// queries, see the same keys, and the report can show what the DNS said
// (the verifier keeps only the record it used).
type recorder struct {
	r  dns.Resolver
	mu sync.Mutex
	m  map[string]*DNSAnswer
}

func (rc *recorder) LookupTXT(ctx context.Context, name string) (*dns.TXTResult, error) {
	key := strings.ToLower(strings.TrimSuffix(name, "."))
	if a := rc.answer(key); a != nil {
		return a.result()
	}
	res, err := rc.r.LookupTXT(ctx, name)
	if errors.Is(err, context.Canceled) {
		return res, err // our own cancellation says nothing about the name
	}
	a := &DNSAnswer{Name: key, Err: err}
	if res != nil {
		a.Records, a.Authenticated, a.ttl = res.Records, res.Authenticated, res.TTL
	}
	rc.mu.Lock()
	if rc.m[key] == nil {
		rc.m[key] = a
	}
	rc.mu.Unlock()
	return res, err
}

func (rc *recorder) answer(name string) *DNSAnswer {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.m[strings.ToLower(strings.TrimSuffix(name, "."))]
}

func (a *DNSAnswer) result() (*dns.TXTResult, error) {
	if a.Err != nil {
		return nil, a.Err
	}
	return &dns.TXTResult{Records: append([]string(nil), a.Records...), TTL: a.ttl, Authenticated: a.Authenticated}, nil
}
