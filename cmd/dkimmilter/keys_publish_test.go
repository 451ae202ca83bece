package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/dnstest"
	"github.com/dkimmilter/dkimmilter/internal/dnsupdate"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
)

// fakeZone is a Publisher that keeps the zone in an in-process DNS
// server, with the prerequisites an RFC 2136 server applies: Add needs
// no TXT record at the name, Revoke and Delete the one expected. So the
// commands' "already there" and "changed by hand" paths meet real
// lookups.
type fakeZone struct {
	dns *dnstest.Server

	mu      sync.Mutex
	txt     map[string]string // name → the one TXT record there
	changes []dnsupdate.Change
	err     error  // returned by Apply instead of changing anything
	out     string // returned by Apply
}

func (f *fakeZone) Apply(ctx context.Context, c dnsupdate.Change) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.changes = append(f.changes, c)
	if f.err != nil {
		return f.out, f.err
	}
	cur, has := f.txt[c.Name]
	switch {
	case c.Action == dnsupdate.Add && has:
		return "", fmt.Errorf("server said YXRRSET: %w", dnsupdate.ErrChanged)
	case c.Action != dnsupdate.Add && c.Expect != "" && cur != c.Expect:
		return "", fmt.Errorf("server said NXRRSET: %w", dnsupdate.ErrChanged)
	}
	f.set(c.Name, c.Value)
	return f.out, nil
}

func (f *fakeZone) Describe(c dnsupdate.Change) string {
	return fmt.Sprintf("fake: %s %s %q expect %q\n", c.Action, c.Name, c.Value, c.Expect)
}

func (f *fakeZone) set(name, value string) {
	if value == "" {
		delete(f.txt, name)
		f.dns.Remove(name)
		return
	}
	f.txt[name] = value
	f.dns.SetTXT(name, value)
}

// publishFixture is the test configuration with keys that publish: the
// fixture's rsa key (used by a rule), the same file as a spare key no
// rule uses, a customer's key delegated to provider.example, and a key
// without publish. The DNS server is also the zones' only name server.
type publishFixture struct {
	*fixture
	zone *fakeZone
	port int
	rec  string // the key's record
}

