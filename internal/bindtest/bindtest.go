// Package bindtest runs throwaway BIND 9 servers for tests: a primary and
// a secondary of one or more zones, each a `named` (Debian's bind9
// package) in the foreground in a temporary directory, listening on its
// own loopback address and nowhere else (the primary on 127.0.0.1, the
// secondary on ::1: named only listens on addresses that an interface
// has, and these two are the loopback interface's own), both on the
// same port, so that
// the zones' NS records (ns1 → the primary, ns2 → the secondary) lead to
// both with one port, as `keys check -authoritative` finds them.
//
// The primary takes dynamic updates (RFC 2136) signed with a TSIG key
// for TXT and CNAME records anywhere in its zones; the secondary is a
// real one: it copies the zones by zone transfer. The primary never
// notifies it: the helper does while the secondary follows (the
// default), and stops when a test holds it back, so that a secondary
// that lags is the test's choice.
//
// Without named the tests that need it skip, saying so, except under
// CI=true, where they fail: CI installs bind9.
package bindtest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/miekg/dns"
)

// KeyName is the name of the TSIG key that may update the zones.
const KeyName = "dkim-update"

// ErrMissing: BIND's named is not installed.
var ErrMissing = errors.New("BIND is not installed (no named in /usr/sbin or $PATH); apt-get install bind9")

// Servers is a primary and its secondary.
type Servers struct {
	dir     string
	zones   []string // FQDNs
	port    int
	secret  string
	keyFile string
	wrong   string

	primary, secondary *instance

	mu     sync.Mutex
	follow bool // the helper notifies the secondary of the primary's changes
	// lastNotify is when a NOTIFY was last sent (UnixNano): named may
	// act on it, or on one it queued during a transfer, a moment later.
	lastNotify atomic.Int64
	stop       chan struct{}
	done       chan struct{}
}

// instance is one named.
type instance struct {
	role string // "primary" or "secondary"
	addr string // loopback IP
	dir  string
	bin  string

	mu  sync.Mutex
	cmd *exec.Cmd
	out *os.File
	end chan struct{} // closed when the process has exited
}

// Missing skips tb when named is not installed, and fails it under
// CI=true; it returns named's path otherwise.
func Missing(tb testing.TB) string {
	tb.Helper()
	bin, err := namedPath("/usr/sbin/named")
	if err != nil {
		missing(tb, err)
	}
	return bin
}

func missing(tb testing.TB, err error) {
	tb.Helper()
	if os.Getenv("CI") != "true" {
		tb.Skipf("skipped: %v", err)
		return
	}
	tb.Fatalf("throwaway BIND: %v (CI=true: the bind9 package must be installed)", err)
}

// namedPath is where named is: at path (Debian's place, outside a
// user's $PATH), else in $PATH.
func namedPath(path string) (string, error) {
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if p, err := exec.LookPath("named"); err == nil {
		return p, nil
	}
	return "", ErrMissing
}

