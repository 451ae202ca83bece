package dnsupdate

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dkimmilter/dkimmilter/config"
	idns "github.com/dkimmilter/dkimmilter/internal/dns"
	"github.com/miekg/dns"
)

// rfc2136 sends dynamic updates (RFC 2136) to a zone's primary, signed
// with a TSIG key when one is configured (RFC 8945).
// https://www.rfc-editor.org/rfc/rfc2136
type rfc2136 struct {
	table   string        // the [publish.NAME] table, for errors
	server  string        // "host:port" as configured; "" for the SOA's MNAME
	zone    string        // FQDN as configured; "" found from the SOA
	key     *TSIGKey      // nil: unsigned updates
	ttl     uint32        // of the records added
	timeout time.Duration // of one Apply, lookups included

	nameservers []string      // the resolvers that find the zone and the primary
	resTimeout  time.Duration // of one lookup through them
	// mnamePort is the port of a primary found from the SOA: 53, the
	// port RFC 2136 updates go to; tests serve on another.
	mnamePort int
	// now is the clock of the TSIG time stamps (tests: a wrong one).
	now func() time.Time
}

// maxString is the longest character-string of a TXT RR (RFC 1035
// §3.3.14); a longer value is split into several, which a verifier joins
// without a separator (RFC 6376 §3.6.2.2).
// https://www.rfc-editor.org/rfc/rfc6376#section-3.6.2.2
const maxString = 255

// maxUDP: an update longer than this goes over TCP. RFC 1035 §4.2.1
// limits UDP messages to 512 bytes without EDNS, and a 4096-bit RSA key's
// record alone is longer.
const maxUDP = 512

func newRFC2136(p *config.Publisher, nameservers []string, resTimeout time.Duration, mnamePort int) (*rfc2136, error) {
	u := &rfc2136{
		table: "publish." + p.Name, ttl: uint32(p.TTL / time.Second), timeout: p.Timeout,
		nameservers: nameservers, resTimeout: resTimeout, mnamePort: mnamePort, now: time.Now,
	}
	if u.ttl == 0 {
		u.ttl = 300
	}
	if u.timeout <= 0 {
		u.timeout = 10 * time.Second
	}
	if p.Zone != "" {
		u.zone = dns.CanonicalName(p.Zone)
		if _, ok := dns.IsDomainName(u.zone); !ok || u.zone == "." {
			return nil, fmt.Errorf("[%s] zone %q is not a DNS name", u.table, p.Zone)
		}
	}
	if p.Server != "" {
		u.server = p.Server
		if _, _, err := net.SplitHostPort(p.Server); err != nil {
			u.server = net.JoinHostPort(strings.Trim(p.Server, "[]"), "53")
		}
	}
	if p.TSIGKey != "" {
		k, err := ReadTSIGKey(p.TSIGKey)
		if err != nil {
			return nil, fmt.Errorf("[%s] tsig_key: %v", u.table, err)
		}
		u.key = k
	}
	return u, nil
}

// target is where an update of one name goes.
type target struct {
	zone    string   // FQDN
	servers []string // "IP:port", tried in order while they cannot be reached
	host    string   // the server as configured or named by the SOA, for messages
}

