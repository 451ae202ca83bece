package dnsupdate

import (
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/bindtest"
	"github.com/miekg/dns"
)

// bindPublisher is an rfc2136 Publisher for the servers' primary, with
// server and zone as given ("" to find them from the SOA through the
// primary, which then plays the resolver).
func bindPublisher(t *testing.T, s *bindtest.Servers, server, zone, keyFile string) *rfc2136 {
	t.Helper()
	p, err := newPublisher(&config.Publisher{Name: "bind", Method: "rfc2136", Server: server, Zone: zone,
		TSIGKey: keyFile, TTL: 2 * time.Minute, Timeout: 3 * time.Second}, []string{s.Primary()}, 2*time.Second, s.Port())
	if err != nil {
		t.Fatal(err)
	}
	return p.(*rfc2136)
}

// record4096 is as long as a 4096-bit RSA key's record.
var record4096 = "v=DKIM1; k=rsa; p=" + strings.Repeat("MIICIjANBgkqhkiG9w0BAQEFAAOCAg8AMIICCgKCAgEA", 17)

// ttlAt is the TTL of the TXT RRs at name that server serves.
func ttlAt(t *testing.T, server, name string) uint32 {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeTXT)
	c := &dns.Client{Net: "tcp", Timeout: 2 * time.Second}
	resp, _, err := c.Exchange(m, server)
	if err != nil || len(resp.Answer) == 0 {
		t.Fatalf("TXT %s at %s: %v %v", name, server, err, resp)
	}
	return resp.Answer[0].Header().Ttl
}

func wantTXT(t *testing.T, s *bindtest.Servers, name string, want ...string) {
	t.Helper()
	if got := s.TXT(t, s.Primary(), name); !slices.Equal(got, want) {
		t.Fatalf("the primary serves %q at %s, want %q", got, name, want)
	}
}

// A key record's life against a real BIND: published, revoked, deleted,
// each applied once; a second identical change is recognised as done.
func TestBINDCycle(t *testing.T) {
	s := bindtest.New(t, "example.test")
	ctx := context.Background()
	name := "s1._domainkey.example.test"
	revoked := "v=DKIM1; k=rsa; p="
	for _, tc := range []struct {
		what           string
		server, zone   string
		value, revoked string
	}{
		// a 4096-bit key's record: several strings, over 512 bytes (TCP)
		{what: "configured", server: s.Primary(), zone: "example.test", value: record4096},
		{what: "from the SOA", value: "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="},
	} {
		t.Run(tc.what, func(t *testing.T) {
			u := bindPublisher(t, s, tc.server, tc.zone, s.KeyFile())
			steps := []struct {
				c       Change
				want    []string
				outWant string
			}{
				{c: Change{Action: Add, Name: name, Value: tc.value}, want: []string{tc.value}, outWant: "NOERROR"},
				{c: Change{Action: Add, Name: name, Value: tc.value}, want: []string{tc.value}, outWant: "already done"},
				{c: Change{Action: Revoke, Name: name, Value: revoked, Expect: tc.value}, want: []string{revoked}, outWant: "NOERROR"},
				{c: Change{Action: Revoke, Name: name, Value: revoked, Expect: tc.value}, want: []string{revoked}, outWant: "already done"},
				{c: Change{Action: Delete, Name: name, Expect: revoked}, outWant: "NOERROR"},
				{c: Change{Action: Delete, Name: name, Expect: revoked}, outWant: "already done"},
			}
			for _, st := range steps {
				out, err := u.Apply(ctx, st.c)
				if err != nil {
					t.Fatalf("%s: %v\n%s", st.c.Action, err, s.Log("primary"))
				}
				if !strings.Contains(out, st.outWant) || !strings.Contains(out, s.Primary()) {
					t.Errorf("%s: output %q, want %q and the server", st.c.Action, out, st.outWant)
				}
				wantTXT(t, s, name, st.want...)
				if len(st.want) > 0 {
					if ttl := ttlAt(t, s.Primary(), name); ttl != 120 {
						t.Errorf("%s: TTL %d, want the table's 120", st.c.Action, ttl)
					}
				}
			}
		})
	}
	// Describe with nothing configured finds what Apply uses.
	u := bindPublisher(t, s, "", "", s.KeyFile())
	host, port, _ := net.SplitHostPort(s.Primary())
	d := u.Describe(Change{Action: Add, Name: name, Value: "v=DKIM1; p=A"})
	for _, w := range []string{"; server: ns1.example.test (the SOA's MNAME) port " + port, "server " + host + " " + port + "\n", "zone example.test.\n"} {
		if !strings.Contains(d, w) {
			t.Errorf("Describe =\n%s\nlacks %q", d, w)
		}
	}
}

