// Package dnsupdate publishes, revokes and deletes DKIM key records: by
// RFC 2136 dynamic updates signed with TSIG (RFC 8945) sent to a zone's
// primary server, or by running a command for DNS providers that have an
// API of their own.
package dnsupdate

import (
	"context"
	"errors"
	"fmt"
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
// A TSIG key file is read here, so that a mistake in it shows at start.
func New(p *config.Publisher, nameservers []string, timeout time.Duration) (Publisher, error) {
	return newPublisher(p, nameservers, timeout, 53)
}

// newPublisher is New with the port of a primary found from the SOA's
// MNAME (RFC 2136 updates go to port 53; tests serve elsewhere).
func newPublisher(p *config.Publisher, nameservers []string, timeout time.Duration, mnamePort int) (Publisher, error) {
	if p == nil {
		return nil, errors.New("dnsupdate: no [publish.NAME] table")
	}
	switch p.Method {
	case "rfc2136":
		return newRFC2136(p, nameservers, timeout, mnamePort)
	case "command":
		return newCommand(p)
	}
	return nil, fmt.Errorf("[publish.%s] method %q: want \"rfc2136\" (a dynamic update) or \"command\" (a program run for each change)", p.Name, p.Method)
}
