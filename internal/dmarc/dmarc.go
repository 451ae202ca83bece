// Package dmarc tells whether a DKIM signing domain (d=) aligns with the
// author domain (RFC5322.From) as DMARC judges it, for the explanations
// of dkimmilter verify. The milter does not apply DMARC; this only tells
// an operator whether a signature would count for it.
//
// Strict alignment is an exact, case-insensitive comparison; relaxed
// alignment asks for the same Organizational Domain (RFC 9989 §4.4.1,
// https://www.rfc-editor.org/rfc/rfc9989#section-4.4.1). RFC 9989 finds the
// Organizational Domain with a DNS Tree Walk over _dmarc TXT records
// (§4.10, https://www.rfc-editor.org/rfc/rfc9989#section-4.10) instead of
// RFC 7489's Public Suffix List, so there is no list snapshot to go stale.
// When the DNS cannot be reached the walk is replaced by a last-two-labels
// heuristic, and the result says so.
package dmarc

//lint:file-ignore ST1005 errors name the From field, the author domain's source, as the reader knows it

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/dkimmilter/dkimmilter/internal/dkim"
	"github.com/dkimmilter/dkimmilter/internal/dns"
)

// OrgMethod says how an Organizational Domain was found.
type OrgMethod string

const (
	OrgByTreeWalk  OrgMethod = "RFC 9989 DNS tree walk"
	OrgByHeuristic OrgMethod = "heuristic: DNS unavailable"
)

// maxTreeWalkQueries is RFC 9989 §4.10's bound: a name with eight labels
// or more is shortened to seven after the first query.
const maxTreeWalkQueries = 8

// Query is one _dmarc query of a tree walk and what came back.
type Query struct {
	Name   string // _dmarc.<domain>
	Record string // the one valid DMARC policy record, "" if none
	PSD    string // its psd= value: "y", "n", "u" or ""
	Answer string // what the DNS said, for people: "NXDOMAIN", the record, …
}

// OrgDomain is the Organizational Domain of Domain and how it was found.
type OrgDomain struct {
	Domain  string
	Org     string
	Method  OrgMethod
	Why     string  // which rule chose Org
	Queries []Query // in the order they were made
	// Found reports that a DMARC policy record exists at Domain or above
	// it; without one DMARC does not apply to a message from Domain
	// (RFC 9989 §4.10.1).
	Found  bool
	DNSErr error // the failure that made Method the heuristic
}

// treeWalkTargets lists the names whose _dmarc records a walk from domain
// queries, in order: the domain itself, then (after shortening a long name
// to its 7-label suffix) one label less each time, down to the TLD. At most
// eight names (RFC 9989 §4.10 steps 1–7).
func treeWalkTargets(domain string) []string {
	labels := strings.Split(domain, ".")
	out := []string{domain}
	rest := labels[1:]
	if len(labels) >= maxTreeWalkQueries {
		rest = labels[len(labels)-(maxTreeWalkQueries-1):]
	}
	for ; len(rest) > 0; rest = rest[1:] {
		out = append(out, strings.Join(rest, "."))
	}
	return out
}

