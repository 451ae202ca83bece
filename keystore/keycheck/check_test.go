package keycheck

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/internal/dns"
	"github.com/dkimmilter/dkimmilter/internal/dnstest"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
	"github.com/dkimmilter/dkimmilter/keystore"
	mdns "github.com/miekg/dns"
)

const chkName = "sel._domainkey.example.com"

func chkKey(t *testing.T, signer crypto.Signer) *keystore.Key {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(signer)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := keystore.ParsePrivateKey(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	if err != nil {
		t.Fatal(err)
	}
	return &keystore.Key{Name: "example", Domain: "example.com", Selector: "sel", File: "/keys/sel.pem", PrivateKey: pk}
}

// chkResolver asks s alone, as keys check asks each configured server.
func chkResolver(t *testing.T, s *dnstest.Server, timeout time.Duration) Resolver {
	t.Helper()
	rs, err := Resolvers([]string{s.Addr}, timeout)
	if err != nil || len(rs) != 1 {
		t.Fatalf("Resolvers: %v %v", rs, err)
	}
	return rs[0]
}

// chkWant checks a result: its status, that summary is in its summary,
// and that each of problems and hints is in some problem text or hint.
func chkWant(t *testing.T, r *Result, status Status, summary string, problems, hints []string) {
	t.Helper()
	if r.Status != status {
		t.Errorf("status %v, want %v", r.Status, status)
	}
	if !strings.Contains(r.Summary, summary) {
		t.Errorf("summary %q, want %q in it", r.Summary, summary)
	}
	var texts, allHints []string
	for _, p := range r.Problems {
		texts = append(texts, p.Text)
		allHints = append(allHints, p.Hints...)
		if len(p.Hints) == 0 {
			t.Errorf("problem without a hint: %q", p.Text)
		}
	}
	for _, w := range problems {
		if !strings.Contains(strings.Join(texts, "\n"), w) {
			t.Errorf("no problem says %q; problems:\n%s", w, strings.Join(texts, "\n"))
		}
	}
	for _, w := range hints {
		if !strings.Contains(strings.Join(allHints, "\n"), w) {
			t.Errorf("no hint says %q; hints:\n%s", w, strings.Join(allHints, "\n"))
		}
	}
	if status == OK && len(r.Problems) > 0 {
		t.Errorf("ok with problems: %q", texts)
	}
	if t.Failed() {
		t.Logf("result: %+v", r)
	}
}

func TestCheckKey(t *testing.T) {
	rsaKey := testkit.RSAKey(2048)
	other := testkit.RSAKey(2064)
	edKey := ed25519.NewKeyFromSeed([]byte(strings.Repeat("k", ed25519.SeedSize)))
	rec := testkit.KeyRecord(rsaKey, "")
	p := rec[strings.Index(rec, "p="):]

	tests := []struct {
		name     string
		key      crypto.Signer // default rsaKey
		setup    func(s *dnstest.Server)
		status   Status
		summary  string
		problems []string
		hints    []string
	}{
		{name: "RSA published and matching", setup: func(s *dnstest.Server) { s.SetTXT(chkName, rec) },
			status: OK, summary: "rsa 2048-bit key published and matching, TTL 5m0s"},
		{name: "Ed25519 published and matching", key: edKey,
			setup:  func(s *dnstest.Server) { s.SetTXT(chkName, testkit.KeyRecord(edKey, "")) },
			status: OK, summary: "ed25519 key published and matching"},
		{name: "record split across several strings",
			setup:  func(s *dnstest.Server) { s.SetTXTStrings(chkName, []string{rec[:20], rec[20:200], rec[200:]}) },
			status: OK, summary: "published and matching"},
		{name: "bare PKCS#1 p= and no v=", setup: func(s *dnstest.Server) {
			s.SetTXT(chkName, "k=rsa; p="+base64.StdEncoding.EncodeToString(x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey)))
		}, status: OK, summary: "published and matching"},
		{name: "through a CNAME", setup: func(s *dnstest.Server) {
			s.SetCNAME(chkName, "sel.dkim.provider.example")
			s.SetTXT("sel.dkim.provider.example", rec)
		}, status: OK, summary: "published and matching"},
		{name: "NXDOMAIN", setup: func(s *dnstest.Server) {},
			status: Fail, summary: "no record (NXDOMAIN)",
			problems: []string{"no record at sel._domainkey.example.com (NXDOMAIN", `"no key for signature"`},
			hints: []string{"publish this TXT record at sel._domainkey.example.com", "\n" + rec,
				`it must be exactly sel._domainkey.example.com, for selector "sel" and domain "example.com" of keys.example`,
				"sel._domainkey.example.com.example.com", "negative TTL"}},
		{name: "NODATA", setup: func(s *dnstest.Server) { s.SetNoData(chkName) },
			status: Fail, summary: "no TXT record (NODATA)",
			problems: []string{"exists but holds no TXT record"}, hints: []string{"\n" + rec}},
		{name: "another key published", setup: func(s *dnstest.Server) { s.SetTXT(chkName, testkit.KeyRecord(other, "")) },
			status: Fail, summary: "published, but a different key",
			problems: []string{"p= is not the public key of /keys/sel.pem", "signature did not verify"},
			hints:    []string{"\n" + rec, "points at the wrong key file or selector", "TTL (5m0s)"}},
		{name: "revoked", setup: func(s *dnstest.Server) { s.SetTXT(chkName, "v=DKIM1; k=rsa; p=") },
			status: Fail, summary: "key revoked",
			problems: []string{"the key is revoked"}, hints: []string{"[[signing]]", "\n" + rec}},
		{name: "t=y", setup: func(s *dnstest.Server) { s.SetTXT(chkName, testkit.KeyRecord(rsaKey, "t=y; ")) },
			status: Warn, summary: "published and matching",
			problems: []string{"t=y: the domain says it is testing DKIM"}, hints: []string{"remove t=y"}},
		{name: "t=s alone is fine", setup: func(s *dnstest.Server) { s.SetTXT(chkName, testkit.KeyRecord(rsaKey, "t=s; ")) },
			status: OK, summary: "published and matching"},
		{name: "k= names the other algorithm", setup: func(s *dnstest.Server) { s.SetTXT(chkName, "v=DKIM1; k=ed25519; "+p) },
			status: Fail, summary: "k=ed25519 record, but the key is rsa",
			problems: []string{"the record has k=ed25519 but /keys/sel.pem holds an rsa key"}, hints: []string{"\n" + rec}},
		{name: "Ed25519 key, record without k=", key: edKey, setup: func(s *dnstest.Server) {
			s.SetTXT(chkName, "v=DKIM1; "+strings.TrimPrefix(testkit.KeyRecord(edKey, ""), "v=DKIM1; k=ed25519; "))
		}, status: Fail, problems: []string{"no k= (which means rsa)"}, hints: []string{"k=ed25519; p="}},
		{name: "h= without sha256", setup: func(s *dnstest.Server) { s.SetTXT(chkName, testkit.KeyRecord(rsaKey, "h=sha1; ")) },
			status: Fail, problems: []string{"h=sha1 does not allow sha256"}, hints: []string{"remove h="}},
		{name: "h= with sha256", setup: func(s *dnstest.Server) { s.SetTXT(chkName, testkit.KeyRecord(rsaKey, "h=sha1:sha256; ")) },
			status: OK, summary: "published and matching"},
		{name: "s= without email", setup: func(s *dnstest.Server) { s.SetTXT(chkName, testkit.KeyRecord(rsaKey, "s=tlsrpt; ")) },
			status: Fail, problems: []string{"s=tlsrpt does not allow the key to be used for email"}, hints: []string{"remove s="}},
		{name: "s=email", setup: func(s *dnstest.Server) { s.SetTXT(chkName, testkit.KeyRecord(rsaKey, "s=email; ")) },
			status: OK},
		{name: "unusable record", setup: func(s *dnstest.Server) { s.SetTXT(chkName, "v=DKIM1; k=rsa; p=!!notbase64") },
			status: Fail, summary: "unusable key record", problems: []string{"bad base64"}, hints: []string{"\n" + rec}},
		{name: "record cut at 255 bytes", setup: func(s *dnstest.Server) { s.SetTXT(chkName, rec[:255]) },
			status: Fail, summary: "record cut at 255 bytes",
			problems: []string{"the record is exactly 255 bytes, the most one TXT string holds"},
			hints:    []string{"several quoted strings of at most 255 bytes", "\n" + rec}},
		{name: "two DKIM records", setup: func(s *dnstest.Server) { s.SetTXT(chkName, rec, testkit.KeyRecord(other, "")) },
			status: Fail, summary: "2 DKIM key records",
			problems: []string{"2 DKIM key records at sel._domainkey.example.com", "RFC 6376 §3.6.2.2"},
			hints:    []string{"keep only this one, which matches /keys/sel.pem:\n" + rec}},
		{name: "two DKIM records, neither matching", setup: func(s *dnstest.Server) {
			s.SetTXT(chkName, testkit.KeyRecord(other, ""), "v=DKIM1; k=rsa; p=")
		}, status: Fail, hints: []string{"remove all of them but one", "\n" + rec}},
		{name: "DKIM and SPF-like record", setup: func(s *dnstest.Server) { s.SetTXT(chkName, rec, "v=spf1 -all") },
			status: Warn, summary: "published and matching",
			problems: []string{`also holds a TXT record that is not a DKIM key: "v=spf1 -all"`}, hints: []string{"remove it"}},
		{name: "only a non-DKIM record", setup: func(s *dnstest.Server) { s.SetTXT(chkName, "google-site-verification=abc") },
			status: Fail, summary: "no DKIM key record",
			problems: []string{"is not a DKIM key record"}, hints: []string{"replace it with this TXT record", "\n" + rec}},
		{name: "1024-bit key", key: testkit.RSAKey(1024),
			setup:  func(s *dnstest.Server) { s.SetTXT(chkName, testkit.KeyRecord(testkit.RSAKey(1024), "")) },
			status: Warn, summary: "rsa 1024-bit key published and matching",
			problems: []string{"1024-bit RSA key"}, hints: []string{"keys rotate -d example.com"}},
		{name: "SERVFAIL", setup: func(s *dnstest.Server) { s.SetRcode(chkName, mdns.RcodeServerFailure) },
			status: Temp, summary: "lookup failed (SERVFAIL)",
			problems: []string{"SERVFAIL: the key could not be checked there"}, hints: []string{"dig +cd"}},
		{name: "REFUSED", setup: func(s *dnstest.Server) { s.SetRcode(chkName, mdns.RcodeRefused) },
			status: Temp, hints: []string{"lame delegation"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := dnstest.New(t)
			tt.setup(s)
			signer := tt.key
			if signer == nil {
				signer = rsaKey
			}
			k := chkKey(t, signer)
			r := Check(context.Background(), k, []Resolver{chkResolver(t, s, 5*time.Second)})
			chkWant(t, r, tt.status, tt.summary, tt.problems, tt.hints)
			if r.DNSName != chkName {
				t.Errorf("DNS name %q", r.DNSName)
			}
		})
	}
}

