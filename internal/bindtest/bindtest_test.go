package bindtest

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	idns "github.com/dkimmilter/dkimmilter/internal/dns"
)

func TestServers(t *testing.T) {
	s := New(t, "example.test", "provider.test")
	if s.Zone() != "example.test" {
		t.Errorf("Zone() = %q", s.Zone())
	}
	if s.Primary() == s.Secondary() || !strings.HasSuffix(s.Primary(), ":"+itoa(s.Port())) || !strings.HasSuffix(s.Secondary(), ":"+itoa(s.Port())) {
		t.Errorf("Primary %s, Secondary %s, Port %d: want two addresses, one port", s.Primary(), s.Secondary(), s.Port())
	}
	name := "s1._domainkey.example.test"
	long := "v=DKIM1; k=rsa; p=" + strings.Repeat("A", 400)

	// A change by hand reaches the following secondary.
	s.SetTXT(t, name, long)
	if got := s.TXT(t, s.Primary(), name); !slices.Equal(got, []string{long}) {
		t.Fatalf("primary serves %q", got)
	}
	waitTXT(t, s, s.Secondary(), name, []string{long})

	// Held, the secondary keeps the old record until Sync.
	s.Hold()
	s.SetTXT(t, name, "v=DKIM1; p=")
	time.Sleep(500 * time.Millisecond)
	if got := s.TXT(t, s.Secondary(), name); !slices.Equal(got, []string{long}) {
		t.Fatalf("held secondary serves %q, want the old record", got)
	}
	if s.Serial(t, s.Secondary(), "") >= s.Serial(t, s.Primary(), "") {
		t.Error("held secondary has the primary's serial")
	}
	s.Sync(t)
	if got := s.TXT(t, s.Secondary(), name); !slices.Equal(got, []string{"v=DKIM1; p="}) {
		t.Fatalf("after Sync the secondary serves %q", got)
	}
	// Still held after Sync.
	s.SetTXT(t, name)
	time.Sleep(500 * time.Millisecond)
	if got := s.TXT(t, s.Secondary(), name); len(got) != 1 {
		t.Fatalf("held secondary serves %q after a delete", got)
	}
	s.Release(t)
	if got := s.TXT(t, s.Secondary(), name); len(got) != 0 {
		t.Fatalf("released secondary serves %q, want nothing", got)
	}

	// A record split by hand reads back whole.
	s.SetTXTStrings(t, name, "v=DKIM1; ", `p="A\B"`)
	if got := s.TXT(t, s.Primary(), name); !slices.Equal(got, []string{`v=DKIM1; p="A\B"`}) {
		t.Fatalf("primary serves %q", got)
	}

	// The second zone, and CNAMEs.
	s.SetTXT(t, "s1.example-test._domainkey.provider.test", "v=DKIM1; p=B")
	s.SetCNAME(t, "s2._domainkey.example.test", "s1.example-test._domainkey.provider.test")
	waitTXT(t, s, s.Secondary(), "s1.example-test._domainkey.provider.test", []string{"v=DKIM1; p=B"})

	// The zone's name servers are found as keys check finds them: both,
	// on the servers' port.
	res, err := idns.NewClient(s.Nameservers(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	zone, err := idns.FindZone(t.Context(), res, "s1._domainkey.example.test", s.Port())
	if err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for _, ns := range zone.Servers {
		addrs = append(addrs, ns.Host+"="+ns.Addr)
	}
	if want := []string{"ns1.example.test=" + s.Primary(), "ns2.example.test=" + s.Secondary()}; zone.Apex != "example.test" || !slices.Equal(addrs, want) {
		t.Errorf("FindZone = %s %q, want example.test %q", zone.Apex, addrs, want)
	}
	if p := s.Publisher("bind"); p.Server != s.Primary() || p.Zone != "example.test" || p.TSIGKey != s.KeyFile() || p.Method != "rfc2136" {
		t.Errorf("Publisher = %+v", p)
	}

	// The primary stops and starts with its changes.
	s.Stop(t)
	if _, err := LookupTXT(t.Context(), s.Primary(), name); err == nil {
		t.Error("a stopped primary answers")
	}
	s.Start(t)
	if got := s.TXT(t, s.Primary(), "s1.example-test._domainkey.provider.test"); !slices.Equal(got, []string{"v=DKIM1; p=B"}) {
		t.Fatalf("restarted primary serves %q: the change was lost", got)
	}
	s.StopSecondary(t)
	if _, err := LookupTXT(t.Context(), s.Secondary(), name); err == nil {
		t.Error("a stopped secondary answers")
	}
	// Restarted, the secondary serves what it had, and Release brings
	// it up to date. (Held across a restart it may catch up by itself:
	// named asks its primary at start, when it chooses.)
	s.Hold()
	s.SetTXT(t, name, "v=DKIM1; p=AFTER")
	s.StartSecondary(t)
	if got := s.TXT(t, s.Secondary(), name); len(got) == 0 {
		t.Errorf("the restarted secondary serves nothing at %s", name)
	}
	s.Release(t)
	waitTXT(t, s, s.Secondary(), name, []string{"v=DKIM1; p=AFTER"})
}

func waitTXT(t *testing.T, s *Servers, server, name string, want []string) {
	t.Helper()
	var got []string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if got = s.TXT(t, server, name); slices.Equal(got, want) {
			return
		}
	}
	t.Fatalf("%s serves %q at %s, want %q\n%s", server, got, name, want, s.Log("secondary"))
}

func itoa(n int) string { return strconv.Itoa(n) }

// recorder notes whether a test was skipped or failed.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper()                           {}
func (r *recorder) Skipf(format string, args ...any)  { r.skipped = fmt.Sprintf(format, args...) }
func (r *recorder) Fatalf(format string, args ...any) { r.failed = fmt.Sprintf(format, args...) }

func TestMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := namedPath("/nonexistent/named")
	if !errors.Is(err, ErrMissing) {
		t.Fatalf("namedPath = %v, want ErrMissing", err)
	}
	for _, ci := range []string{"", "true"} {
		t.Setenv("CI", ci)
		r := &recorder{TB: t}
		missing(r, err)
		if ci == "true" {
			if r.failed == "" || r.skipped != "" || !strings.Contains(r.failed, "apt-get install bind9") {
				t.Errorf("CI=true: failed %q, skipped %q; want a failure saying what to install", r.failed, r.skipped)
			}
		} else if r.skipped == "" || r.failed != "" || !strings.Contains(r.skipped, "BIND is not installed") {
			t.Errorf("CI unset: skipped %q, failed %q; want a skip saying why", r.skipped, r.failed)
		}
	}
}