// New starts a primary and a secondary of the zones (e.g. "example.test"),
// stopped and removed when the test ends. The secondary follows the
// primary until Hold.
func New(tb testing.TB, zones ...string) *Servers {
	tb.Helper()
	bin := Missing(tb)
	if len(zones) == 0 {
		tb.Fatal("bindtest.New: no zone")
	}
	s := &Servers{dir: tb.TempDir(), follow: true}
	for _, z := range zones {
		fqdn := dns.CanonicalName(z)
		if _, ok := dns.IsDomainName(fqdn); !ok || fqdn == "." {
			tb.Fatalf("bindtest.New: %q is not a zone name", z)
		}
		s.zones = append(s.zones, fqdn)
	}
	secret := make([]byte, 32)
	rand.Read(secret)
	s.secret = base64.StdEncoding.EncodeToString(secret)
	rand.Read(secret)
	s.keyFile = filepath.Join(s.dir, "update.key")
	s.wrong = filepath.Join(s.dir, "wrong.key")
	if err := os.WriteFile(s.keyFile, []byte(keyStatement(KeyName, s.secret)), 0o600); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(s.wrong, []byte(keyStatement(KeyName, base64.StdEncoding.EncodeToString(secret))), 0o600); err != nil {
		tb.Fatal(err)
	}

	a, b, err := loopbackPair()
	if err != nil {
		tb.Fatalf("throwaway BIND: %v", err)
	}
	for range 10 {
		var port int
		if port, err = freePort(a, b); err != nil {
			continue
		}
		s.port = port
		s.primary = &instance{role: "primary", addr: a, dir: filepath.Join(s.dir, "primary"), bin: bin}
		s.secondary = &instance{role: "secondary", addr: b, dir: filepath.Join(s.dir, "secondary"), bin: bin}
		if err = s.configure(); err != nil {
			tb.Fatal(err)
		}
		if err = s.primary.start(s); err != nil {
			if errors.Is(err, errInUse) {
				continue // the port was taken meanwhile: another one
			}
			break
		}
		if err = s.secondary.start(s); err != nil {
			s.primary.stop()
			if errors.Is(err, errInUse) {
				continue
			}
		}
		break
	}
	if err != nil {
		tb.Fatalf("throwaway BIND: %v", err)
	}
	tb.Cleanup(s.close)
	if err := s.waitSynced(20 * time.Second); err != nil {
		tb.Fatalf("throwaway BIND: the secondary did not load the zones: %v\nsecondary's log:\n%s", err, s.secondary.logTail())
	}
	s.stop, s.done = make(chan struct{}), make(chan struct{})
	go s.follower()
	return s
}

func keyStatement(name, secret string) string {
	return fmt.Sprintf("key \"%s\" {\n\talgorithm hmac-sha256;\n\tsecret \"%s\";\n};\n", name, secret)
}

// loopbackPair returns two addresses of the loopback interface:
// 127.0.0.1 and ::1, or another IPv4 address of it when it has no IPv6.
func loopbackPair() (string, string, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return "", "", err
	}
	var v4 []string
	v6 := false
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagLoopback == 0 || ifc.Flags&net.FlagUp == 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			switch {
			case ipn.IP.Equal(net.IPv6loopback):
				v6 = true
			case ipn.IP.To4() != nil && ipn.IP.IsLoopback() && !ipn.IP.Equal(net.IPv4(127, 0, 0, 1)):
				v4 = append(v4, ipn.IP.String())
			}
		}
	}
	switch {
	case v6:
		return "127.0.0.1", "::1", nil
	case len(v4) > 0:
		return "127.0.0.1", v4[0], nil
	}
	return "", "", errors.New("the loopback interface has only one address, and the secondary needs a second one: enable IPv6 on lo (::1), or add one (ip addr add 127.0.0.2/32 dev lo)")
}

// freePort picks a port free on both addresses, for UDP and TCP.
func freePort(a, b string) (int, error) {
	p, _ := rand.Int(rand.Reader, big.NewInt(20000))
	port := 20000 + int(p.Int64())
	for _, ip := range []string{a, b} {
		addr := net.JoinHostPort(ip, strconv.Itoa(port))
		u, err := net.ListenPacket("udp", addr)
		if err != nil {
			return 0, err
		}
		u.Close()
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return 0, err
		}
		l.Close()
	}
	return port, nil
}

// errInUse: named could not listen on its port.
var errInUse = errors.New("address in use")