// locate finds the zone of name and the addresses of its primary: as
// configured, else from the SOA that the resolvers return.
func (u *rfc2136) locate(ctx context.Context, name string) (*target, error) {
	t := &target{zone: u.zone}
	var res *idns.Client
	resolver := func() (*idns.Client, error) {
		if res != nil {
			return res, nil
		}
		var err error
		res, err = idns.NewClient(u.nameservers, u.resTimeout)
		if err != nil {
			return nil, fmt.Errorf("the resolvers to find the zone or its primary: %v", err)
		}
		return res, nil
	}
	var soa *idns.SOA
	if t.zone == "" || u.server == "" {
		r, err := resolver()
		if err != nil {
			return nil, err
		}
		of := name
		if t.zone != "" {
			of = t.zone
		}
		if soa, err = idns.FindSOA(ctx, r, of); err != nil {
			return nil, fmt.Errorf("finding the zone of %s and its primary through the resolvers %s: %v; set zone and server in [%s]",
				strings.TrimSuffix(of, "."), strings.Join(r.Servers(), ", "), err, u.table)
		}
		if t.zone == "" {
			t.zone = dns.Fqdn(soa.Apex)
		}
	}
	host, port := "", strconv.Itoa(u.mnamePort)
	if u.server != "" {
		host, port, _ = net.SplitHostPort(u.server)
		t.host = u.server
	} else {
		host = soa.MName
		t.host = soa.MName + " (the SOA's MNAME) port " + port
	}
	if a, err := netip.ParseAddr(host); err == nil {
		t.servers = []string{net.JoinHostPort(a.String(), port)}
		return t, nil
	}
	r, err := resolver()
	if err != nil {
		return nil, err
	}
	addrs, err := idns.HostAddrs(ctx, r, host)
	if err != nil {
		return nil, fmt.Errorf("the address of the primary %s: %v; set server in [%s] to its IP address", host, err, u.table)
	}
	for _, a := range addrs {
		t.servers = append(t.servers, net.JoinHostPort(a.String(), port))
	}
	return t, nil
}

// Apply sends one UPDATE for c, and reads back the record when its
// prerequisite fails.
func (u *rfc2136) Apply(ctx context.Context, c Change) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, u.timeout)
	defer cancel()
	name := dns.Fqdn(c.Name)
	if _, ok := dns.IsDomainName(name); !ok || name == "." {
		return "", fmt.Errorf("[%s] %s %q: not a DNS name", u.table, c.Action, c.Name)
	}
	t, err := u.locate(ctx, name)
	if err != nil {
		return "", u.fail(c, nil, "", err)
	}
	if !dns.IsSubDomain(t.zone, name) {
		return "", u.fail(c, t, "", fmt.Errorf("%s is not in zone %s: set zone in [%s] to the zone that holds it", c.Name, strings.TrimSuffix(t.zone, "."), u.table))
	}
	m := u.message(t.zone, c, prereqs(name, c))
	resp, server, err := u.send(ctx, m, t)
	if err != nil {
		return "", u.fail(c, t, server, err)
	}
	switch resp.Rcode {
	case dns.RcodeSuccess:
		return fmt.Sprintf("%s: %s %s in zone %s: NOERROR", server, c.Action, c.Name, strings.TrimSuffix(t.zone, ".")), nil
	case dns.RcodeNXRrset, dns.RcodeYXRrset, dns.RcodeNameError, dns.RcodeYXDomain:
		return u.prereqFailed(ctx, c, t, server, true)
	}
	return "", u.fail(c, t, server, u.rcodeError(resp, t))
}

// prereqs are the RFC 2136 §2.4 prerequisites that make c apply only to
// the record it expects: for an Add with no Expect, "RRset does not
// exist" (§2.4.3); otherwise "RRset exists (value dependent)" (§2.4.2),
// which the server compares with the whole TXT RRset at the name.
// https://www.rfc-editor.org/rfc/rfc2136#section-2.4
func prereqs(name string, c Change) []dns.RR {
	switch {
	case c.Expect != "":
		return []dns.RR{txtRR(name, 0, c.Expect)}
	case c.Action == Add:
		return []dns.RR{&dns.ANY{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeTXT}}}
	}
	return nil
}

