package rotation

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/dkimmilter/dkimmilter/internal/dkim"
	"github.com/dkimmilter/dkimmilter/internal/dns"
	"github.com/dkimmilter/dkimmilter/keystore"
	"github.com/dkimmilter/dkimmilter/keystore/keycheck"
)

// Answer is what one authoritative server serves at a name.
type Answer struct {
	Server  string
	Records []string // the TXT records, each joined from its strings
	// Err is the lookup's error: a *net.DNSError with IsNotFound when
	// the server says the name holds no TXT record (NXDOMAIN or NODATA),
	// anything else when it could not be asked.
	Err error
}

// Checker looks a key's name up at every authoritative server of the
// zone that holds it, as `dkimmilter keys check -authoritative` does.
type Checker interface {
	// Lookup asks each server of the zone of SELECTOR._domainkey.DOMAIN;
	// an error says the servers could not be found.
	Lookup(ctx context.Context, selector, domain string) ([]Answer, error)
}

// DNSChecker is the Checker of the daemon: the zone's servers are found
// through Nameservers (empty: /etc/resolv.conf) and asked directly, with
// RD=0, on Port (0: 53; tests whose servers listen elsewhere set it). A
// CNAME to another zone (a provider's record) is followed through the
// resolvers.
type DNSChecker struct {
	Nameservers []string
	Timeout     time.Duration
	Port        int
}

// Lookup implements Checker with keycheck.CheckNameServers.
func (c *DNSChecker) Lookup(ctx context.Context, selector, domain string) ([]Answer, error) {
	res, err := dns.NewClient(c.Nameservers, c.Timeout)
	if err != nil {
		return nil, err
	}
	r := keycheck.CheckNameServers(ctx, &keystore.Key{Domain: domain, Selector: selector}, res, c.Timeout, c.Port)
	if len(r.Answers) == 0 {
		text := "no authoritative server to ask"
		if len(r.Problems) > 0 {
			text = r.Problems[0].Text
		}
		return nil, errors.New(dkim.DNSName(selector, domain) + ": " + text)
	}
	out := make([]Answer, len(r.Answers), len(r.Answers)+len(r.Skipped))
	for i, a := range r.Answers {
		out[i] = Answer{Server: a.Resolver, Records: a.Records, Err: a.Err}
	}
	// A name server whose address could not be found was not asked:
	// what it serves is unknown, not in agreement with the others
	// (receivers' resolvers may know its address and ask it).
	for _, s := range r.Skipped {
		host, why, _ := strings.Cut(s, ": ")
		out = append(out, Answer{Server: host, Err: errors.New("not asked: " + why)})
	}
	return out, nil
}

// NegativeTTL implements negativeTTLer: the zone that holds name is found
// through Nameservers, and its SOA says how long "no such record" may be
// cached.
func (c *DNSChecker) NegativeTTL(ctx context.Context, name string) (time.Duration, error) {
	res, err := dns.NewClient(c.Nameservers, c.Timeout)
	if err != nil {
		return 0, err
	}
	soa, err := dns.FindSOA(ctx, res, name)
	if err != nil {
		return 0, err
	}
	return soa.NegativeTTL, nil
}

// negativeTTLer is a Checker that also tells how long resolvers may keep
// a negative answer (NXDOMAIN, NODATA) for a name (RFC 2308 §5). Optional:
// a Checker without it makes the switch wait for the publisher's ttl only.
type negativeTTLer interface {
	NegativeTTL(ctx context.Context, name string) (time.Duration, error)
}

// absentValue stands for "no TXT record" among the values a name may
// hold.
const absentValue = ""

// value is what an answer says is at the name, comparable with the
// records rotation publishes: absentValue for no record, the record
// (spaces around tags dropped, RFC 6376 §3.2 makes them insignificant)
// for one, all of them joined for several. known is false when the
// server could not be asked.
// https://www.rfc-editor.org/rfc/rfc6376#section-3.2
func (a Answer) value() (v string, known bool) {
	if a.Err != nil {
		var de *net.DNSError
		if errors.As(a.Err, &de) && de.IsNotFound {
			return absentValue, true
		}
		return "", false
	}
	if len(a.Records) == 0 {
		return absentValue, true
	}
	recs := make([]string, len(a.Records))
	for i, r := range a.Records {
		recs[i] = normalize(r)
	}
	slices.Sort(recs)
	return strings.Join(recs, " | "), true
}

// normalize drops the white space around tags and values of a record.
func normalize(rec string) string {
	tags := strings.Split(rec, ";")
	out := tags[:0]
	for _, t := range tags {
		k, v, ok := strings.Cut(t, "=")
		t = strings.TrimSpace(k)
		if ok {
			t += "=" + strings.Join(strings.Fields(v), "")
		}
		if t != "" {
			out = append(out, t)
		}
	}
	return strings.Join(out, ";")
}

// judgement is what the servers serve, against what rotation expects.
type judgement struct {
	known int // servers that answered
	// all: every server answered with want (and there was one).
	all bool
	// any: at least one server answered with want.
	any bool
	// odd is the first server that answered something not allowed.
	odd *Answer
	// unknown: the servers that could not be asked, for the log.
	unknown []string
}

// judge compares the answers with want (one value) and the values also
// allowed (a server that lags).
func judge(answers []Answer, want string, allowed ...string) judgement {
	j := judgement{all: len(answers) > 0}
	want = normalize(want)
	for i := range answers {
		v, ok := answers[i].value()
		if !ok {
			j.all = false
			j.unknown = append(j.unknown, answers[i].Server+" ("+answers[i].Err.Error()+")")
			continue
		}
		j.known++
		if v == want {
			j.any = true
			continue
		}
		j.all = false
		if !slices.ContainsFunc(allowed, func(a string) bool { return normalize(a) == v }) && j.odd == nil {
			j.odd = &answers[i]
		}
	}
	return j
}

// display says what an answer holds, for the log.
func display(a *Answer) string {
	v, _ := a.value()
	if v == absentValue {
		return "no TXT record"
	}
	return strings.Join(a.Records, " | ")
}

// servedRecord is the one record every server agrees on, as served, or
// "" when they do not agree.
func servedRecord(answers []Answer) string {
	first := ""
	for i, a := range answers {
		if a.Err != nil || len(a.Records) != 1 {
			return ""
		}
		if i == 0 {
			first = a.Records[0]
		} else if normalize(a.Records[0]) != normalize(first) {
			return ""
		}
	}
	return first
}