// A record changed by hand is never overwritten: the prerequisite fails,
// Apply says what is there, and the record stays.
func TestBINDChangedByHand(t *testing.T) {
	s := bindtest.New(t, "example.test")
	ctx := context.Background()
	u := bindPublisher(t, s, s.Primary(), "example.test", s.KeyFile())
	name := "s2._domainkey.example.test"
	ours, theirs := "v=DKIM1; k=ed25519; p=OURS", "v=DKIM1; k=ed25519; p=THEIRS"
	tests := []struct {
		what    string
		present []string // what the name has, set by hand
		c       Change
	}{
		{what: "add over another record", present: []string{theirs}, c: Change{Action: Add, Name: name, Value: ours}},
		{what: "revoke a record replaced by hand", present: []string{theirs}, c: Change{Action: Revoke, Name: name, Value: "v=DKIM1; p=", Expect: ours}},
		{what: "revoke a record with a second one beside it", present: []string{ours, theirs}, c: Change{Action: Revoke, Name: name, Value: "v=DKIM1; p=", Expect: ours}},
		{what: "revoke a record deleted by hand", present: nil, c: Change{Action: Revoke, Name: name, Value: "v=DKIM1; p=", Expect: ours}},
		{what: "delete a record replaced by hand", present: []string{theirs}, c: Change{Action: Delete, Name: name, Expect: "v=DKIM1; p="}},
	}
	for _, tt := range tests {
		t.Run(tt.what, func(t *testing.T) {
			s.SetTXT(t, name, tt.present...)
			before := s.TXT(t, s.Primary(), name)
			out, err := u.Apply(ctx, tt.c)
			if !errors.Is(err, ErrChanged) {
				t.Fatalf("Apply = %q, %v; want ErrChanged", out, err)
			}
			t.Logf("error: %v", err)
			for _, w := range []string{"[publish.bind]", name, "zone example.test", s.Primary(), "TSIG key dkim-update", "nothing was changed"} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if len(tt.present) > 0 && !strings.Contains(err.Error(), strconv.Quote(tt.present[len(tt.present)-1])) {
				t.Errorf("error %q does not show what is there", err)
			}
			after := s.TXT(t, s.Primary(), name)
			slices.Sort(before)
			slices.Sort(after)
			if !slices.Equal(before, after) {
				t.Errorf("the record went from %q to %q", before, after)
			}
		})
	}
	// The expected record, split into other strings than ours: the same
	// record to a verifier (RFC 6376 §3.6.2.2), so the change goes on.
	s.SetTXTStrings(t, name, "v=DKIM1; k=ed25519; ", "p=OURS")
	if _, err := u.Apply(ctx, Change{Action: Revoke, Name: name, Value: "v=DKIM1; p=", Expect: ours}); err != nil {
		t.Fatalf("revoke of a record split differently: %v", err)
	}
	wantTXT(t, s, name, "v=DKIM1; p=")

	// Unconditional changes (no Expect) do overwrite: they are what an
	// operator asks for with -force.
	s.SetTXT(t, name, theirs)
	if _, err := u.Apply(ctx, Change{Action: Revoke, Name: name, Value: "v=DKIM1; p="}); err != nil {
		t.Fatal(err)
	}
	wantTXT(t, s, name, "v=DKIM1; p=")
}