func newPublishFixture(t *testing.T) *publishFixture {
	f := newFixture(t, `
[keys.spare]
domain   = "example.com"
selector = "spare"
file     = "keys/rsa.pem"
publish  = "bind"

[keys.customer]
domain    = "customer.example"
selector  = "s1"
file      = "keys/rsa.pem"
publish   = "bind"
selectors = ["s1", "s2"]
delegate  = "provider.example"

[keys.plain]
domain   = "example.org"
selector = "s1"
file     = "keys/rsa.pem"

[keys.hosted]
domain   = "%"
selector = "h1"
file     = "keys/%.pem"

[keys.db]
domain     = "%"
query      = "SELECT selector, private_key FROM dkim_keys WHERE domain = $1"
list_query = "SELECT domain, selector, private_key FROM dkim_keys"
rotate     = "30d"
publish    = "bind"

[database]
dsn = "host=/nonexistent dbname=mail"

[publish.bind]
method   = "rfc2136"
server   = "127.0.0.1:53"
`)
	// The rsa key is published by newFixture; it gets publish here.
	data, err := os.ReadFile(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	data = bytes.Replace(data, []byte("file = \"keys/rsa.pem\"\n[[signing]]"), []byte("file = \"keys/rsa.pem\"\npublish = \"bind\"\n[[signing]]"), 1)
	if err := os.WriteFile(f.cfg, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, z := range []string{"example.com", "provider.example", "customer.example"} {
		f.dns.SetZone(z, "ns1."+z)
		f.dns.SetAddrs("ns1."+z, "127.0.0.1")
	}
	port, _ := strconv.Atoi(f.dns.Addr[strings.LastIndexByte(f.dns.Addr, ':')+1:])
	pf := &publishFixture{fixture: f, port: port, zone: &fakeZone{dns: f.dns, txt: map[string]string{}},
		rec: testkit.KeyRecord(testkit.RSAKey(2048), "")}
	pf.zone.txt[rsaName] = pf.rec
	old := newPublisher
	newPublisher = func(cfg *config.Config, p *config.Publisher) (dnsupdate.Publisher, error) {
		if p.Name != "bind" || p.Server != "127.0.0.1:53" {
			t.Errorf("publisher %+v", *p)
		}
		return pf.zone, nil
	}
	t.Cleanup(func() { newPublisher = old })
	return pf
}

func (pf *publishFixture) run(action dnsupdate.Action, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := keysPublish(append([]string{"-config", pf.cfg}, args...), action, publishOptions{authPort: pf.port}, &out, &errb)
	return code, out.String(), errb.String()
}

func TestKeysPublish(t *testing.T) {
	const spare = "spare._domainkey.example.com"
	const delegated = "s1.customer-example._domainkey.provider.example"
	other := testkit.KeyRecord(testkit.RSAKey(2064), "")
	for _, tt := range []struct {
		name    string
		setup   func(pf *publishFixture)
		args    []string
		code    int
		out     []string
		errs    []string
		changes []dnsupdate.Change // sent to the publisher
		after   map[string]string  // the zone afterwards
	}{
		{name: "publish", args: []string{"spare"}, code: exitOK,
			out:     []string{"keys.spare: published " + spare + " (selector spare) through [publish.bind] (rfc2136, ", "dkimmilter keys check -config ", " -authoritative spare"},
			changes: []dnsupdate.Change{{Action: dnsupdate.Add, Name: spare, Value: "REC"}},
			after:   map[string]string{spare: "REC"}},
		{name: "a delegated key: the provider's name", args: []string{"customer"}, code: exitOK,
			out:     []string{"keys.customer: published " + delegated + " (selector s1)"},
			changes: []dnsupdate.Change{{Action: dnsupdate.Add, Name: delegated, Value: "REC"}},
			after:   map[string]string{delegated: "REC"}},
		{name: "the command's output is shown", setup: func(pf *publishFixture) { pf.zone.out = "record created\nid 42\n" },
			args: []string{"spare"}, code: exitOK, out: []string{"published", "  | record created\n  | id 42\n"}},
		{name: "-n sends nothing", args: []string{"-n", "spare", "customer"}, code: exitOK,
			out: []string{"; keys.spare: would publish " + spare + " (selector spare) through [publish.bind]", "; nothing sent\nfake: add " + spare + " \"REC\" expect \"\"\n",
				"; keys.customer: would publish " + delegated, "fake: add " + delegated}},
		{name: "already published: exit 0", setup: func(pf *publishFixture) { pf.zone.set(spare, pf.rec) }, args: []string{"spare"}, code: exitOK,
			out:     []string{"keys.spare: " + spare + " already has this key's record (ns1.example.com): nothing to change"},
			changes: []dnsupdate.Change{{Action: dnsupdate.Add, Name: spare, Value: "REC"}},
			after:   map[string]string{spare: "REC"}},
		{name: "already published in other words (opendkim-genkey's h=sha256, spaces): exit 0", setup: func(pf *publishFixture) {
			pf.zone.set(spare, strings.Replace(pf.rec, "v=DKIM1; ", "v=DKIM1; h=sha256;  ", 1))
		}, args: []string{"spare"}, code: exitOK,
			out: []string{"keys.spare: " + spare + " already has this key's record (ns1.example.com): nothing to change"}},
		{name: "another record there: not overwritten", setup: func(pf *publishFixture) { pf.zone.set(spare, other) }, args: []string{"spare"}, code: exitFailure,
			errs:  []string{"dkimmilter keys publish: keys.spare: " + spare + " already holds another TXT record (server said YXRRSET: ", "ns1.example.com serves \"" + other + "\"; nothing was changed (hint: "},
			after: map[string]string{spare: other}},
		{name: "the update fails", setup: func(pf *publishFixture) {
			pf.zone.err, pf.zone.out = errors.New("127.0.0.1:53 refused the update of "+spare+": REFUSED"), "partial output"
		}, args: []string{"spare"}, code: exitFailure,
			errs: []string{"dkimmilter keys publish: keys.spare: publish " + spare + " through [publish.bind] (rfc2136, ", "failed, nothing was changed: 127.0.0.1:53 refused the update", "  | partial output\n"}},
		{name: "a key without publish", args: []string{"plain"}, code: exitConfig,
			errs: []string{"keys.plain has no publish: add publish = \"NAME\""}},
		{name: "a '%' key", args: []string{"hosted"}, code: exitConfig,
			errs: []string{"keys.hosted: a key with '%' in its domain or file name is not published by dkimmilter: 'dkimmilter keys dns hosted' prints its records"}},
		{name: "a key with a query", args: []string{"db"}, code: exitConfig,
			errs: []string{"keys.db: a key with a query has its records published per domain by its rotation"}},
		{name: "an unknown key", args: []string{"spar"}, code: exitUsage, errs: []string{`no key "spar" in `, `(did you mean "spare"?)`}},
		{name: "no key named", args: nil, code: exitUsage, errs: []string{"name the keys, e.g. dkimmilter keys publish example-rsa"}},
		{name: "an unreadable key file", setup: func(pf *publishFixture) {
			os.Rename(filepath.Join(pf.dir, "keys/rsa.pem"), filepath.Join(pf.dir, "keys/gone.pem"))
		}, args: []string{"spare"}, code: exitConfig, errs: []string{"keys.spare: ", "rsa.pem"}},
		{name: "one fails, one works: the failure's status", setup: func(pf *publishFixture) { pf.zone.set(spare, other) },
			args: []string{"spare", "customer"}, code: exitFailure, out: []string{"keys.customer: published"}, errs: []string{"keys.spare: "}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pf := newPublishFixture(t)
			if tt.setup != nil {
				tt.setup(pf)
			}
			code, out, errs := pf.run(dnsupdate.Add, tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d\n%s%s", code, tt.code, out, errs)
			}
			wantOutput(t, out, replaceRec(tt.out, pf.rec)...)
			wantOutput(t, errs, replaceRec(tt.errs, pf.rec)...)
			if tt.changes != nil {
				want := fmt.Sprint(replaceChanges(tt.changes, pf.rec))
				if got := fmt.Sprint(pf.zone.changes); got != want {
					t.Errorf("changes sent\n%s\nwant\n%s", got, want)
				}
			}
			for name, v := range tt.after {
				if got := pf.zone.txt[name]; got != strings.ReplaceAll(v, "REC", pf.rec) {
					t.Errorf("%s holds %q afterwards, want %q", name, got, v)
				}
			}
		})
	}
}

func TestKeysRevoke(t *testing.T) {
	const spare = "spare._domainkey.example.com"
	const revoked = "v=DKIM1; k=rsa; p="
	other := testkit.KeyRecord(testkit.RSAKey(2064), "")
	for _, tt := range []struct {
		name    string
		setup   func(pf *publishFixture)
		args    []string
		code    int
		out     []string
		errs    []string
		changes []dnsupdate.Change
		after   map[string]string
	}{
		{name: "revoke", setup: func(pf *publishFixture) { pf.zone.set(spare, pf.rec) }, args: []string{"spare"}, code: exitOK,
			out:     []string{"keys.spare: revoked " + spare + " (selector spare) through [publish.bind]"},
			changes: []dnsupdate.Change{{Action: dnsupdate.Revoke, Name: spare, Value: revoked, Expect: "REC"}},
			after:   map[string]string{spare: revoked}},
		{name: "-n", setup: func(pf *publishFixture) { pf.zone.set(spare, pf.rec) }, args: []string{"spare", "-n"}, code: exitOK,
			out:     []string{"; keys.spare: would revoke " + spare, "fake: revoke " + spare + " \"" + revoked + "\" expect \"REC\""},
			changes: []dnsupdate.Change{}, after: map[string]string{spare: "REC"}},
		{name: "already revoked: exit 0", setup: func(pf *publishFixture) { pf.zone.set(spare, revoked) }, args: []string{"spare"}, code: exitOK,
			out: []string{"keys.spare: " + spare + " already has the revoked record (ns1.example.com): nothing to change"}},
		{name: "changed by hand: not replaced", setup: func(pf *publishFixture) { pf.zone.set(spare, other) }, args: []string{"spare"}, code: exitFailure,
			errs:  []string{"keys.spare: " + spare + " does not hold this key's record (server said NXRRSET: ", "serves \"" + other + "\"", "or give -force"},
			after: map[string]string{spare: other}},
		{name: "no record at all", args: []string{"spare"}, code: exitFailure,
			errs: []string{"does not hold this key's record", "ns1.example.com serves no TXT record; nothing was changed"}},
		{name: "-force replaces whatever is there", setup: func(pf *publishFixture) { pf.zone.set(spare, other) }, args: []string{"-force", "spare"}, code: exitOK,
			changes: []dnsupdate.Change{{Action: dnsupdate.Revoke, Name: spare, Value: revoked}},
			after:   map[string]string{spare: revoked}},
		{name: "a key a rule signs with is refused", args: []string{"rsa"}, code: exitUsage,
			errs: []string{"dkimmilter keys revoke: keys.rsa (selector rsa) is used by signing[1]", "or give -force"}, changes: []dnsupdate.Change{}, after: map[string]string{rsaName: "REC"}},
		{name: "... and revoked with -force", args: []string{"rsa", "-force"}, code: exitOK,
			changes: []dnsupdate.Change{{Action: dnsupdate.Revoke, Name: rsaName, Value: revoked}}, after: map[string]string{rsaName: revoked}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pf := newPublishFixture(t)
			if tt.setup != nil {
				tt.setup(pf)
			}
			code, out, errs := pf.run(dnsupdate.Revoke, tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d\n%s%s", code, tt.code, out, errs)
			}
			wantOutput(t, out, replaceRec(tt.out, pf.rec)...)
			wantOutput(t, errs, replaceRec(tt.errs, pf.rec)...)
			if tt.changes != nil {
				want := fmt.Sprint(replaceChanges(tt.changes, pf.rec))
				if got := fmt.Sprint(pf.zone.changes); got != want && !(len(tt.changes) == 0 && len(pf.zone.changes) == 0) {
					t.Errorf("changes sent\n%s\nwant\n%s", got, want)
				}
			}
			for name, v := range tt.after {
				if got := pf.zone.txt[name]; got != strings.ReplaceAll(v, "REC", pf.rec) {
					t.Errorf("%s holds %q afterwards, want %q", name, got, v)
				}
			}
		})
	}
}

