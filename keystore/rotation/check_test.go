package rotation

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/dnstest"
	"github.com/dkimmilter/dkimmilter/internal/dnsupdate"
	"github.com/dkimmilter/dkimmilter/keystore"
	"github.com/miekg/dns"
)

// twoServers starts the zone example.test on two name servers, on
// 127.0.0.1 and 127.0.0.2 with one port (so that the zone's NS records
// lead to both), and returns them with the port.
func twoServers(t *testing.T) (primary, secondary *dnstest.Server, port int) {
	t.Helper()
	primary = dnstest.New(t)
	port, _ = strconv.Atoi(primary.Addr[strings.LastIndexByte(primary.Addr, ':')+1:])
	secondary = dnstest.NewAt(t, "127.0.0.2:"+strconv.Itoa(port))
	for _, s := range []*dnstest.Server{primary, secondary} {
		s.SetZone("example.test", "ns1.example.test", "ns2.example.test")
		s.SetAddrs("ns1.example.test", "127.0.0.1")
		s.SetAddrs("ns2.example.test", "127.0.0.2")
	}
	return primary, secondary, port
}

// DNSChecker asks each name server of the zone, found through the
// resolvers, on the port given: a server that lags shows as "no record".
func TestDNSChecker(t *testing.T) {
	primary, secondary, port := twoServers(t)
	primary.SetTXT("s1._domainkey.example.test", "v=DKIM1; k=ed25519; p=AAAA")
	c := &DNSChecker{Nameservers: []string{primary.Addr}, Timeout: time.Second, Port: port}
	answers, err := c.Lookup(context.Background(), "s1", "example.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(answers) != 2 {
		t.Fatalf("%d answers, want one per name server: %+v", len(answers), answers)
	}
	j := judge(answers, "v=DKIM1; k=ed25519; p=AAAA", absentValue)
	if j.all || !j.any || j.odd != nil || j.known != 2 {
		t.Errorf("one server lagging: %+v %+v", j, answers)
	}
	secondary.SetTXT("s1._domainkey.example.test", "v=DKIM1; k=ed25519; p=AAAA")
	answers, _ = c.Lookup(context.Background(), "s1", "example.test")
	if j := judge(answers, "v=DKIM1; k=ed25519; p=AAAA"); !j.all {
		t.Errorf("both serve it: %+v %+v", j, answers)
	}
	// No zone to be found: an error naming the record.
	c.Nameservers = []string{"127.0.0.1:1"}
	c.Timeout = 200 * time.Millisecond
	if _, err := c.Lookup(context.Background(), "s1", "example.test"); err == nil || !strings.Contains(err.Error(), "s1._domainkey.example.test") {
		t.Errorf("no resolver: %v", err)
	}
}

// dnstestPublisher publishes into the primary only: the secondary
// follows when the test says so.
type dnstestPublisher struct {
	mu      sync.Mutex
	primary *dnstest.Server
	recs    map[string]string
}

func (p *dnstestPublisher) Apply(ctx context.Context, c dnsupdate.Change) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cur := p.recs[c.Name]; c.Action == dnsupdate.Add && cur != "" || c.Action != dnsupdate.Add && c.Expect != "" && cur != c.Expect {
		return "", dnsupdate.ErrChanged
	}
	if c.Action == dnsupdate.Delete {
		delete(p.recs, c.Name)
		p.primary.Remove(c.Name)
		return "", nil
	}
	p.recs[c.Name] = c.Value
	p.primary.SetTXT(c.Name, c.Value)
	return "", nil
}

func (p *dnstestPublisher) Describe(c dnsupdate.Change) string { return c.Name }