// OrganizationalDomain runs the DNS Tree Walk of RFC 9989 §4.10 from domain
// and selects the Organizational Domain as §4.10.2 says: the record with
// psd=n, else the domain one label below a psd=y record (not the starting
// one), else the record with the fewest labels; with no record at all, the
// domain itself. A DNS failure other than "no such record" ends the walk:
// its answer could have changed the choice, so the last-two-labels
// heuristic answers instead, and Method says so.
func OrganizationalDomain(ctx context.Context, r dns.Resolver, domain string) *OrgDomain {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	o := &OrgDomain{Domain: domain, Method: OrgByTreeWalk}
	if domain == "" {
		o.Why = "no domain"
		return o
	}
	var found []Query
	for _, target := range treeWalkTargets(domain) {
		q, err := queryDMARC(ctx, r, target)
		o.Queries = append(o.Queries, q)
		if err != nil {
			o.DNSErr = err
			return heuristicOrg(o)
		}
		if q.Record == "" {
			continue
		}
		found = append(found, q)
		if q.PSD == "y" || q.PSD == "n" {
			// Steps 2 and 6: a record that states psd= ends the walk.
			break
		}
	}
	o.Found = len(found) > 0
	for _, q := range found { // longest to shortest
		d := strings.TrimPrefix(q.Name, "_dmarc.")
		switch {
		case q.PSD == "n":
			o.Org, o.Why = d, "psd=n at "+q.Name
			return o
		case q.PSD == "y" && d != domain:
			o.Org = oneLabelBelow(domain, d)
			o.Why = "one label below the public suffix domain " + d + " (psd=y at " + q.Name + ")"
			return o
		}
	}
	if len(found) == 0 {
		o.Org = domain
		o.Why = "no DMARC record at " + domain + " or above it, so the domain is its own (RFC 9989 §4.10.2)"
		return o
	}
	last := found[len(found)-1]
	o.Org = strings.TrimPrefix(last.Name, "_dmarc.")
	o.Why = "the DMARC record with the fewest labels is at " + last.Name
	return o
}

// oneLabelBelow returns the suffix of domain that has one label more than
// parent.
func oneLabelBelow(domain, parent string) string {
	labels := strings.Split(domain, ".")
	n := strings.Count(parent, ".") + 2
	return strings.Join(labels[len(labels)-n:], ".")
}

// heuristicOrg answers with the last two labels: right for most names,
// wrong under multi-label public suffixes (co.uk, com.au).
func heuristicOrg(o *OrgDomain) *OrgDomain {
	labels := strings.Split(o.Domain, ".")
	if len(labels) > 2 {
		labels = labels[len(labels)-2:]
	}
	o.Method = OrgByHeuristic
	o.Org = strings.Join(labels, ".")
	why := "the last two labels (wrong under suffixes such as co.uk)"
	if o.DNSErr != nil {
		why += "; the DNS tree walk failed: " + o.DNSErr.Error()
	}
	o.Why = why
	return o
}

// queryDMARC asks for the DMARC policy record of target. An error is
// returned only for failures that say nothing about the record (timeouts,
// SERVFAIL); NXDOMAIN and NODATA are answers.
func queryDMARC(ctx context.Context, r dns.Resolver, target string) (Query, error) {
	q := Query{Name: "_dmarc." + target}
	res, err := r.LookupTXT(ctx, q.Name)
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			q.Answer = de.Err
			return q, nil
		}
		q.Answer = err.Error()
		return q, err
	}
	var recs []string
	for _, t := range res.Records {
		if isDMARCRecord(t) {
			recs = append(recs, t)
		}
	}
	switch len(recs) {
	case 0:
		q.Answer = fmt.Sprintf("no DMARC record (%d other TXT records)", len(res.Records))
	case 1:
		q.Record, q.Answer = recs[0], recs[0]
		q.PSD = dmarcTag(recs[0], "psd")
	default:
		// RFC 9989 §4.10 step 2: several records are all discarded.
		q.Answer = fmt.Sprintf("%d DMARC records, all ignored (RFC 9989 §4.10)", len(recs))
	}
	return q, nil
}

// isDMARCRecord: a record whose first tag is v=DMARC1 (RFC 9989 §4.7).
func isDMARCRecord(t string) bool {
	tags := dkim.ParseTagListLoose(t)
	return len(tags) > 0 && tags[0].Name == "v" && tags[0].Value == "DMARC1"
}

func dmarcTag(t, name string) string {
	v, _ := dkim.ParseTagListLoose(t).Get(name)
	return strings.ToLower(v)
}

// Alignment is how a signing domain aligns with the author domain.
type Alignment struct {
	AuthorDomain  string // RFC5322.From domain
	SigningDomain string // d=
	Strict        bool   // identical, ignoring case
	Relaxed       bool   // same Organizational Domain
	// Author and Signing are the Organizational Domains; nil when the
	// domains are identical and no lookup was needed.
	Author, Signing *OrgDomain
}