// configure writes both servers' named.conf and the primary's zone files.
func (s *Servers) configure() error {
	for _, in := range []*instance{s.primary, s.secondary} {
		if err := os.MkdirAll(in.dir, 0o755); err != nil {
			return err
		}
		var zones strings.Builder
		for _, z := range s.zones {
			file := filepath.Join(in.dir, strings.TrimSuffix(z, ".")+".db")
			if in == s.primary {
				if err := os.WriteFile(file, []byte(s.zoneFile(z)), 0o644); err != nil {
					return err
				}
				fmt.Fprintf(&zones, "zone %q {\n\ttype primary;\n\tfile %q;\n\tupdate-policy { grant %s zonesub TXT; grant %s zonesub CNAME; };\n};\n",
					z, file, KeyName, KeyName)
			} else {
				fmt.Fprintf(&zones, "zone %q {\n\ttype secondary;\n\tfile %q;\n\tprimaries port %d { %s; };\n};\n",
					z, file, s.port, s.primary.addr)
			}
		}
		conf := fmt.Sprintf(`options {
	directory %q;
	pid-file none;
	%s
	recursion no;
	dnssec-validation no;
	notify no;
	allow-query { any; };
	allow-transfer { 127.0.0.0/8; };
	allow-notify { 127.0.0.0/8; ::1; };
	session-keyfile none;
	managed-keys-directory %q;
};
controls { };
%s
%s`, in.dir, in.listen(s.port), in.dir, keyStatement(KeyName, s.secret), zones.String())
		if err := os.WriteFile(filepath.Join(in.dir, "named.conf"), []byte(conf), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// listen is named.conf's listen-on statements for the instance's address.
func (in *instance) listen(port int) string {
	if strings.Contains(in.addr, ":") {
		return fmt.Sprintf("listen-on { none; };\n\tlisten-on-v6 port %d { %s; };", port, in.addr)
	}
	return fmt.Sprintf("listen-on port %d { %s; };\n\tlisten-on-v6 { none; };", port, in.addr)
}

// rr is the address record of the instance's address.
func (in *instance) rr() string {
	if strings.Contains(in.addr, ":") {
		return "AAAA\t" + in.addr
	}
	return "A\t" + in.addr
}

// zoneFile: ns1 is the primary and ns2 the secondary. refresh and retry
// are a day: the secondary copies the zone only when notified. The SOA's
// MINIMUM, the negative TTL (RFC 2308 §5) that rotation waits for before
// a switch, is 1s: tests compress time.
func (s *Servers) zoneFile(z string) string {
	return fmt.Sprintf(`$TTL 60
@	SOA	ns1.%[1]s hostmaster.%[1]s 1 86400 86400 604800 1
@	NS	ns1.%[1]s
@	NS	ns2.%[1]s
ns1	%[2]s
ns2	%[3]s
`, z, s.primary.rr(), s.secondary.rr())
}

func (in *instance) start(s *Servers) error {
	in.mu.Lock()
	if in.cmd != nil {
		in.mu.Unlock()
		return nil
	}
	log, err := os.OpenFile(filepath.Join(in.dir, "named.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		in.mu.Unlock()
		return err
	}
	// -g: foreground, logging to stderr; -n 1: one worker thread is
	// plenty.
	cmd := exec.Command(in.bin, "-g", "-n", "1", "-c", filepath.Join(in.dir, "named.conf"))
	cmd.Dir = in.dir
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		log.Close()
		in.mu.Unlock()
		return fmt.Errorf("%s named: %v", in.role, err)
	}
	end := make(chan struct{})
	go func() { cmd.Wait(); close(end) }()
	in.cmd, in.out, in.end = cmd, log, end
	in.mu.Unlock()

	addr := net.JoinHostPort(in.addr, strconv.Itoa(s.port))
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-end:
			in.mu.Lock()
			in.cmd = nil
			log.Close()
			in.mu.Unlock()
			if strings.Contains(in.logTail(), "address in use") {
				return fmt.Errorf("%s named at %s: %w", in.role, addr, errInUse)
			}
			return fmt.Errorf("%s named at %s exited at start:\n%s", in.role, addr, in.logTail())
		default:
		}
		if strings.Contains(in.logTail(), "address in use") {
			in.stop()
			return fmt.Errorf("%s named at %s: %w", in.role, addr, errInUse)
		}
		// A secondary answers SERVFAIL until it has the zone: it runs.
		if _, err := soaSerial(addr, s.zones[0]); err == nil || in.role == "secondary" && isAnswer(err) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	in.stop()
	return fmt.Errorf("%s named at %s does not answer after 20s:\n%s", in.role, addr, in.logTail())
}

// stop ends named with SIGTERM (it flushes what it has to), or SIGKILL
// after 10s.
func (in *instance) stop() {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.cmd == nil {
		return
	}
	in.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-in.end:
	case <-time.After(10 * time.Second):
		syscall.Kill(-in.cmd.Process.Pid, syscall.SIGKILL)
		<-in.end
	}
	in.out.Close()
	in.cmd = nil
}

func (in *instance) logTail() string {
	b, _ := os.ReadFile(filepath.Join(in.dir, "named.log"))
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}

func (s *Servers) close() {
	if s.stop != nil {
		close(s.stop)
		<-s.done
	}
	s.secondary.stop()
	s.primary.stop()
}

// Zone is the first zone, without the final dot.
func (s *Servers) Zone() string { return strings.TrimSuffix(s.zones[0], ".") }

// Port is the port both servers listen on.
func (s *Servers) Port() int { return s.port }

// Primary is the primary's address, "IP:port": ns1 of the zones.
func (s *Servers) Primary() string { return net.JoinHostPort(s.primary.addr, strconv.Itoa(s.port)) }

// Secondary is the secondary's address, "IP:port": ns2 of the zones.
func (s *Servers) Secondary() string {
	return net.JoinHostPort(s.secondary.addr, strconv.Itoa(s.port))
}

// KeyFile is a BIND key file, as tsig-keygen writes it, of the key that
// may update TXT and CNAME records in the zones.
func (s *Servers) KeyFile() string { return s.keyFile }

// WrongKeyFile is a key file with the right name and algorithm and
// another secret: the primary answers NOTAUTH/BADSIG.
func (s *Servers) WrongKeyFile() string { return s.wrong }

// Publisher is a [publish.NAME] table for the primary: method rfc2136,
// server and zone set, the key file, a TTL of 1s (tests compress time)
// and a timeout of 3s.
func (s *Servers) Publisher(name string) *config.Publisher {
	return &config.Publisher{Name: name, Method: "rfc2136", Server: s.Primary(), Zone: s.Zone(),
		TSIGKey: s.keyFile, TTL: time.Second, Timeout: 3 * time.Second}
}

// Nameservers is a [dns] nameservers list that reaches the zones: the
// primary, which answers for them (and only them) with recursion off.
func (s *Servers) Nameservers() []string { return []string{s.Primary()} }

// Log returns the end of a server's log ("primary" or "secondary"), for
// a failing test's message.
func (s *Servers) Log(role string) string {
	if role == "secondary" {
		return s.secondary.logTail()
	}
	return s.primary.logTail()
}

// Stop stops the primary; its zones and their changes (the journal) stay
// for Start. Updates and queries to it then fail.
func (s *Servers) Stop(tb testing.TB) {
	tb.Helper()
	s.primary.stop()
}

// Start starts the primary again, with the zones as they were.
func (s *Servers) Start(tb testing.TB) {
	tb.Helper()
	if err := s.primary.start(s); err != nil {
		tb.Fatal(err)
	}
}

// StopSecondary stops the secondary: an authoritative server that does
// not answer.
func (s *Servers) StopSecondary(tb testing.TB) { tb.Helper(); s.secondary.stop() }

// StartSecondary starts the secondary again, serving the zones as it
// had them; it catches up at once when it follows. A held one may catch
// up too, when named asks its primary for the SOA at start (it does, at
// a moment of its own choosing): hold a secondary that runs.
func (s *Servers) StartSecondary(tb testing.TB) {
	tb.Helper()
	if err := s.secondary.start(s); err != nil {
		tb.Fatal(err)
	}
}

// Hold stops the secondary from catching up: it keeps serving the zones
// as they are now, whatever the primary is sent, until Sync or Release.
func (s *Servers) Hold() {
	s.mu.Lock()
	s.follow = false
	s.mu.Unlock()
	// A NOTIFY that arrived while the secondary was transferring is
	// queued by named and acted on when the transfer ends: give a recent
	// one time to be done with, or it takes the test's next change.
	if wait := time.Second - time.Since(time.Unix(0, s.lastNotify.Load())); wait > 0 {
		time.Sleep(wait)
	}
}

// Release lets the secondary follow the primary again, and waits until it
// has caught up.
func (s *Servers) Release(tb testing.TB) {
	tb.Helper()
	s.mu.Lock()
	s.follow = true
	s.mu.Unlock()
	s.Sync(tb)
}

// Sync makes the secondary copy the zones now, and waits until it serves
// what the primary serves (the same SOA serials). A held secondary stays
// held afterwards.
func (s *Servers) Sync(tb testing.TB) {
	tb.Helper()
	if err := s.waitSynced(20 * time.Second); err != nil {
		tb.Fatalf("bindtest: the secondary did not catch up: %v\nsecondary's log:\n%s", err, s.secondary.logTail())
	}
}

// waitSynced notifies the secondary until its serials equal the primary's.
func (s *Servers) waitSynced(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var err error
	for time.Now().Before(deadline) {
		if err = s.catchUp(); err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return err
}

// catchUp compares the serials and, where the secondary is behind, sends
// it a NOTIFY (RFC 1996), as the primary would (the secondary's
// allow-notify accepts it from any loopback address). nil when they are
// equal.
// https://www.rfc-editor.org/rfc/rfc1996
func (s *Servers) catchUp() error {
	var behind error
	for _, z := range s.zones {
		p, err := soaSerial(s.Primary(), z)
		if err != nil {
			return fmt.Errorf("primary: %v", err)
		}
		q, err := soaSerial(s.Secondary(), z)
		if err == nil && q == p {
			continue
		}
		if err == nil {
			behind = fmt.Errorf("zone %s: the secondary has serial %d, the primary %d", z, q, p)
		} else {
			behind = fmt.Errorf("zone %s: secondary: %v", z, err)
		}
		if nerr := s.notify(z); nerr != nil {
			behind = fmt.Errorf("%v; NOTIFY: %v", behind, nerr)
		}
	}
	return behind
}

func (s *Servers) notify(zone string) error {
	s.lastNotify.Store(time.Now().UnixNano())
	m := new(dns.Msg)
	m.SetNotify(zone)
	c := &dns.Client{Net: "udp", Timeout: time.Second}
	resp, _, err := c.Exchange(m, s.Secondary())
	if err != nil {
		return err
	}
	if resp.Rcode != dns.RcodeSuccess {
		return errors.New(dns.RcodeToString[resp.Rcode])
	}
	return nil
}

// follower keeps the secondary caught up while it follows, within about
// 100ms of a change.
func (s *Servers) follower() {
	defer close(s.done)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		// The lock is held through the catch-up, so that Hold returns
		// only once no NOTIFY is on its way: one sent by a round that
		// began before Hold would let the secondary take the next change.
		s.mu.Lock()
		if s.follow {
			s.catchUp()
		}
		s.mu.Unlock()
	}
}

// soaSerial asks server for zone's SOA serial.
func soaSerial(server, zone string) (uint32, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(zone), dns.TypeSOA)
	m.RecursionDesired = false
	c := &dns.Client{Timeout: time.Second}
	resp, _, err := c.Exchange(m, server)
	if err != nil {
		return 0, err
	}
	if resp.Rcode != dns.RcodeSuccess {
		return 0, answerError{resp.Rcode}
	}
	for _, rr := range resp.Answer {
		if soa, ok := rr.(*dns.SOA); ok {
			return soa.Serial, nil
		}
	}
	return 0, errors.New("no SOA in the answer")
}

