// The Client: TXT lookups for DKIM public keys
// (selector._domainkey.domain), asked of the configured recursive
// resolvers directly.
//
// Why github.com/miekg/dns and not net.Resolver: net.Resolver hides the reply
// header, so the AD (authenticated data) bit of a validating resolver is lost,
// and we want to report it. It also only talks to the servers of
// /etc/resolv.conf with their options, while the configuration may name its
// own ([dns] nameservers) and we want to bound the whole lookup, across
// servers and retries, by one timeout. With miekg we send EDNS0 (1232-byte
// buffer, DO=1) so that 2048- and 4096-bit key records arrive in one UDP
// datagram, and fall back to TCP ourselves when the answer is still truncated.
//
// A TXT RR can hold a key record split into several character-strings; they
// are concatenated without any separator, as RFC 6376 §3.6.2.2 says:
// https://www.rfc-editor.org/rfc/rfc6376#section-3.6.2.2

package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	mdns "github.com/miekg/dns"
)

const (
	defaultTimeout = 5 * time.Second
	// ednsUDPSize is the DNS flag day 2020 value: big enough for a 4096-bit
	// key record, small enough to avoid IP fragmentation.
	ednsUDPSize = 1232
	// lookupRounds is how many times the server list is walked.
	lookupRounds = 2
	// resolvConfPath is read when no nameservers are configured.
	resolvConfPath = "/etc/resolv.conf"
)

// Client is a Resolver that queries recursive resolvers directly.
type Client struct {
	servers []string // "IP:port", in the order they are tried
	timeout time.Duration
	// noRecurse sends RD=0 queries, to ask authoritative servers about
	// their own zone (see NewZoneResolver in zone.go).
	noRecurse bool
}

// NewClient returns a resolver that queries nameservers in order. Each
// entry is IP, IP:port, [IPv6]:port or a bare IPv6 address; the port
// defaults to 53. With no nameservers, those of /etc/resolv.conf are used
// (never its search list). timeout bounds one whole LookupTXT, retries
// included; 0 means 5s.
func NewClient(nameservers []string, timeout time.Duration) (*Client, error) {
	if timeout < 0 {
		return nil, fmt.Errorf("negative timeout %s", timeout)
	}
	if timeout == 0 {
		timeout = defaultTimeout
	}
	var servers []string
	if len(nameservers) == 0 {
		var err error
		if servers, err = serversFromResolvConf(resolvConfPath); err != nil {
			return nil, err
		}
	}
	for _, ns := range nameservers {
		addr, err := parseNameserver(ns)
		if err != nil {
			return nil, fmt.Errorf("invalid nameserver %q: %v", ns, err)
		}
		servers = append(servers, addr)
	}
	return &Client{servers: servers, timeout: timeout}, nil
}

// parseNameserver normalises one configured entry to "IP:port". Host names
// are refused: resolving the resolver would itself need DNS.
func parseNameserver(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", errors.New("empty address")
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(a, 53).String(), nil
	}
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		if a, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil && a.Is6() {
			return netip.AddrPortFrom(a, 53).String(), nil
		}
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return "", errors.New("want IP, IP:port, [IPv6]:port or IPv6 (no host names)")
	}
	if ap.Port() == 0 {
		return "", errors.New("port 0")
	}
	return ap.String(), nil
}

// serversFromResolvConf returns the nameservers of a resolv.conf(5) file as
// "IP:53". Entries that are not IP addresses are skipped, as the C library does.
func serversFromResolvConf(path string) ([]string, error) {
	cfg, err := mdns.ClientConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("no nameservers configured and reading %s failed: %v; set [dns] nameservers", path, err)
	}
	var servers []string
	for _, s := range cfg.Servers {
		if a, err := netip.ParseAddr(s); err == nil {
			servers = append(servers, netip.AddrPortFrom(a, 53).String())
		}
	}
	if len(servers) == 0 {
		return nil, fmt.Errorf("no usable nameserver in %s; set [dns] nameservers", path)
	}
	return servers, nil
}

// errTruncatedUnpack marks a UDP reply that could not be parsed but had TC=1:
// it is cut short, so TCP will do.
var errTruncatedUnpack = errors.New("truncated reply")

// errMismatch is a reply that does not answer our question.
var errMismatch = errors.New("reply does not match the query")

// LookupTXT queries the TXT RRs of name, never applying a search list.
func (r *Client) LookupTXT(ctx context.Context, name string) (*TXTResult, error) {
	qname, display, err := queryName(name)
	if err != nil {
		return nil, err
	}
	resp, server, err := r.exchange(ctx, qname, mdns.TypeTXT)
	if err != nil {
		return nil, err
	}
	if resp.Rcode == mdns.RcodeNameError {
		return nil, &net.DNSError{Err: "NXDOMAIN", Name: display, Server: server, IsNotFound: true}
	}
	res := txtFromAnswer(qname, resp.Answer)
	if len(res.Records) == 0 {
		return nil, &net.DNSError{Err: "no TXT record", Name: display, Server: server, IsNotFound: true}
	}
	res.Authenticated = resp.AuthenticatedData
	return res, nil
}