// The engine with the DNS checker (Options.Checker nil, AuthPort set):
// the switch waits for the second name server.
func TestEngineWithDNS(t *testing.T) {
	primary, secondary, port := twoServers(t)
	dir := t.TempDir()
	pk, err := keystore.Generate("ed25519", 0)
	if err != nil {
		t.Fatal(err)
	}
	file := dir + "/s0.pem"
	if err := keystore.WriteKeyFile(file, pk); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*dnstest.Server{primary, secondary} {
		s.SetTXT("s0._domainkey.example.test", keystore.Record(pk))
	}
	cfg := config.Default()
	cfg.DNS.Nameservers, cfg.DNS.Timeout = []string{primary.Addr}, time.Second
	cfg.Keys = map[string]*config.Key{"main": {Name: "main", Domain: "example.test", Selector: "s0", File: file, Rotate: time.Second, Publish: "p"}}
	cfg.Publishers = map[string]*config.Publisher{"p": {Name: "p"}}
	cfg.Rotation = config.Rotation{StateDir: dir + "/state", CheckInterval: time.Second, Retry: time.Second, RetryMax: time.Second}
	pub := &dnstestPublisher{primary: primary, recs: map[string]string{"s0._domainkey.example.test": keystore.Record(pk)}}
	rot := &keystore.Rotated{}
	now := time.Now().Add(2 * time.Second)
	e := New(cfg, Options{Rotated: rot, AuthPort: port, Now: func() time.Time { return now },
		Publisher: func(*config.Config, string) (dnsupdate.Publisher, error) { return pub, nil }})
	e.Step(context.Background())
	p := e.State("main").Pending
	if p == nil || p.PublishedAt.IsZero() {
		t.Fatalf("not published: %+v", e.State("main"))
	}
	now = now.Add(2 * time.Second)
	e.Step(context.Background())
	if rot.Get("main") == nil || rot.Get("main").Selector != "s0" {
		t.Fatalf("switched while ns2 does not serve the record")
	}
	secondary.SetTXT(p.Selector+"._domainkey.example.test", p.Record)
	now = now.Add(2 * time.Second)
	e.Step(context.Background())
	// Both serve it, but a resolver may keep "no such record" for the
	// zone's negative TTL (the SOA's, 300s here) after publishing.
	if rot.Get("main").Selector != "s0" {
		t.Fatalf("switched %v after publishing, within the zone's negative TTL (%ds)", now.Sub(p.PublishedAt), dnstest.DefaultTTL)
	}
	now = p.PublishedAt.Add(dnstest.DefaultTTL*time.Second + time.Second)
	e.Step(context.Background())
	if k := rot.Get("main"); k == nil || k.Selector != p.Selector {
		t.Fatalf("not switched once both serve it and the negative TTL passed: %+v", e.State("main"))
	}
}

// A name server of the zone whose address cannot be found now (its A and
// AAAA lookups fail) cannot be asked, and is not thereby in agreement: it
// may serve an older zone, and receivers' resolvers that know its address
// ask it. Its answer is unknown, so the switch waits for it.
func TestDNSCheckerServerNotFound(t *testing.T) {
	primary, secondary, port := twoServers(t)
	for _, s := range []*dnstest.Server{primary, secondary} {
		s.SetZone("example.test", "ns1.example.test", "ns2.example.test", "ns3.example.test")
		s.SetTXT("s1._domainkey.example.test", "v=DKIM1; k=ed25519; p=AAAA")
	}
	primary.SetRcode("ns3.example.test", dns.RcodeServerFailure)
	c := &DNSChecker{Nameservers: []string{primary.Addr}, Timeout: time.Second, Port: port}
	answers, err := c.Lookup(context.Background(), "s1", "example.test")
	if err != nil {
		t.Fatal(err)
	}
	if j := judge(answers, "v=DKIM1; k=ed25519; p=AAAA"); j.all {
		t.Fatalf("every server serves the record, though ns3.example.test was not asked: %+v", answers)
	}
	named := false
	for _, a := range answers {
		named = named || strings.Contains(a.Server, "ns3.example.test") && a.Err != nil
	}
	if !named {
		t.Errorf("no answer names ns3.example.test with why it was not asked: %+v", answers)
	}
}