// answerError: the server answered, with an error RCODE (a secondary
// that has not loaded the zone yet answers SERVFAIL).
type answerError struct{ rcode int }

func (e answerError) Error() string { return dns.RcodeToString[e.rcode] }

func isAnswer(err error) bool {
	var a answerError
	return errors.As(err, &a)
}

// Serial is the SOA serial of zone ("" for the first) at server
// (Primary() or Secondary()).
func (s *Servers) Serial(tb testing.TB, server, zone string) uint32 {
	tb.Helper()
	if zone == "" {
		zone = s.zones[0]
	}
	n, err := soaSerial(server, zone)
	if err != nil {
		tb.Fatalf("bindtest: SOA of %s at %s: %v", zone, server, err)
	}
	return n
}

// TXT returns the TXT records at name served by server (Primary() or
// Secondary()), each with its strings joined; none when there is none.
func (s *Servers) TXT(tb testing.TB, server, name string) []string {
	tb.Helper()
	recs, err := LookupTXT(context.Background(), server, name)
	if err != nil {
		tb.Fatalf("bindtest: %v", err)
	}
	return recs
}

// LookupTXT asks server for name's TXT records (RD=0, TCP when
// truncated), each with its strings joined: nil for NXDOMAIN or no
// record. For tests that record what DNS served at a moment, from a
// goroutine that must not fail the test itself.
func LookupTXT(ctx context.Context, server, name string) ([]string, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeTXT)
	m.RecursionDesired = false
	m.SetEdns0(4096, false)
	c := &dns.Client{Timeout: 2 * time.Second}
	resp, _, err := c.ExchangeContext(ctx, m, server)
	if err == nil && resp.Truncated {
		c.Net = "tcp"
		resp, _, err = c.ExchangeContext(ctx, m, server)
	}
	if err != nil {
		return nil, fmt.Errorf("TXT %s at %s: %v", name, server, err)
	}
	if resp.Rcode != dns.RcodeSuccess && resp.Rcode != dns.RcodeNameError {
		return nil, fmt.Errorf("TXT %s at %s: %s", name, server, dns.RcodeToString[resp.Rcode])
	}
	var out []string
	for _, rr := range resp.Answer {
		if t, ok := rr.(*dns.TXT); ok {
			out = append(out, joinTXT(t.Txt))
		}
	}
	return out, nil
}