// A resolver that is not running (connection refused) is not the zone's
// fault: the hint says to start it or fix [dns] nameservers.
func TestCheckKeyConnectionRefused(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	c, err := dns.NewClient([]string{addr}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	r := Check(context.Background(), chkKey(t, testkit.RSAKey(2048)), []Resolver{{Name: addr, Resolver: c}})
	chkWant(t, r, Temp, "no DNS server (connection refused)", []string{"nothing answers DNS at " + addr},
		[]string{"start it, or fix [dns] nameservers"})
	for _, p := range r.Problems {
		if strings.Contains(strings.Join(p.Hints, " "), "DNSSEC") {
			t.Errorf("a refused connection blamed on the zone: %v", p.Hints)
		}
	}
}

// A revoked record is what a retired key should have: when no rule names
// the key, it is a warning that says to remove the table, not to "take it
// out of the [[signing]] rules".
func TestCheckKeyRevokedUnused(t *testing.T) {
	s := dnstest.New(t)
	s.SetTXT(chkName, "v=DKIM1; k=rsa; p=")
	k := chkKey(t, testkit.RSAKey(2048))
	r := Check(context.Background(), k, []Resolver{chkResolver(t, s, 5*time.Second)}, Unused())
	chkWant(t, r, Warn, "key revoked (empty p=), and no rule signs with it", []string{"no [[signing]] rule names keys.example: it is retired"},
		[]string{"remove the [keys.example] table and delete /keys/sel.pem"})
	for _, p := range r.Problems {
		if strings.Contains(strings.Join(p.Hints, " "), "take it out of the [[signing]] rules") {
			t.Errorf("an unused key is told to leave the rules: %v", p.Hints)
		}
	}
}

func TestCheckKeyTimeout(t *testing.T) {
	s := dnstest.New(t)
	s.SetTimeout(chkName)
	r := Check(context.Background(), chkKey(t, testkit.RSAKey(2048)), []Resolver{chkResolver(t, s, 200*time.Millisecond)})
	chkWant(t, r, Temp, "no answer (timeout", []string{s.Addr + ": no answer (timeout"}, []string{"[dns] timeout"})
}

func TestCheckKeyDNSSEC(t *testing.T) {
	rec := testkit.KeyRecord(testkit.RSAKey(2048), "")
	for _, tt := range []struct {
		name  string
		ad    bool
		trust bool
		want  string
	}{
		{name: "AD from a local resolver", ad: true, trust: true, want: "validated"},
		{name: "no AD", trust: true, want: "not validated"},
		{name: "AD from a remote resolver", ad: true, want: "not known (AD set by"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := dnstest.New(t)
			s.SetTXT(chkName, rec)
			s.SetAD(tt.ad)
			res := chkResolver(t, s, 5*time.Second)
			res.TrustAD = tt.trust
			r := Check(context.Background(), chkKey(t, testkit.RSAKey(2048)), []Resolver{res})
			if !strings.HasPrefix(r.DNSSEC, tt.want) || r.Status != OK {
				t.Errorf("DNSSEC %q status %v, want %q", r.DNSSEC, r.Status, tt.want)
			}
		})
	}
}

