// Package dnstest runs a small in-process DNS server for tests. It listens on
// 127.0.0.1 only, serves UDP and TCP on the same port (so a client can fall
// back from a truncated UDP answer to TCP exactly as against a real
// resolver), and lets a test script per-name behaviour: TXT data, CNAMEs,
// error rcodes, silence, delays, replies with a wrong ID, forced truncation.
//
// It answers like a recursive resolver would: CNAME chains are followed and
// the whole chain plus the target's TXT RRs go into the answer section.
package dnstest

import (
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// DefaultTTL is the TTL of records until SetTTL changes it.
const DefaultTTL = 300

// maxChain bounds CNAME chasing so that a scripted loop cannot hang a test.
const maxChain = 8

// Server is a running test DNS server. All methods are safe for concurrent use.
type Server struct {
	// Addr is "127.0.0.1:PORT"; UDP and TCP both listen on it.
	Addr string

	t        testing.TB
	udp, tcp *dns.Server
	done     chan struct{} // closed by Stop; releases delayed handlers
	stop     sync.Once

	mu       sync.Mutex
	names    map[string]*entry
	queries  map[string]int
	truncate bool
	ad       bool
	ns       nsData // zones, see ns.go
}

// entry is the scripted behaviour of one owner name.
type entry struct {
	txt      [][]string // one element per RR, strings in miekg presentation format
	ttl      uint32
	rcode    int // used when hasRcode
	hasRcode bool
	cname    string // FQDN, lower case; "" if none
	timeout  bool
	wrongID  bool
	delay    time.Duration
}

// New starts a server on a free loopback port and registers t.Cleanup to
// shut it down.
func New(t testing.TB) *Server {
	t.Helper()
	pc, ln := listenPair(t)
	return serve(t, pc, ln)
}

// NewAt starts a server on addr ("127.0.0.153:53"), UDP and TCP, for a
// peer that cannot be given a port: OpenDKIM's Nameservers option takes
// addresses only. A port under 1024 needs root.
func NewAt(t testing.TB, addr string) *Server {
	t.Helper()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatalf("dnstest: listen udp %s: %v", addr, err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		pc.Close()
		t.Fatalf("dnstest: listen tcp %s: %v", addr, err)
	}
	return serve(t, pc, ln)
}

func serve(t testing.TB, pc net.PacketConn, ln net.Listener) *Server {
	t.Helper()
	s := &Server{
		t:       t,
		done:    make(chan struct{}),
		names:   make(map[string]*entry),
		queries: make(map[string]int),
	}
	s.Addr = pc.LocalAddr().String()

	// A private handler: the global dns mux would be shared between tests.
	h := dns.HandlerFunc(s.serveDNS)
	s.udp = &dns.Server{PacketConn: pc, Handler: h}
	s.tcp = &dns.Server{Listener: ln, Handler: h}

	errc := make(chan error, 2)
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		ready := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(ready) }
		go func() { errc <- srv.ActivateAndServe() }()
		select {
		case <-ready:
		case err := <-errc:
			pc.Close()
			ln.Close()
			t.Fatalf("dnstest: starting server: %v", err)
		}
	}

	t.Cleanup(s.Stop)
	return s
}

// Stop shuts the server down, as a resolver that dies: its ports are
// closed, so a query meets "connection refused". NewAt on s.Addr starts
// it again (with no records). Calling it twice does no harm.
func (s *Server) Stop() {
	s.stop.Do(func() {
		close(s.done)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.udp.ShutdownContext(ctx)
		s.tcp.ShutdownContext(ctx)
	})
}

// listenPair binds UDP on an ephemeral port and TCP on the same port. The TCP
// port may already be taken by someone else, so it retries with a new port.
func listenPair(t testing.TB) (net.PacketConn, net.Listener) {
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("dnstest: listen udp: %v", err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln
		}
		pc.Close()
		lastErr = err
	}
	t.Fatalf("dnstest: no port free for both UDP and TCP: %v", lastErr)
	return nil, nil
}

func key(name string) string { return strings.ToLower(dns.Fqdn(name)) }

// get returns the entry for name, creating it. Callers hold s.mu.
func (s *Server) get(name string) *entry {
	k := key(name)
	e := s.names[k]
	if e == nil {
		e = &entry{ttl: DefaultTTL}
		s.names[k] = e
	}
	return e
}

// SetTXT makes name answer with one TXT RR per record. Each record is the
// logical string in raw bytes; it is split into character-strings of at most
// 255 bytes, as a zone file generator would. It replaces earlier TXT data and
// clears any rcode, NODATA, CNAME or SetTimeout set for name (SetTTL,
// SetDelay and SetWrongID stay).
func (s *Server) SetTXT(name string, records ...string) {
	rrs := make([][]string, 0, len(records))
	for _, r := range records {
		var strs []string
		for len(r) > 255 {
			strs = append(strs, escape(r[:255]))
			r = r[255:]
		}
		rrs = append(rrs, append(strs, escape(r)))
	}
	s.setTXT(name, rrs)
}

// SetTXTStrings makes name answer with a single TXT RR made of exactly these
// character-strings (raw bytes, each at most 255). Like SetTXT it replaces
// earlier data for name.
func (s *Server) SetTXTStrings(name string, strs []string) {
	rr := make([]string, 0, len(strs))
	for _, str := range strs {
		if len(str) > 255 {
			s.t.Errorf("dnstest: SetTXTStrings(%q): character-string of %d bytes (max 255)", name, len(str))
			return
		}
		rr = append(rr, escape(str))
	}
	s.setTXT(name, [][]string{rr})
}