// SetTXT replaces the TXT records at name on the primary by hand (an
// update signed with the key, not through dnsupdate): one record per
// value; none deletes them. A value over 255 bytes is split.
func (s *Servers) SetTXT(tb testing.TB, name string, values ...string) {
	tb.Helper()
	fqdn := dns.Fqdn(name)
	var rrs []dns.RR
	for _, v := range values {
		rrs = append(rrs, &dns.TXT{Hdr: dns.RR_Header{Name: fqdn, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: splitTXT(v)})
	}
	s.update(tb, fqdn, dns.TypeTXT, rrs)
}

// SetTXTStrings replaces the TXT records at name on the primary with one
// record made of the given character-strings (each at most 255 bytes),
// as a record published by hand may be split anywhere.
func (s *Servers) SetTXTStrings(tb testing.TB, name string, strs ...string) {
	tb.Helper()
	fqdn := dns.Fqdn(name)
	var esc []string
	for _, str := range strs {
		esc = append(esc, escapeTXT(str))
	}
	s.update(tb, fqdn, dns.TypeTXT, []dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: fqdn, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: esc}})
}

// SetCNAME makes name an alias of target on the primary ("" removes it).
func (s *Servers) SetCNAME(tb testing.TB, name, target string) {
	tb.Helper()
	fqdn := dns.Fqdn(name)
	var rrs []dns.RR
	if target != "" {
		rrs = []dns.RR{&dns.CNAME{Hdr: dns.RR_Header{Name: fqdn, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60}, Target: dns.Fqdn(target)}}
	}
	s.update(tb, fqdn, dns.TypeCNAME, rrs)
}