// message builds the UPDATE: the prerequisites, then "delete the TXT
// RRset" (RFC 2136 §2.5.2) and, unless c deletes, the new record, in one
// message, so the server applies all of it or none (§3.4.2).
// https://www.rfc-editor.org/rfc/rfc2136#section-2.5.2
func (u *rfc2136) message(zone string, c Change, pre []dns.RR) *dns.Msg {
	name := dns.Fqdn(c.Name)
	m := new(dns.Msg)
	m.SetUpdate(zone)
	for _, rr := range pre {
		if _, ok := rr.(*dns.ANY); ok {
			m.RRsetNotUsed(pre)
		} else {
			m.Used([]dns.RR{rr})
		}
	}
	m.RemoveRRset([]dns.RR{&dns.ANY{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeTXT}}})
	if c.Action != Delete {
		m.Insert([]dns.RR{txtRR(name, u.ttl, c.Value)})
	}
	if u.key != nil {
		m.SetTsig(u.key.Name, u.key.Algorithm, 300, u.now().Unix())
	}
	return m
}

// txtRR is value as one TXT RR, split into character-strings of at most
// 255 bytes, in miekg's presentation form (\ and " escaped).
func txtRR(name string, ttl uint32, value string) *dns.TXT {
	return &dns.TXT{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: ttl}, Txt: split(value)}
}

func split(value string) []string {
	var out []string
	for len(value) > maxString {
		out = append(out, escape(value[:maxString]))
		value = value[maxString:]
	}
	return append(out, escape(value))
}

func escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' || c == '"':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c > 0x7e:
			fmt.Fprintf(&b, "\\%03d", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// unescape turns a character-string in miekg's presentation form back
// into its bytes.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		if i+3 < len(s) && isDigit(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]) {
			n, _ := strconv.Atoi(s[i+1 : i+4])
			b.WriteByte(byte(n))
			i += 3
			continue
		}
		b.WriteByte(s[i+1])
		i++
	}
	return b.String()
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// send sends m to the target's servers in turn while they cannot be
// reached, over UDP when it fits and over TCP when it does not or when
// the answer comes back truncated (RFC 2136 §6 lets an update use either).
func (u *rfc2136) send(ctx context.Context, m *dns.Msg, t *target) (*dns.Msg, string, error) {
	wire, err := m.Pack()
	if err != nil {
		return nil, "", fmt.Errorf("building the update: %v", err)
	}
	network := "udp"
	if len(wire) > maxUDP {
		network = "tcp"
	}
	var lastErr error
	last := ""
	for _, server := range t.servers {
		last = server
		resp, err := u.exchange(ctx, network, m, server)
		if err == nil && resp.Truncated && network == "udp" {
			resp, err = u.exchange(ctx, "tcp", m, server)
		}
		if err == nil || resp != nil || ctx.Err() != nil {
			return resp, server, err
		}
		lastErr = err
	}
	return nil, last, lastErr
}

// exchange sends m to server once. A reply whose TSIG does not verify
// comes back with its error: the reply of a server that refused our key
// is unsigned (RFC 8945 §5.3.2), and its RCODE and TSIG error say why.
// https://www.rfc-editor.org/rfc/rfc8945#section-5.3.2
func (u *rfc2136) exchange(ctx context.Context, network string, m *dns.Msg, server string) (*dns.Msg, error) {
	c := &dns.Client{Net: network, Timeout: u.timeout}
	if u.key != nil {
		c.TsigSecret = map[string]string{u.key.Name: u.key.Secret}
	}
	resp, _, err := c.ExchangeContext(ctx, m.Copy(), server)
	if err != nil && resp != nil && resp.Id == m.Id && resp.Response {
		if !claimsZone(resp.Rcode) || tsigError(resp) != 0 {
			return resp, nil // the RCODE and TSIG error say what went wrong
		}
		return nil, fmt.Errorf("the server's reply does not carry a valid signature of TSIG key %s (%v): is a middlebox rewriting DNS?", u.key.DisplayName(), err)
	}
	if err != nil {
		return nil, transportError(ctx, err, server, u.timeout)
	}
	// RFC 8945 §5.3: a signed request's answer is signed too, unless it
	// reports a TSIG error. miekg checks a signature only when there is
	// one, so an unsigned success (forged, or from a middlebox) stops here.
	// https://www.rfc-editor.org/rfc/rfc8945#section-5.3
	// A failed prerequisite too: it leads to reading the record back and
	// maybe to "already done"; only a refusal of the key is unsigned.
	if u.key != nil && m.IsTsig() != nil && resp.IsTsig() == nil && claimsZone(resp.Rcode) {
		return nil, fmt.Errorf("the answer from %s is not signed with TSIG key %s, though the update was: is something between here and the server answering in its place?", server, u.key.DisplayName())
	}
	return resp, nil
}