// queryName returns the FQDN to query for name and the name to show in
// errors, or an IsNotFound error for a name that can never exist (it came
// from a signature: as good as NXDOMAIN, a permanent failure).
//
// The FQDN is in miekg's presentation form, the form in which replies come
// back: a byte outside the printable ASCII of a name (a Latin-1 é from a
// hostile d=, say) is written \233 there. Compared with the raw name, a
// reply that answers the question would otherwise look like one that does
// not, and the lookup would wait for its timeout although the server had
// answered.
func queryName(name string) (qname, display string, err error) {
	fqdn := mdns.Fqdn(name)
	display = strings.TrimSuffix(fqdn, ".")
	if _, ok := mdns.IsDomainName(fqdn); !ok || fqdn == "." {
		return "", "", &net.DNSError{Err: "invalid domain name", Name: display, IsNotFound: true}
	}
	var wire [256]byte
	n, err := mdns.PackDomainName(fqdn, wire[:], 0, nil, false)
	if err != nil {
		return "", "", &net.DNSError{Err: "invalid domain name", Name: display, IsNotFound: true}
	}
	qname, _, err = mdns.UnpackDomainName(wire[:n], 0)
	if err != nil {
		return "", "", &net.DNSError{Err: "invalid domain name", Name: display, IsNotFound: true}
	}
	return qname, strings.TrimSuffix(qname, "."), nil
}

// exchange asks the servers in turn, twice round, until one answers NOERROR
// or NXDOMAIN, and returns that reply and the server that sent it. Every
// other outcome is a temporary *net.DNSError: SERVFAIL and REFUSED make it
// try the next server, and the whole exchange is bounded by r.timeout.
func (r *Client) exchange(ctx context.Context, qname string, qtype uint16) (*mdns.Msg, string, error) {
	display := strings.TrimSuffix(qname, ".")
	if len(r.servers) == 0 { // a zero Client, not one from NewClient
		return nil, "", &net.DNSError{Err: "no nameservers configured", Name: display, IsTemporary: true}
	}

	bound := r.timeout
	if dl, ok := ctx.Deadline(); ok {
		bound = min(bound, time.Until(dl))
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()

	// Leave room for a second round on the first server: a lost datagram
	// should not cost the whole budget.
	perTry := r.timeout / time.Duration(len(r.servers)+1)

	var lastErr *net.DNSError
	tried := "" // the last server asked, for the error
tries:
	for range lookupRounds {
		for _, server := range r.servers {
			if ctx.Err() != nil {
				break tries
			}
			tried = server
			resp, err := r.query(ctx, qname, qtype, server, perTry)
			if err != nil {
				if errors.Is(err, context.Canceled) {
					break tries
				}
				lastErr = transportError(err, display, server)
				continue
			}
			switch resp.Rcode {
			case mdns.RcodeSuccess, mdns.RcodeNameError:
				return resp, server, nil
			default:
				// SERVFAIL, REFUSED and the rest: another server may do better.
				lastErr = &net.DNSError{Err: rcodeString(resp.Rcode), Name: display, Server: server, IsTemporary: true}
			}
		}
	}
	if ctx.Err() != nil {
		return nil, "", contextError(ctx, display, tried, bound)
	}
	return nil, "", lastErr
}

// contextError describes an expired or cancelled lookup.
func contextError(ctx context.Context, name, server string, bound time.Duration) *net.DNSError {
	if errors.Is(ctx.Err(), context.Canceled) {
		return &net.DNSError{Err: "lookup canceled", Name: name, Server: server, IsTemporary: true, UnwrapErr: context.Canceled}
	}
	msg := "timeout"
	if bound > 0 {
		msg = "timeout after " + bound.Round(time.Millisecond).String()
	}
	return &net.DNSError{Err: msg, Name: name, Server: server, IsTimeout: true, IsTemporary: true, UnwrapErr: context.DeadlineExceeded}
}

// transportError classifies a failed exchange with one server.
func transportError(err error, name, server string) *net.DNSError {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return &net.DNSError{Err: "timeout", Name: name, Server: server, IsTimeout: true, IsTemporary: true, UnwrapErr: err}
	}
	return &net.DNSError{Err: err.Error(), Name: name, Server: server, IsTemporary: true, UnwrapErr: err}
}

func rcodeString(rcode int) string {
	if s, ok := mdns.RcodeToString[rcode]; ok {
		return s
	}
	return fmt.Sprintf("RCODE%d", rcode)
}

// query asks one server over UDP and repeats over TCP if the answer was
// truncated. Each transport gets at most perTry.
func (r *Client) query(ctx context.Context, qname string, qtype uint16, server string, perTry time.Duration) (*mdns.Msg, error) {
	resp, err := exchangeOnce(ctx, "udp", qname, qtype, !r.noRecurse, server, perTry)
	switch {
	case errors.Is(err, errTruncatedUnpack):
	case err != nil:
		return nil, err
	case !resp.Truncated:
		return resp, nil
	}
	return exchangeOnce(ctx, "tcp", qname, qtype, !r.noRecurse, server, perTry)
}