// Resolvers that see different things: the report says how many see the
// record and which resolver sees what.
func TestCheckKeyPropagation(t *testing.T) {
	key := testkit.RSAKey(2048)
	rec := testkit.KeyRecord(key, "")
	newer, older, missing := dnstest.New(t), dnstest.New(t), dnstest.New(t)
	newer.SetTXT(chkName, rec)
	older.SetTXT(chkName, rec)
	older.SetTTL(chkName, 3600)
	missing.SetRcode(chkName, mdns.RcodeNameError)

	t.Run("one resolver still has no record", func(t *testing.T) {
		r := Check(context.Background(), chkKey(t, key), []Resolver{
			chkResolver(t, newer, 5*time.Second), chkResolver(t, older, 5*time.Second), chkResolver(t, missing, 5*time.Second)})
		chkWant(t, r, Fail, "2 of 3 resolvers see the record",
			[]string{"answers differ between resolvers: " + newer.Addr + ", " + older.Addr + ": published and matching; " + missing.Addr + ": no record (NXDOMAIN)"},
			[]string{"check again after that", "keys check -authoritative example"})
		for _, p := range r.Problems {
			if strings.Contains(strings.Join(p.Hints, " "), "publish this TXT record") {
				t.Errorf("a lagging resolver's hint to publish the record, which is published: %+v", p)
			}
		}
	})

	t.Run("one resolver still has the old key", func(t *testing.T) {
		stale := dnstest.New(t)
		stale.SetTXT(chkName, testkit.KeyRecord(testkit.RSAKey(2064), ""))
		r := Check(context.Background(), chkKey(t, key), []Resolver{
			chkResolver(t, newer, 5*time.Second), chkResolver(t, stale, 5*time.Second)})
		chkWant(t, r, Fail, "1 of 2 resolvers see the record",
			[]string{newer.Addr + ": published and matching; " + stale.Addr + ": published, but a different key"},
			[]string{"TTL (5m0s)"})
	})

	t.Run("a timeout is not a difference", func(t *testing.T) {
		silent := dnstest.New(t)
		silent.SetTimeout(chkName)
		r := Check(context.Background(), chkKey(t, key), []Resolver{
			chkResolver(t, newer, 5*time.Second), chkResolver(t, silent, 200*time.Millisecond)})
		chkWant(t, r, Temp, "published and matching, TTL 5m0s (1 of 2 resolvers answered)",
			[]string{silent.Addr + ": no answer"}, nil)
		for _, p := range r.Problems {
			if strings.Contains(p.Text, "differ") {
				t.Errorf("propagation problem for a timeout: %q", p.Text)
			}
		}
	})

	t.Run("all agree", func(t *testing.T) {
		r := Check(context.Background(), chkKey(t, key), []Resolver{
			chkResolver(t, newer, 5*time.Second), chkResolver(t, newer, 5*time.Second)})
		chkWant(t, r, OK, "(2 resolvers agree)", nil, nil)
	})
}