// claimsZone reports whether an answer with rcode says something about
// the zone that Apply acts on: the update was made, or a prerequisite
// failed (RFC 2136 §2.2). To a signed update, such an answer counts only
// when it is signed.
func claimsZone(rcode int) bool {
	switch rcode {
	case dns.RcodeSuccess, dns.RcodeNXRrset, dns.RcodeYXRrset, dns.RcodeNameError, dns.RcodeYXDomain:
		return true
	}
	return false
}

func tsigError(m *dns.Msg) uint16 {
	if t := m.IsTsig(); t != nil {
		return t.Error
	}
	return 0
}

// transportError says what to check when server could not be asked.
func transportError(ctx context.Context, err error, server string, timeout time.Duration) error {
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled):
		return err
	case ctx.Err() != nil || errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("no answer from %s within %s: is the server running and listening there, and does no firewall drop DNS? (%v)", server, timeout, err)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("nothing answers DNS at %s (connection refused): is the server running, and is server in the configuration its address?", server)
	}
	return fmt.Errorf("sending the update to %s: %v", server, err)
}

// rcodeError explains an RCODE other than success or a failed
// prerequisite (RFC 2136 §2.2, RFC 8945 §5.3.2).
func (u *rfc2136) rcodeError(resp *dns.Msg, t *target) error {
	keyName := "(none: the update was not signed)"
	if u.key != nil {
		keyName = u.key.DisplayName()
	}
	rcode := dns.RcodeToString[resp.Rcode]
	if te := tsigError(resp); te != 0 {
		what := dns.RcodeToString[int(te)]
		if what == "" {
			what = strconv.Itoa(int(te))
		}
		if u.key == nil {
			return fmt.Errorf("%s (TSIG error %s): the server wants a signed update: set tsig_key in [%s]", rcode, what, u.table)
		}
		msg := fmt.Sprintf("%s (TSIG error %s): the server refused TSIG key %s: check its name, algorithm (%s) and secret in %s against the server's key statement",
			rcode, what, keyName, u.key.AlgorithmName(), u.key.File)
		if te == dns.RcodeBadTime {
			msg += "; BADTIME: the clocks of this host and the server differ by more than 5 minutes"
		}
		return errors.New(msg)
	}
	switch resp.Rcode {
	case dns.RcodeNotAuth:
		if u.key != nil {
			return fmt.Errorf("NOTAUTH: the server is not authoritative for zone %s, or refused TSIG key %s: check that server is the zone's primary, and the key's name, algorithm and secret against its key statement",
				strings.TrimSuffix(t.zone, "."), keyName)
		}
		return fmt.Errorf("NOTAUTH: the server is not authoritative for zone %s, or wants a signed update: check that server is the zone's primary, or set tsig_key in [%s]", strings.TrimSuffix(t.zone, "."), u.table)
	case dns.RcodeRefused:
		if u.key == nil {
			return fmt.Errorf("REFUSED: the update was not signed, and the server's allow-update / update-policy for zone %s does not accept it: set tsig_key in [%s] to the key the server grants updates to", strings.TrimSuffix(t.zone, "."), u.table)
		}
		return fmt.Errorf("REFUSED: the server's allow-update / update-policy for zone %s does not grant key %s this name (BIND: update-policy { grant %s zonesub TXT; };), or the server is a secondary that does not forward updates: point server at the primary",
			strings.TrimSuffix(t.zone, "."), keyName, keyName)
	case dns.RcodeNotZone:
		return fmt.Errorf("NOTZONE: the name is not in zone %s as the server knows it: set zone in [%s] to the zone that holds it", strings.TrimSuffix(t.zone, "."), u.table)
	case dns.RcodeServerFailure:
		return fmt.Errorf("SERVFAIL: the server failed to apply the update: its log says why (a zone that did not load, a journal it cannot write, a secondary that cannot forward the update)")
	case dns.RcodeNotImplemented:
		return fmt.Errorf("NOTIMP: the server does not accept dynamic updates (RFC 2136): use a server that does, or method = \"command\" with the provider's tool")
	case dns.RcodeFormatError:
		return fmt.Errorf("FORMERR: the server could not parse the update")
	}
	if rcode == "" {
		rcode = "RCODE " + strconv.Itoa(resp.Rcode)
	}
	return fmt.Errorf("the server answered %s", rcode)
}