func (s *Server) setTXT(name string, rrs [][]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.get(name)
	e.txt, e.hasRcode, e.cname, e.timeout = rrs, false, "", false
}

// escape turns raw bytes into miekg's presentation format, which is what
// dns.TXT.Txt holds: the packer reads `\"`, `\\` and `\DDD` back into bytes.
func escape(raw string) string {
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c > 0x7e:
			b.WriteByte('\\')
			d := strconv.Itoa(int(c))
			b.WriteString(strings.Repeat("0", 3-len(d)) + d)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// SetTTL sets the TTL of name's TXT and CNAME RRs.
func (s *Server) SetTTL(name string, ttl uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.get(name).ttl = ttl
}

// SetRcode makes queries for name fail with rcode (dns.RcodeNameError,
// dns.RcodeServerFailure, dns.RcodeRefused, ...).
func (s *Server) SetRcode(name string, rcode int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.get(name)
	e.rcode, e.hasRcode, e.timeout = rcode, true, false
}

// SetNoData makes name exist with no TXT RR: NOERROR and an empty answer.
func (s *Server) SetNoData(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.get(name)
	e.txt, e.hasRcode, e.cname, e.timeout = nil, false, "", false
}

// SetTimeout makes the server never answer queries for name.
func (s *Server) SetTimeout(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.get(name).timeout = true
}

// SetCNAME makes name an alias of target. The answer carries the CNAME and,
// if target has TXT data (possibly via further CNAMEs), the target's TXT RRs.
// A target that is not set yields NXDOMAIN with the CNAME in the answer, as
// a recursive resolver reports a dangling alias.
func (s *Server) SetCNAME(name, target string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.get(name)
	e.cname, e.txt, e.hasRcode, e.timeout = key(target), nil, false, false
}

// SetTruncateUDP makes every UDP answer come back with TC=1 and no records,
// so that only TCP yields the data.
func (s *Server) SetTruncateUDP(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.truncate = on
}

// SetAD sets the AD (authenticated data) bit on every answer.
func (s *Server) SetAD(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ad = on
}

// SetWrongID makes the server answer queries for name with a reply whose
// message ID does not match the query, and then send nothing else.
func (s *Server) SetWrongID(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.get(name).wrongID = true
}

// SetDelay delays every answer for name by d (cut short at cleanup).
func (s *Server) SetDelay(name string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.get(name).delay = d
}

// Remove forgets everything set for name; it then answers NXDOMAIN. The
// query count is kept.
func (s *Server) Remove(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.names, key(name))
}

// Queries reports how many queries for name arrived, over UDP and TCP.
func (s *Server) Queries(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[key(name)]
}

func (s *Server) serveDNS(w dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) != 1 {
		m := new(dns.Msg)
		w.WriteMsg(m.SetRcode(req, dns.RcodeFormatError))
		return
	}
	q := req.Question[0]
	udp := w.RemoteAddr().Network() == "udp"

	s.mu.Lock()
	s.queries[key(q.Name)]++
	var delay time.Duration
	var timeout, wrongID bool
	if e := s.names[key(q.Name)]; e != nil {
		delay, timeout, wrongID = e.delay, e.timeout, e.wrongID
	}
	s.mu.Unlock()

	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-s.done:
			t.Stop()
			return
		}
	}
	if timeout {
		return
	}

	m := s.answer(req, udp)
	if wrongID {
		m.Id = req.Id + 1
	}
	w.WriteMsg(m)
}

// answer builds the reply to req the way a recursive resolver would.
func (s *Server) answer(req *dns.Msg, udp bool) *dns.Msg {
	q := req.Question[0]
	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true

	s.mu.Lock()
	m.AuthenticatedData = s.ad
	truncate := s.truncate
	cur := key(q.Name)
	// NS, SOA, A and AAAA questions about zones set up by ns.go.
	zoneAnswered := s.hasZones() && s.answerZoneType(m, q)
	for hop := 0; !zoneAnswered; hop++ {
		e := s.names[cur]
		if e == nil || hop == maxChain {
			m.Rcode = dns.RcodeNameError
			break
		}
		if e.hasRcode {
			m.Rcode = e.rcode
			break
		}
		hdr := dns.RR_Header{Name: cur, Class: dns.ClassINET, Ttl: e.ttl}
		if e.cname != "" {
			hdr.Rrtype = dns.TypeCNAME
			m.Answer = append(m.Answer, &dns.CNAME{Hdr: hdr, Target: e.cname})
			cur = e.cname
			continue
		}
		if q.Qtype == dns.TypeTXT || q.Qtype == dns.TypeANY {
			hdr.Rrtype = dns.TypeTXT
			for _, strs := range e.txt {
				m.Answer = append(m.Answer, &dns.TXT{Hdr: hdr, Txt: append([]string(nil), strs...)})
			}
		}
		break
	}
	if s.hasZones() {
		s.finishZone(m, q)
	}
	s.mu.Unlock()

	size := dns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(opt.UDPSize(), opt.Do())
		size = max(int(opt.UDPSize()), dns.MinMsgSize)
	}
	if udp {
		if truncate {
			m.Answer, m.Ns = nil, nil
			m.Truncated = true
		} else {
			// A real server drops what does not fit the client's buffer.
			m.Truncate(size)
		}
	}
	return m
}