// The key file could not be read: the record is still looked up.
func TestCheckKeyWithoutPrivateKey(t *testing.T) {
	s := dnstest.New(t)
	s.SetTXT(chkName, testkit.KeyRecord(testkit.RSAKey(2048), ""))
	k := &keystore.Key{Name: "example", Domain: "example.com", Selector: "sel", File: "/keys/sel.pem"}
	r := Check(context.Background(), k, []Resolver{chkResolver(t, s, 5*time.Second)})
	chkWant(t, r, OK, "published", nil, nil)
	if r.Record != "" {
		t.Errorf("record to publish %q without a key", r.Record)
	}

	// The published key's size is then all there is to judge.
	s.SetTXT(chkName, testkit.KeyRecord(testkit.RSAKey(1024), ""))
	r = Check(context.Background(), k, []Resolver{chkResolver(t, s, 5*time.Second)})
	chkWant(t, r, Warn, "published", []string{"1024-bit RSA key"}, []string{"keys rotate"})
	block, _ := pem.Decode(testkit.File("rsa512.key"))
	short, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	s.SetTXT(chkName, testkit.KeyRecord(short, ""))
	r = Check(context.Background(), k, []Resolver{chkResolver(t, s, 5*time.Second)})
	chkWant(t, r, Fail, "published", []string{"512-bit RSA key: verifiers refuse RSA keys under 1024 bits"}, nil)
}

