// Package dnsupdate publishes, revokes and deletes DKIM key records: by
// RFC 2136 dynamic updates signed with TSIG (RFC 8945) sent to a zone's
// primary server, or by running a command for DNS providers that have an
// API of their own.
package dnsupdate

import (
	"context"
	"errors"
	"time"

	"github.com/dkimmilter/dkimmilter/config"
)

// Action is what a Change does to the TXT records at a name.
type Action int

const (
	Add    Action = iota // publish Value at Name (a new key's record)
	Revoke               // replace the key's record with Value, a revoked one (p= empty, RFC 6376 §3.6.1)
	Delete               // remove the TXT records at Name
)

func (a Action) String() string {
	switch a {
	case Add:
		return "add"
	case Revoke:
		return "revoke"
	}
	return "delete"
}

// Change is one record change.
type Change struct {
	Action Action
	Name   string // the record's name, without the final dot: s1._domainkey.example.com
	Value  string // the TXT value, whole ("v=DKIM1; k=rsa; p=..."); "" for Delete
	// Expect is the record the change expects to find: "" for Add (no
	// TXT record at Name), the record published for Revoke, the revoked
	// one for Delete. An RFC 2136 update makes it a prerequisite
	// (RFC 2136 §2.4), so that a record changed by hand is never
	// overwritten. Empty for Revoke or Delete: no prerequisite.
	Expect string
}

// Publisher applies changes.
type Publisher interface {
	// Apply makes the change. What the server or command said goes into
	// the error, or into out when it succeeded (a command's output).
	// ErrChanged (wrapped) means the record at Name was not what Expect
	// says.
	Apply(ctx context.Context, c Change) (out string, err error)
	// Describe says what Apply would send, for -n: the update in
	// nsupdate(1)'s syntax, or the command line.
	Describe(c Change) string
}

// ErrChanged: the record at the name is not the one expected, so nothing
// was changed: someone edited it by hand, or another system uses the name.
var ErrChanged = errors.New("the record is not the one expected")

// New returns the Publisher a [publish.NAME] table describes. nameservers
// and timeout ([dns]) are the resolvers used to find a zone and its
// primary when the table does not name them (empty: /etc/resolv.conf).
func New(p *config.Publisher, nameservers []string, timeout time.Duration) (Publisher, error) {
	return nil, errors.New("dnsupdate: publishing is not implemented yet")
}