// exchangeOnce sends one query and reads its reply. It does the reading itself,
// rather than using mdns.Client.ExchangeContext, to check the question
// section (miekg only checks the ID), to keep waiting past stray UDP
// datagrams, and to honour ctx cancellation, not only its deadline.
func exchangeOnce(ctx context.Context, network, qname string, qtype uint16, rd bool, server string, limit time.Duration) (*mdns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()

	q := new(mdns.Msg)
	q.SetQuestion(qname, qtype) // fresh random ID per exchange
	q.RecursionDesired = rd
	q.AuthenticatedData = true // RFC 6840 §5.7: ask for AD explicitly
	q.SetEdns0(ednsUDPSize, true)

	c := &mdns.Client{Net: network}
	conn, err := c.DialContext(ctx, server)
	if err != nil {
		return nil, ctxErrOr(ctx, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	dl, _ := ctx.Deadline()
	conn.SetDeadline(dl)
	conn.UDPSize = ednsUDPSize

	if err := conn.WriteMsg(q); err != nil {
		return nil, ctxErrOr(ctx, err)
	}
	for {
		resp, err := conn.ReadMsg()
		if resp == nil { // read error, timeout, closed by cancellation
			return nil, ctxErrOr(ctx, err)
		}
		if resp.Id != q.Id || !resp.Response {
			if network == "udp" {
				continue // a stale or spoofed datagram: the real one may follow
			}
			return nil, errMismatch
		}
		if err != nil { // the header parsed but the rest did not
			if resp.Truncated {
				return resp, errTruncatedUnpack
			}
			return nil, fmt.Errorf("malformed reply: %w", err)
		}
		if !answersQuestion(q, resp) {
			if network == "udp" {
				continue
			}
			return nil, errMismatch
		}
		return resp, nil
	}
}

// ctxErrOr reports the context's error when it caused err (a deadline or a
// cancellation surfaces as a closed connection or an I/O timeout).
func ctxErrOr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	return err
}

// answersQuestion checks that resp's question section is q's. Some servers
// send error replies (REFUSED, FORMERR) without a question; they are accepted
// since they only make us try the next server.
func answersQuestion(q, resp *mdns.Msg) bool {
	if len(resp.Question) == 0 {
		return resp.Rcode != mdns.RcodeSuccess && resp.Rcode != mdns.RcodeNameError
	}
	want, got := q.Question[0], resp.Question[0]
	return len(resp.Question) == 1 && got.Qtype == want.Qtype && got.Qclass == want.Qclass &&
		strings.EqualFold(got.Name, want.Name)
}

// txtFromAnswer keeps the TXT RRs owned by qname or by a name its CNAME
// chain in the answer reaches. Anything else in the answer is ignored.
func txtFromAnswer(qname string, answer []mdns.RR) *TXTResult {
	owners := map[string]bool{strings.ToLower(qname): true}
	var minTTL uint32
	haveTTL := false
	lower := func(ttl uint32) {
		if !haveTTL || ttl < minTTL {
			minTTL, haveTTL = ttl, true
		}
	}
	// The chain's RRs need not be in order, so grow the owner set until it
	// stops changing; the "not yet an owner" test stops loops.
	for grew := true; grew; {
		grew = false
		for _, rr := range answer {
			c, ok := rr.(*mdns.CNAME)
			if !ok || c.Hdr.Class != mdns.ClassINET || !owners[strings.ToLower(c.Hdr.Name)] {
				continue
			}
			if t := strings.ToLower(c.Target); !owners[t] {
				owners[t] = true
				lower(c.Hdr.Ttl)
				grew = true
			}
		}
	}
	res := &TXTResult{}
	for _, rr := range answer {
		t, ok := rr.(*mdns.TXT)
		if !ok || t.Hdr.Class != mdns.ClassINET || !owners[strings.ToLower(t.Hdr.Name)] {
			continue
		}
		var b strings.Builder
		for _, s := range t.Txt {
			b.WriteString(unescapeTXT(s))
		}
		res.Records = append(res.Records, b.String())
		lower(t.Hdr.Ttl)
	}
	res.TTL = time.Duration(minTTL) * time.Second
	return res
}

// unescapeTXT turns miekg's presentation format back into raw bytes. When
// unpacking, miekg writes `"` and `\` as `\"` and `\\` and every byte
// outside 0x20..0x7E as `\DDD` (decimal), so a key record with a tab would
// otherwise reach the tag parser as "\009".
func unescapeTXT(s string) string {
	if strings.IndexByte(s, '\\') < 0 {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 == len(s) {
			b = append(b, c)
			continue
		}
		i++
		if i+2 < len(s) && isDigit(s[i]) && isDigit(s[i+1]) && isDigit(s[i+2]) {
			if v := int(s[i]-'0')*100 + int(s[i+1]-'0')*10 + int(s[i+2]-'0'); v <= 255 {
				b = append(b, byte(v))
				i += 2
				continue
			}
		}
		b = append(b, s[i]) // \X ⇒ X
	}
	return string(b)
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