// Method says which method gave the relaxed answer: the heuristic if
// either side needed it; "" when the domains are identical.
func (a *Alignment) Method() OrgMethod {
	switch {
	case a.Author == nil:
		return ""
	case a.Author.Method == OrgByHeuristic || a.Signing.Method == OrgByHeuristic:
		return OrgByHeuristic
	}
	return OrgByTreeWalk
}

// Aligner compares signing domains with one author domain's, keeping the
// Organizational Domains it finds: the signatures of a message share them,
// and once a walk had to fall back on the heuristic, later ones do too
// without waiting for the DNS again. It is not safe for concurrent use.
type Aligner struct {
	r    dns.Resolver
	memo map[string]*OrgDomain
}

// NewAligner returns an Aligner that asks r.
func NewAligner(r dns.Resolver) *Aligner {
	return &Aligner{r: r, memo: map[string]*OrgDomain{}}
}

// Align compares the signing domain sdid with the author domain.
func (al *Aligner) Align(ctx context.Context, author, sdid string) *Alignment {
	a := &Alignment{
		AuthorDomain:  strings.ToLower(strings.TrimSuffix(author, ".")),
		SigningDomain: strings.ToLower(strings.TrimSuffix(sdid, ".")),
	}
	if a.AuthorDomain == a.SigningDomain {
		a.Strict, a.Relaxed = true, true
		return a
	}
	org := func(d string) *OrgDomain {
		if o := al.memo[d]; o != nil {
			return o
		}
		var o *OrgDomain
		for _, m := range al.memo {
			if m.Method == OrgByHeuristic {
				o = heuristicOrg(&OrgDomain{Domain: d, DNSErr: m.DNSErr})
				break
			}
		}
		if o == nil {
			o = OrganizationalDomain(ctx, al.r, d)
		}
		al.memo[d] = o
		return o
	}
	a.Author = org(a.AuthorDomain)
	a.Signing = org(a.SigningDomain)
	if a.Author.Method != a.Signing.Method {
		// One walk worked and the other did not: judge both the same way.
		a.Author = heuristicOrg(&OrgDomain{Domain: a.AuthorDomain, Queries: a.Author.Queries, DNSErr: firstErr(a.Author, a.Signing)})
		a.Signing = heuristicOrg(&OrgDomain{Domain: a.SigningDomain, Queries: a.Signing.Queries, DNSErr: firstErr(a.Author, a.Signing)})
	}
	a.Relaxed = a.Author.Org != "" && a.Author.Org == a.Signing.Org
	return a
}

func firstErr(os ...*OrgDomain) error {
	for _, o := range os {
		if o.DNSErr != nil {
			return o.DNSErr
		}
	}
	return nil
}

// AuthorDomain returns the RFC5322.From domain of a message. DMARC needs
// exactly one (RFC 9989 §5.3.1,
// https://www.rfc-editor.org/rfc/rfc9989#section-5.3.1): no From field,
// several From fields, or mailboxes in different domains are errors.
func AuthorDomain(h dkim.Header) (string, error) {
	var value string
	switch n := h.Count("From"); n {
	case 0:
		return "", errors.New("no From header field")
	case 1:
	default:
		return "", fmt.Errorf("%d From header fields", n)
	}
	for _, f := range h {
		if strings.EqualFold(f.Name, "From") {
			value = strings.NewReplacer("\r\n", "", "\n", "").Replace(f.Value())
		}
	}
	addrs := dkim.FromAddresses(value)
	if len(addrs) == 0 {
		return "", fmt.Errorf("From %q has no domain", dkim.Sanitize(strings.TrimSpace(value)))
	}
	domain := ""
	for _, a := range addrs {
		at := strings.LastIndexByte(a, '@')
		if at < 0 || at == len(a)-1 {
			return "", fmt.Errorf("From %q has no domain", dkim.Sanitize(strings.TrimSpace(value)))
		}
		d := strings.ToLower(strings.TrimSuffix(a[at+1:], "."))
		if domain != "" && d != domain {
			return "", fmt.Errorf("From has mailboxes in several domains (%s, %s)", domain, dkim.Sanitize(d))
		}
		domain = d
	}
	return domain, nil
}