// prereqFailed: the record was not what c expects. If it is already
// what c makes of it (a retry of an update whose answer was lost, or a
// record published by hand), there is nothing to do; if it is the
// expected record split differently into strings, the update is sent
// again with the record as the server has it (once: again is false on
// the second try); anything else is ErrChanged, and nothing was changed.
func (u *rfc2136) prereqFailed(ctx context.Context, c Change, t *target, server string, again bool) (string, error) {
	name := dns.Fqdn(c.Name)
	rrs, err := u.current(ctx, name, server)
	if err != nil {
		return "", u.fail(c, t, server, fmt.Errorf("%w: the prerequisite failed, and reading the record back failed too: %v", ErrChanged, err))
	}
	var have []string
	for _, rr := range rrs {
		have = append(have, value(rr))
	}
	want := []string{c.Value}
	if c.Action == Delete {
		want = nil
	}
	if slices.Equal(have, want) {
		return fmt.Sprintf("%s: %s %s in zone %s: already done, nothing sent", server, c.Action, c.Name, strings.TrimSuffix(t.zone, ".")), nil
	}
	if again && c.Expect != "" && len(rrs) == 1 && have[0] == c.Expect && !slices.Equal(rrs[0].Txt, split(c.Expect)) {
		m := u.message(t.zone, c, []dns.RR{rrs[0]})
		resp, server, err := u.send(ctx, m, t)
		if err != nil {
			return "", u.fail(c, t, server, err)
		}
		switch resp.Rcode {
		case dns.RcodeSuccess:
			return fmt.Sprintf("%s: %s %s in zone %s: NOERROR", server, c.Action, c.Name, strings.TrimSuffix(t.zone, ".")), nil
		case dns.RcodeNXRrset, dns.RcodeYXRrset:
			// changed again in between: report what is there now
			return u.prereqFailed(ctx, c, t, server, false)
		}
		return "", u.fail(c, t, server, u.rcodeError(resp, t))
	}
	expected := "no TXT record"
	if c.Expect != "" {
		expected = strconv.Quote(c.Expect)
	}
	found := "no TXT record"
	if len(have) > 0 {
		q := make([]string, len(have))
		for i, h := range have {
			q[i] = strconv.Quote(h)
		}
		found = strings.Join(q, ", ")
	}
	return "", u.fail(c, t, server, fmt.Errorf("%w: %s has %s, where %s was expected: it was changed by hand, or another system uses the name; nothing was changed (put the expected record back, or remove what is there, to go on)",
		ErrChanged, c.Name, found, expected))
}