// The publisher cannot be made (a TSIG key file that cannot be read, say):
// a configuration error naming the table. And -h documents both commands.
func TestKeysPublishNoPublisher(t *testing.T) {
	pf := newPublishFixture(t)
	newPublisher = func(cfg *config.Config, p *config.Publisher) (dnsupdate.Publisher, error) {
		return nil, errors.New("reading TSIG key /etc/dkimmilter/tsig.key: permission denied")
	}
	code, _, errs := pf.run(dnsupdate.Add, "spare")
	if code != exitConfig {
		t.Errorf("exit %d, want %d: %s", code, exitConfig, errs)
	}
	wantOutput(t, errs, "dkimmilter keys publish: [publish.bind] (rfc2136, "+pf.cfg+":", "): reading TSIG key /etc/dkimmilter/tsig.key: permission denied")

	for _, cmd := range []string{"publish", "revoke"} {
		code, out, errs := runCmd("keys", cmd, "-h")
		if code != exitOK || !strings.Contains(errs, "usage: dkimmilter keys "+cmd) || !strings.Contains(errs, "Exit status:") || !strings.Contains(errs, "  -n\t") {
			t.Errorf("keys %s -h: exit %d\n%s%s", cmd, code, out, errs)
		}
	}
}

func replaceRec(list []string, rec string) []string {
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = strings.ReplaceAll(s, "REC", rec)
	}
	return out
}

func replaceChanges(list []dnsupdate.Change, rec string) []dnsupdate.Change {
	out := make([]dnsupdate.Change, len(list))
	for i, c := range list {
		c.Value = strings.ReplaceAll(c.Value, "REC", rec)
		c.Expect = strings.ReplaceAll(c.Expect, "REC", rec)
		out[i] = c
	}
	return out
}