func (s *Servers) update(tb testing.TB, fqdn string, rrtype uint16, rrs []dns.RR) {
	tb.Helper()
	zone := ""
	for _, z := range s.zones {
		if dns.IsSubDomain(z, fqdn) && len(z) > len(zone) {
			zone = z
		}
	}
	if zone == "" {
		tb.Fatalf("bindtest: %s is in none of the zones %v", fqdn, s.zones)
	}
	m := new(dns.Msg)
	m.SetUpdate(zone)
	m.RemoveRRset([]dns.RR{&dns.ANY{Hdr: dns.RR_Header{Name: fqdn, Rrtype: rrtype}}})
	if len(rrs) > 0 {
		m.Insert(rrs)
	}
	m.SetTsig(KeyName+".", dns.HmacSHA256, 300, time.Now().Unix())
	c := &dns.Client{Net: "tcp", Timeout: 5 * time.Second, TsigSecret: map[string]string{KeyName + ".": s.secret}}
	resp, _, err := c.Exchange(m, s.Primary())
	if err != nil {
		tb.Fatalf("bindtest: update of %s: %v", fqdn, err)
	}
	if resp.Rcode != dns.RcodeSuccess {
		tb.Fatalf("bindtest: update of %s: %s\n%s", fqdn, dns.RcodeToString[resp.Rcode], s.primary.logTail())
	}
}

func splitTXT(v string) []string {
	var out []string
	for len(v) > 255 {
		out = append(out, escapeTXT(v[:255]))
		v = v[255:]
	}
	return append(out, escapeTXT(v))
}

func escapeTXT(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s)
}

func joinTXT(strs []string) string {
	var b strings.Builder
	for _, s := range strs {
		b.WriteString(strings.NewReplacer(`\\`, `\`, `\"`, `"`).Replace(s))
	}
	return b.String()
}