// What goes wrong says what to fix, and changes nothing.
func TestBINDErrors(t *testing.T) {
	s := bindtest.New(t, "example.test")
	ctx := context.Background()
	name := "s3._domainkey.example.test"
	s.SetTXT(t, name, "v=DKIM1; p=KEEP")
	tests := []struct {
		what    string
		u       func() *rfc2136
		wantErr []string
	}{
		{what: "wrong secret", u: func() *rfc2136 { return bindPublisher(t, s, s.Primary(), "example.test", s.WrongKeyFile()) },
			wantErr: []string{"NOTAUTH (TSIG error BADSIG)", "the server refused TSIG key dkim-update", "check its name, algorithm (hmac-sha256) and secret in " + s.WrongKeyFile(), "zone example.test"}},
		{what: "clock off", u: func() *rfc2136 {
			u := bindPublisher(t, s, s.Primary(), "example.test", s.KeyFile())
			u.now = func() time.Time { return time.Now().Add(-time.Hour) }
			return u
		}, wantErr: []string{"TSIG error BADTIME", "the clocks of this host and the server differ"}},
		{what: "unsigned", u: func() *rfc2136 { return bindPublisher(t, s, s.Primary(), "example.test", "") },
			wantErr: []string{"REFUSED: the update was not signed", "set tsig_key in [publish.bind]", "no TSIG key"}},
		{what: "not the zone's server", u: func() *rfc2136 { return bindPublisher(t, s, s.Primary(), "s3._domainkey.example.test", s.KeyFile()) },
			wantErr: []string{"NOTAUTH", "not authoritative for zone s3._domainkey.example.test"}},
		{what: "the secondary", u: func() *rfc2136 { return bindPublisher(t, s, s.Secondary(), "example.test", s.KeyFile()) },
			wantErr: []string{"REFUSED", "point server at the primary", s.Secondary()}},
		{what: "name outside the zone", u: func() *rfc2136 { return bindPublisher(t, s, s.Primary(), "other.test", s.KeyFile()) },
			wantErr: []string{"is not in zone other.test: set zone in [publish.bind]"}},
	}
	for _, tt := range tests {
		t.Run(tt.what, func(t *testing.T) {
			out, err := tt.u().Apply(ctx, Change{Action: Revoke, Name: name, Value: "v=DKIM1; p="})
			if err == nil {
				t.Fatalf("Apply = %q, want an error", out)
			}
			t.Logf("error: %v", err)
			if errors.Is(err, ErrChanged) {
				t.Errorf("error %v is ErrChanged", err)
			}
			for _, w := range append(tt.wantErr, "[publish.bind] revoke "+name) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			wantTXT(t, s, name, "v=DKIM1; p=KEEP")
		})
	}
}

// A primary that is down: the error names it and says to check it; once
// it is back, the same change goes through.
func TestBINDDown(t *testing.T) {
	s := bindtest.New(t, "example.test")
	ctx := context.Background()
	name := "s4._domainkey.example.test"
	for _, tc := range []struct{ what, server, zone string }{
		{what: "configured", server: s.Primary(), zone: "example.test"},
		{what: "from the SOA"}, // the resolver is the primary: it is down too
	} {
		t.Run(tc.what, func(t *testing.T) {
			u := bindPublisher(t, s, tc.server, tc.zone, s.KeyFile())
			c := Change{Action: Add, Name: name, Value: "v=DKIM1; p=NEW"}
			s.Stop(t)
			start := time.Now()
			out, err := u.Apply(ctx, c)
			if err == nil {
				t.Fatalf("Apply with the primary down = %q", out)
			}
			t.Logf("error: %v", err)
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("Apply took %s with a timeout of 3s", took)
			}
			want := []string{"[publish.bind] add " + name, s.Primary()}
			if tc.server != "" {
				want = append(want, "is the server running")
			} else {
				want = append(want, "finding the zone of", "SOA query", "set zone and server in [publish.bind]")
			}
			for _, w := range want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			s.Start(t)
			if _, err := u.Apply(ctx, c); err != nil {
				t.Fatalf("after the restart: %v", err)
			}
			wantTXT(t, s, name, "v=DKIM1; p=NEW")
			s.SetTXT(t, name)
		})
	}
}