// -authoritative: one dnstest server is the recursive resolver and the
// name servers of example.com and of its delegated child sub.example.com.
func TestCheckKeyAuthoritative(t *testing.T) {
	key := testkit.RSAKey(2048)
	rec := testkit.KeyRecord(key, "")
	s := dnstest.New(t)
	s.SetZone("example.com", "ns1.example.com", "ns2.example.com")
	s.SetZone("sub.example.com", "ns.sub.example.com")
	s.SetAddrs("ns1.example.com", "127.0.0.1")
	s.SetAddrs("ns2.example.com", "127.0.0.1")
	s.SetAddrs("ns.sub.example.com", "127.0.0.1")
	s.SetTXT("sel._domainkey.sub.example.com", rec)
	s.SetAD(true)
	port, _ := strconv.Atoi(s.Addr[strings.LastIndexByte(s.Addr, ':')+1:])
	res, err := dns.NewClient([]string{s.Addr}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	opts := port

	k := chkKey(t, key)
	k.Domain = "sub.example.com"
	r := CheckNameServers(context.Background(), k, res, 5*time.Second, opts)
	chkWant(t, r, OK, "published and matching", nil, nil)
	if r.Zone != "sub.example.com" || len(r.Answers) != 1 || !strings.HasPrefix(r.Answers[0].Resolver, "ns.sub.example.com (127.0.0.1 port ") {
		t.Errorf("zone %q, answers %+v", r.Zone, r.Answers)
	}
	if r.DNSSEC != "" {
		t.Errorf("DNSSEC %q from authoritative servers", r.DNSSEC)
	}

	k.Domain = "example.com" // the parent zone has no record
	r = CheckNameServers(context.Background(), k, res, 5*time.Second, opts)
	chkWant(t, r, Fail, "no record (NXDOMAIN) (2 name servers agree)", nil, []string{"\n" + rec})
	if r.Zone != "example.com" || len(r.Answers) != 2 {
		t.Errorf("zone %q, answers %+v", r.Zone, r.Answers)
	}

	s.SetAddrs("ns2.example.com")
	r = CheckNameServers(context.Background(), k, res, 5*time.Second, opts)
	chkWant(t, r, Fail, "NXDOMAIN", []string{"a name server of example.com could not be asked: ns2.example.com: no address"}, nil)

	k.Domain = "nowhere.test"
	r = CheckNameServers(context.Background(), k, res, 5*time.Second, opts)
	if r.Status == OK || len(r.Problems) != 1 || !strings.Contains(r.Problems[0].Text, "finding the zone's name servers") {
		t.Errorf("unknown domain: %+v", r)
	}
}

// Two authoritative servers of one zone that serve different records: a
// secondary that has not loaded the current zone.
func TestCheckKeyAuthoritativeDiffer(t *testing.T) {
	key := testkit.RSAKey(2048)
	primary, secondary := dnstest.New(t), dnstest.New(t)
	for _, s := range []*dnstest.Server{primary, secondary} {
		s.SetZone("example.com", "ns1.example.com", "ns2.example.com")
	}
	primary.SetTXT(chkName, testkit.KeyRecord(key, ""))
	var rs []Resolver
	for i, s := range []*dnstest.Server{primary, secondary} {
		ar, err := dns.NewZoneResolver(s.Addr, 5*time.Second, nil)
		if err != nil {
			t.Fatal(err)
		}
		name := dns.NameServer{Host: "ns" + strconv.Itoa(i+1) + ".example.com", Addr: s.Addr}.String()
		rs = append(rs, Resolver{Name: name, Resolver: ar, Authoritative: true})
	}
	r := Check(context.Background(), chkKey(t, key), rs)
	chkWant(t, r, Fail, "1 of 2 name servers see the record",
		[]string{"answers differ between name servers: ns1.example.com (127.0.0.1 port", "ns2.example.com (127.0.0.1 port"},
		[]string{"has not loaded the current zone", "dig @SERVER example.com SOA"})
}
