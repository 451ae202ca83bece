package dns

import (
	"context"
	"net"
	"strings"

	mdns "github.com/miekg/dns"
)

// LookupCNAME returns the target of the CNAME RR owned by name, without
// the final dot, or "" when name has other data or none (NODATA); an
// error when name does not exist (IsNotFound) or the lookup failed. Only
// the first link counts: for CNAME delegation of a DKIM key, what the
// customer published is the alias at its own name, wherever the provider
// points it next.
func (r *Client) LookupCNAME(ctx context.Context, name string) (string, error) {
	qname, display, err := queryName(name)
	if err != nil {
		return "", err
	}
	resp, server, err := r.exchange(ctx, qname, mdns.TypeCNAME)
	if err != nil {
		return "", err
	}
	// A resolver may follow the alias and answer NXDOMAIN for a target
	// that does not exist, with the CNAME in the answer: the alias is
	// there all the same.
	for _, rr := range resp.Answer {
		if c, ok := rr.(*mdns.CNAME); ok && strings.EqualFold(c.Hdr.Name, qname) {
			return strings.ToLower(strings.TrimSuffix(c.Target, ".")), nil
		}
	}
	if resp.Rcode == mdns.RcodeNameError {
		return "", &net.DNSError{Err: "NXDOMAIN", Name: display, Server: server, IsNotFound: true}
	}
	return "", nil
}