// current reads the TXT RRs at name from the server that took the update.
func (u *rfc2136) current(ctx context.Context, name, server string) ([]*dns.TXT, error) {
	q := new(dns.Msg)
	q.SetQuestion(name, dns.TypeTXT)
	q.RecursionDesired = false
	q.SetEdns0(4096, false)
	resp, err := u.exchange(ctx, "udp", q, server)
	if err == nil && resp.Truncated {
		resp, err = u.exchange(ctx, "tcp", q, server)
	}
	if err != nil {
		return nil, err
	}
	if resp.Rcode != dns.RcodeSuccess && resp.Rcode != dns.RcodeNameError {
		return nil, fmt.Errorf("TXT query for %s at %s: %s", strings.TrimSuffix(name, "."), server, dns.RcodeToString[resp.Rcode])
	}
	var out []*dns.TXT
	for _, rr := range resp.Answer {
		if t, ok := rr.(*dns.TXT); ok && strings.EqualFold(t.Hdr.Name, name) {
			out = append(out, t)
		}
	}
	return out, nil
}

// value is a TXT RR's strings joined, as a verifier reads the record.
func value(t *dns.TXT) string {
	var b strings.Builder
	for _, s := range t.Txt {
		b.WriteString(unescape(s))
	}
	return b.String()
}

// fail names everything an operator needs to find the problem: the
// table, the change, the zone, the server and the TSIG key.
func (u *rfc2136) fail(c Change, t *target, server string, err error) error {
	where := []string{}
	if t != nil {
		where = append(where, "zone "+strings.TrimSuffix(t.zone, "."))
		switch {
		case server != "" && server != t.host:
			where = append(where, "server "+t.host+" at "+server)
		default:
			where = append(where, "server "+t.host)
		}
	}
	if u.key != nil {
		where = append(where, "TSIG key "+u.key.DisplayName())
	} else {
		where = append(where, "no TSIG key")
	}
	return fmt.Errorf("[%s] %s %s (%s): %w", u.table, c.Action, c.Name, strings.Join(where, ", "), err)
}

// Describe writes the update as nsupdate(1) input. The secret stays out:
// `nsupdate -k FILE` reads it from the key file.
func (u *rfc2136) Describe(c Change) string {
	var b strings.Builder
	name := dns.Fqdn(c.Name)
	fmt.Fprintf(&b, "; [%s]: %s %s as an RFC 2136 update, in nsupdate(1) syntax\n", u.table, c.Action, c.Name)
	if u.key != nil {
		fmt.Fprintf(&b, "; signed with TSIG key %s (%s); to send it by hand: nsupdate -k %s\n", u.key.DisplayName(), u.key.AlgorithmName(), u.key.File)
	} else {
		b.WriteString("; not signed (no tsig_key)\n")
	}
	ctx, cancel := context.WithTimeout(context.Background(), u.timeout)
	defer cancel()
	t, err := u.locate(ctx, name)
	switch {
	case err != nil:
		fmt.Fprintf(&b, "; the zone or its primary could not be found now: %v\n", err)
	default:
		host, port, _ := net.SplitHostPort(t.servers[0])
		if u.server == "" {
			fmt.Fprintf(&b, "; server: %s\n", t.host)
		}
		fmt.Fprintf(&b, "server %s %s\n", host, port)
		fmt.Fprintf(&b, "zone %s\n", t.zone)
	}
	for _, rr := range prereqs(name, c) {
		if txt, ok := rr.(*dns.TXT); ok {
			fmt.Fprintf(&b, "prereq yxrrset %s TXT %s\n", name, quoted(txt.Txt))
		} else {
			fmt.Fprintf(&b, "prereq nxrrset %s TXT\n", name)
		}
	}
	fmt.Fprintf(&b, "update delete %s TXT\n", name)
	if c.Action != Delete {
		fmt.Fprintf(&b, "update add %s %d TXT %s\n", name, u.ttl, quoted(split(c.Value)))
	}
	b.WriteString("send\n")
	return b.String()
}

func quoted(strs []string) string {
	q := make([]string, len(strs))
	for i, s := range strs {
		q[i] = `"` + s + `"`
	}
	return strings.Join(q, " ")
}
