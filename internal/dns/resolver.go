// Package dns looks up the DNS records dkimmilter needs: DKIM key
// records (TXT), and for `dkimmilter keys check` the zone and name servers
// that publish them. It speaks DNS itself through github.com/miekg/dns
// (client.go says why), keeps answers for their TTL and key records past
// it for when DNS fails (cache.go, RFC 8767), tells a failing resolver from
// a broken zone (health.go), and has an in-memory resolver for tests
// (fake.go).
//
// Every lookup error is a *net.DNSError, classified as the verifier needs
// it (RFC 6376 §6.1.2): IsNotFound for NXDOMAIN and NODATA, a permanent
// failure; IsTimeout and IsTemporary for everything a retry could fix.
// https://www.rfc-editor.org/rfc/rfc6376#section-6.1.2
package dns

import (
	"context"
	"time"
)

// TXTResult is the answer to a key lookup.
type TXTResult struct {
	// Records holds one element per TXT RR owned by the name (or its CNAME
	// chain target): its character-strings joined with "" and unescaped to
	// raw bytes.
	Records []string
	// TTL is the smallest TTL among the returned TXT RRs and the CNAMEs
	// followed to reach them.
	TTL time.Duration
	// Authenticated reports that the resolver set the AD bit. It is only
	// meaningful when the path to the resolver is trusted (e.g. localhost).
	Authenticated bool
	// Stale reports a record served past its TTL because the resolver
	// failed (serve-stale, RFC 8767; see Cache). StaleFor is how long
	// past its TTL it was.
	Stale    bool
	StaleFor time.Duration
}

// Resolver looks up TXT records. Implementations must be safe for concurrent use.
//
// Errors are *net.DNSError: IsNotFound for NXDOMAIN and NODATA (permanent),
// IsTemporary and/or IsTimeout for everything a retry could fix.
type Resolver interface {
	LookupTXT(ctx context.Context, name string) (*TXTResult, error)
}
