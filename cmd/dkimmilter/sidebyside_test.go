package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"
	"github.com/miekg/dns"

	"github.com/dkimmilter/dkimmilter/internal/dkim"
	"github.com/dkimmilter/dkimmilter/internal/dnstest"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
)

// sideBySideConf is a long-lived OpenDKIM setup of the kind an admin
// switches from: a KeyTable in a file, a refile SigningTable with
// wildcards and a "%" key shared by two domains, an InternalHosts file
// with a network, a host name and a .domain suffix, a PeerList, the
// ORIGINATING listener of the Postfix submission recipe, and actions that
// reject bad signatures but accept unpublished keys. DIR and DNSIP are
// filled in by the test.
const sideBySideConf = `# /etc/opendkim.conf
Syslog                  no
UMask                   007
UserID                  opendkim
Mode                    sv
Socket                  inet:PORT@127.0.0.1
PidFile                 DIR/opendkim.pid
KeyTable                file:DIR/key.table
SigningTable            refile:DIR/signing.table
InternalHosts           DIR/trusted.hosts
ExternalIgnoreList      refile:DIR/trusted.hosts
PeerList                csl:192.0.2.99
MTA                     ORIGINATING
Canonicalization        relaxed/simple
OversignHeaders         From
On-BadSignature         reject
On-KeyNotFound          accept
On-DNSError             tempfail
Nameservers             DNSIP
AuthservID              mx.example.com
RequireSafeKeys         false
`

const sideBySideKeyTable = `# name                        domain:selector:key file
mail._domainkey.example.com   example.com:mail:DIR/keys/example.com/mail.private
sub                           example.com:sub:DIR/keys/example.com/sub.private
news                          example.org:news:DIR/keys/example.org/news.private
shared                        %:shared:DIR/keys/shared.private
`

const sideBySideSigningTable = `*@example.com     mail._domainkey.example.com
*@*.example.com   sub
x-*@example.org   news
*@a.example       shared
*@b.example       shared
`

const sideBySideHosts = `127.0.0.1
::1
10.20.0.0/16
mail.internal.example
.office.example
`

// sideBySideOutcome is what a milter did with a message, in the terms of
// OpenDKIM's On-* actions, and the d=/s= pairs of the signatures it added.
type sideBySideOutcome struct {
	action string // accept, reject, tempfail, discard, quarantine
	signed string // "d=example.com s=mail", or "" when not signed
}

// sideBySideSetup is one OpenDKIM configuration and what it reads. In
// every text, DIR is the directory the files are written to, DNSIP the
// test's DNS server and PORT OpenDKIM's port.
type sideBySideSetup struct {
	conf  string            // opendkim.conf
	files map[string]string // the tables it names, by name under DIR
	// keys are the private key files under DIR, each with the DNS names
	// its public key is published at (a shared key, at several).
	keys map[string][]string
}

// sideBySideCase is one message and what both milters should do with it.
type sideBySideCase struct {
	name     string
	host, ip string
	daemon   string // {daemon_name}; "" is smtpd
	login    string // the SASL login ({auth_authen}); "" for a client that did not authenticate
	msg      string
	want     sideBySideOutcome
	// opendkimIs is OpenDKIM's own answer where the two part: where it
	// does not do what its configuration says, or where dkimmilter cannot
	// (each case says why).
	opendkimIs *sideBySideOutcome
}

// sideBySideDNSIP picks a loopback address whose port 53 is free, from
// 127.0.0.153 on: another test run (another checkout, a package test)
// may hold one, and port 53 cannot be chosen by the kernel as other ports
// are.
func sideBySideDNSIP(t *testing.T) string {
	for i := 153; i < 173; i++ {
		ip := fmt.Sprintf("127.0.0.%d", i)
		pc, err := net.ListenPacket("udp", ip+":53")
		if err != nil {
			continue
		}
		pc.Close()
		ln, err := net.Listen("tcp", ip+":53")
		if err != nil {
			continue
		}
		ln.Close()
		return ip
	}
	t.Fatal("no loopback address from 127.0.0.153 to 127.0.0.172 has port 53 free")
	return ""
}

// sideBySideDNS publishes the key records of the remote signer of inbound
// cases (testkit's 1024-bit key): r1 good, gone revoked, broken a server
// failure, testing in test mode (t=y).
func sideBySideDNS(srv *dnstest.Server) {
	srv.SetTXT("r1._domainkey.remote.example", testkit.KeyRecord(testkit.RSAKey(1024), ""))
	srv.SetTXT("testing._domainkey.remote.example", testkit.KeyRecord(testkit.RSAKey(1024), "t=y; "))
	srv.SetTXT("gone._domainkey.remote.example", "v=DKIM1; k=rsa; p=")
	srv.SetRcode("broken._domainkey.remote.example", dns.RcodeServerFailure)
}

// sideBySideInbound is a message from outside, signed by the remote
// signer with exactly tags (unsigned when tags is "").
func sideBySideInbound(t *testing.T, from, tags string) string {
	t.Helper()
	msg := "From: " + from + "\r\nTo: bob@example.com\r\nSubject: inbound\r\nDate: Mon, 07 Dec 2026 10:00:00 +0000\r\nMessage-ID: <in@remote.example>\r\n\r\nHello from outside.\r\n"
	if tags == "" {
		return msg
	}
	return testkit.Sign(t, msg, tags, testkit.RSAKey(1024))
}

// sideBySideOutbound is a message from inside, to be signed.
func sideBySideOutbound(from string) string {
	return "From: " + from + "\r\nTo: someone@remote.example\r\nSubject: outbound\r\nDate: Mon, 07 Dec 2026 10:00:00 +0000\r\nMessage-ID: <out@example.com>\r\n\r\nHello from inside.\r\n"
}

// sideBySideTags are the tags of a remote signature by selector sel.
func sideBySideTags(sel string) string {
	return "v=1; a=rsa-sha256; c=relaxed/relaxed; d=remote.example; s=" + sel + "; h=from:to:subject:date"
}

// sideBySideBreak changes a signed message's body.
func sideBySideBreak(msg string) string {
	return strings.Replace(msg, "Hello from outside.", "Hello from elsewhere.", 1)
}

// TestSideBySideWithOpenDKIM runs Debian's opendkim and dkimmilter, the
// latter configured by import-opendkim from the former's configuration,
// on the same messages, and compares what each did: every outbound message
// signed with the same d= and s=, every inbound one answered with the
// action the OpenDKIM configuration asks for. OpenDKIM is asked for its
// keys through Nameservers, which takes addresses only (port 53): the test
// needs root for a DNS server on port 53 of a loopback address, which
// every configuration shares.
func TestSideBySideWithOpenDKIM(t *testing.T) {
	od, err := exec.LookPath("opendkim")
	testkit.RequirePeer(t, "opendkim", err == nil)
	// OpenDKIM's Nameservers takes addresses only: the test's DNS server
	// must be on port 53.
	testkit.RequireRoot(t, "the side-by-side test serves DNS on port 53 of a loopback address for OpenDKIM")
	dnsIP := sideBySideDNSIP(t)
	srv := dnstest.NewAt(t, dnsIP+":53")
	sideBySideDNS(srv)

	t.Run("KeyTable", func(t *testing.T) {
		runSideBySide(t, od, srv, dnsIP, sideBySideSetup{
			conf: sideBySideConf,
			files: map[string]string{
				"key.table":     sideBySideKeyTable,
				"signing.table": sideBySideSigningTable,
				"trusted.hosts": sideBySideHosts,
			},
			keys: map[string][]string{
				"keys/example.com/mail.private": {"mail._domainkey.example.com"},
				"keys/example.com/sub.private":  {"sub._domainkey.example.com"},
				"keys/example.org/news.private": {"news._domainkey.example.org"},
				"keys/shared.private":           {"shared._domainkey.a.example", "shared._domainkey.b.example"},
			},
		}, sideBySideKeyTableCases(t))
	})
	// Single-key mode, its Domain list written each way OpenDKIM reads
	// one.
	for _, domain := range []struct{ name, value, file string }{
		{"Domain list", "a.example,b.example", ""},
		{"Domain file", "file:DIR/domains", "a.example\nb.example\n"},
		{"Domain path", "DIR/domains", "# signed here\na.example\nb.example\n"},
	} {
		t.Run("single key, "+domain.name, func(t *testing.T) {
			setup := sideBySideSetup{
				conf: strings.Replace(sideBySideSingleKeyConf, "DOMAINS", domain.value, 1),
				keys: map[string][]string{
					"keys/default.private": {"sel2026._domainkey.a.example", "sel2026._domainkey.b.example"},
				},
			}
			if domain.file != "" {
				setup.files = map[string]string{"domains": domain.file}
			}
			runSideBySide(t, od, srv, dnsIP, setup, sideBySideSingleKeyCases(t))
		})
	}
	// Verifying only, with On- actions other than accept: each reply
	// dkimmilter can give, end to end.
	inbound := func(tags string) string { return sideBySideInbound(t, "ann@remote.example", tags) }
	for _, actions := range []struct {
		name, conf                 string
		unsigned, bad, key, dnsErr string
	}{
		{"On-NoSignature reject", "On-NoSignature reject\n", "reject", "accept", "accept", "accept"},
		{"On-Default discard", "On-Default discard\n", "discard", "discard", "discard", "discard"},
		{"On-Default quarantine", "On-Default quarantine\n", "quarantine", "quarantine", "quarantine", "quarantine"},
	} {
		t.Run(actions.name, func(t *testing.T) {
			ext := func(name, msg, action string) sideBySideCase {
				c := sideBySideCase{name: name, host: "mx.remote.example", ip: "203.0.113.20", msg: msg, want: sideBySideOutcome{action, ""}}
				switch {
				case action == "quarantine":
					// Debian's OpenDKIM 2.11 does not ask the MTA for
					// the right to quarantine (it negotiates add and
					// change header only, Quarantine yes or not), so
					// its quarantine comes to an accept, without
					// Authentication-Results: dkimmilter quarantines, as
					// the configuration asks.
					c.opendkimIs = &sideBySideOutcome{"accept", ""}
				case name == "DNS failure" && action != "accept":
					// As in the KeyTable configuration: 2.11 accepts.
					c.opendkimIs = &sideBySideOutcome{"accept", ""}
				}
				return c
			}
			runSideBySide(t, od, srv, dnsIP, sideBySideSetup{conf: sideBySideVerifyConf + actions.conf}, []sideBySideCase{
				ext("good signature", inbound(sideBySideTags("r1")), "accept"),
				ext("unsigned", inbound(""), actions.unsigned),
				ext("body changed", sideBySideBreak(inbound(sideBySideTags("r1"))), actions.bad),
				ext("key not published", inbound(sideBySideTags("unknown")), actions.key),
				ext("DNS failure", inbound(sideBySideTags("broken")), actions.dnsErr),
			})
		})
	}
}

// sideBySideVerifyConf is a verifying-only OpenDKIM; the test appends its
// On- settings.
const sideBySideVerifyConf = `Syslog                  no
Mode                    v
Socket                  inet:PORT@127.0.0.1
PidFile                 DIR/opendkim.pid
Nameservers             DNSIP
AuthservID              mx.example.com
`

// sideBySideSingleKeyConf is OpenDKIM's older single-key mode: no tables,
// one key for the domains of Domain and their subdomains, and the
// internal hosts written inline. DOMAINS is filled in by the test.
const sideBySideSingleKeyConf = `Syslog                  no
Mode                    sv
Socket                  inet:PORT@127.0.0.1
PidFile                 DIR/opendkim.pid
Domain                  DOMAINS
Selector                sel2026
KeyFile                 DIR/keys/default.private
SubDomains              yes
InternalHosts           csl:127.0.0.1,10.30.0.0/16
Canonicalization        relaxed/relaxed
On-BadSignature         reject
Nameservers             DNSIP
AuthservID              mx.example.com
RequireSafeKeys         false
`

func sideBySideSingleKeyCases(t *testing.T) []sideBySideCase {
	return []sideBySideCase{
		{name: "first domain", host: "unknown", ip: "10.30.1.2", msg: sideBySideOutbound("alice@a.example"),
			want: sideBySideOutcome{"accept", "d=a.example s=sel2026"}},
		{name: "second domain", host: "localhost", ip: "127.0.0.1", msg: sideBySideOutbound("bob@b.example"),
			want: sideBySideOutcome{"accept", "d=b.example s=sel2026"}},
		{name: "subdomain", host: "unknown", ip: "10.30.1.2", msg: sideBySideOutbound("carol@sub.a.example"),
			want: sideBySideOutcome{"accept", "d=a.example s=sel2026"}},
		{name: "deeper subdomain", host: "unknown", ip: "10.30.1.2", msg: sideBySideOutbound("carol@x.sub.b.example"),
			want: sideBySideOutcome{"accept", "d=b.example s=sel2026"}},
		{name: "other domain", host: "unknown", ip: "10.30.1.2", msg: sideBySideOutbound("dave@c.example"),
			want: sideBySideOutcome{"accept", ""}},
		{name: "name ending like a domain", host: "unknown", ip: "10.30.1.2", msg: sideBySideOutbound("dave@xa.example"),
			want: sideBySideOutcome{"accept", ""}},
		{name: "outside the network", host: "unknown", ip: "10.31.0.1", msg: sideBySideOutbound("alice@a.example"),
			want: sideBySideOutcome{"accept", ""}},
		{name: "external unsigned", host: "mx.remote.example", ip: "203.0.113.20", msg: sideBySideInbound(t, "ann@remote.example", ""),
			want: sideBySideOutcome{"accept", ""}},
		{name: "external bad signature", host: "mx.remote.example", ip: "203.0.113.20",
			msg:  sideBySideBreak(sideBySideInbound(t, "ann@remote.example", sideBySideTags("r1"))),
			want: sideBySideOutcome{"reject", ""}},
	}
}

func sideBySideKeyTableCases(t *testing.T) []sideBySideCase {
	inbound := func(from, tags string) string { return sideBySideInbound(t, from, tags) }
	outbound, remoteTags := sideBySideOutbound, sideBySideTags
	sha1Tags := strings.Replace(remoteTags("r1"), "rsa-sha256", "rsa-sha1", 1)
	return []sideBySideCase{
		// Outbound: which key signs.
		{name: "apex", host: "localhost", ip: "127.0.0.1", msg: outbound("alice@example.com"),
			want: sideBySideOutcome{"accept", "d=example.com s=mail"}},
		{name: "subdomain", host: "localhost", ip: "127.0.0.1", msg: outbound("bob@lists.example.com"),
			want: sideBySideOutcome{"accept", "d=example.com s=sub"}},
		{name: "local part glob", host: "localhost", ip: "127.0.0.1", msg: outbound("x-weekly@example.org"),
			want: sideBySideOutcome{"accept", "d=example.org s=news"}},
		{name: "no rule", host: "localhost", ip: "127.0.0.1", msg: outbound("carol@example.org"),
			want: sideBySideOutcome{"accept", ""}},
		{name: "shared key a", host: "localhost", ip: "::1", msg: outbound("dave@a.example"),
			want: sideBySideOutcome{"accept", "d=a.example s=shared"}},
		{name: "shared key b", host: "localhost", ip: "127.0.0.1", msg: outbound("eve@B.Example"),
			want: sideBySideOutcome{"accept", "d=b.example s=shared"}},
		// Outbound: who is internal.
		{name: "internal network", host: "unknown", ip: "10.20.3.4", msg: outbound("alice@example.com"),
			want: sideBySideOutcome{"accept", "d=example.com s=mail"}},
		{name: "internal host name", host: "mail.internal.example", ip: "198.51.100.5", msg: outbound("alice@example.com"),
			want: sideBySideOutcome{"accept", "d=example.com s=mail"}},
		{name: "internal domain", host: "pc1.office.example", ip: "198.51.100.6", msg: outbound("alice@example.com"),
			want: sideBySideOutcome{"accept", "d=example.com s=mail"}},
		{name: "domain itself is not under it", host: "office.example", ip: "198.51.100.7", msg: outbound("alice@example.com"),
			want: sideBySideOutcome{"accept", ""}},
		{name: "submission listener", host: "unknown", ip: "203.0.113.9", daemon: "ORIGINATING", msg: outbound("alice@example.com"),
			want: sideBySideOutcome{"accept", "d=example.com s=mail"}},
		{name: "authenticated", host: "unknown", ip: "203.0.113.10", login: "alice@example.com", msg: outbound("alice@example.com"),
			want: sideBySideOutcome{"accept", "d=example.com s=mail"}},
		// OpenDKIM signs any From for any authenticated client; the
		// imported configuration keeps dkimmilter's sender binding: a
		// login may use its own domain, and a login without a domain
		// part, on a host that signs for several domains, what
		// [sign.senders] maps it to (nothing here).
		{name: "authenticated as another domain's user", host: "unknown", ip: "203.0.113.10", login: "dave@a.example", msg: outbound("alice@example.com"),
			want: sideBySideOutcome{"accept", ""}, opendkimIs: &sideBySideOutcome{"accept", "d=example.com s=mail"}},
		{name: "authenticated without a domain part", host: "unknown", ip: "203.0.113.10", login: "alice", msg: outbound("alice@example.com"),
			want: sideBySideOutcome{"accept", ""}, opendkimIs: &sideBySideOutcome{"accept", "d=example.com s=mail"}},
		{name: "outsider claiming us", host: "unknown", ip: "203.0.113.11", msg: outbound("alice@example.com"),
			want: sideBySideOutcome{"accept", ""}},
		// Inbound: which action.
		{name: "good signature", host: "mx.remote.example", ip: "203.0.113.20", msg: inbound("ann@remote.example", remoteTags("r1")),
			want: sideBySideOutcome{"accept", ""}},
		{name: "body changed", host: "mx.remote.example", ip: "203.0.113.20",
			msg:  sideBySideBreak(inbound("ann@remote.example", remoteTags("r1"))),
			want: sideBySideOutcome{"reject", ""}},
		{name: "key not published", host: "mx.remote.example", ip: "203.0.113.20", msg: inbound("ann@remote.example", remoteTags("unknown")),
			want: sideBySideOutcome{"accept", ""}},
		{name: "key revoked", host: "mx.remote.example", ip: "203.0.113.20", msg: inbound("ann@remote.example", remoteTags("gone")),
			want: sideBySideOutcome{"reject", ""}},
		// Debian's OpenDKIM 2.11 drops a DNS failure and accepts despite
		// On-DNSError tempfail (fixed upstream after 2.11): dkimmilter does
		// what the configuration says.
		{name: "DNS failure", host: "mx.remote.example", ip: "203.0.113.20", msg: inbound("ann@remote.example", remoteTags("broken")),
			want: sideBySideOutcome{"tempfail", ""}, opendkimIs: &sideBySideOutcome{"accept", ""}},
		{name: "unsigned", host: "mx.remote.example", ip: "203.0.113.20", msg: inbound("ann@remote.example", ""),
			want: sideBySideOutcome{"accept", ""}},
		// rsa-sha1: OpenDKIM passes it; dkimmilter gives dkim=policy
		// (RFC 8301), which the import accepts (actions.policy).
		{name: "rsa-sha1", host: "mx.remote.example", ip: "203.0.113.20", msg: inbound("ann@remote.example", sha1Tags),
			want: sideBySideOutcome{"accept", ""}},
		// Both verify rsa-sha1: a broken one is dkim=fail, which
		// On-BadSignature (bad_signature) rejects.
		{name: "rsa-sha1 body changed", host: "mx.remote.example", ip: "203.0.113.20", msg: sideBySideBreak(inbound("ann@remote.example", sha1Tags)),
			want: sideBySideOutcome{"reject", ""}},
		// A key record with t=y: the domain is testing, and both deliver
		// even a broken signature (OpenDKIM says dkim=fail and accepts).
		{name: "testing key", host: "mx.remote.example", ip: "203.0.113.20", msg: inbound("ann@remote.example", remoteTags("testing")),
			want: sideBySideOutcome{"accept", ""}},
		{name: "testing key body changed", host: "mx.remote.example", ip: "203.0.113.20",
			msg:  sideBySideBreak(inbound("ann@remote.example", remoteTags("testing"))),
			want: sideBySideOutcome{"accept", ""}},
		// An expired signature fails to verify (RFC 6376 §6.1.1, PERMFAIL),
		// and On-BadSignature reject asks for a reject: dkimmilter does
		// that. Debian's OpenDKIM 2.11 stamps dkim=permerror and applies no
		// On- action at all; the import's comment at bad_signature says so.
		{name: "expired", host: "mx.remote.example", ip: "203.0.113.20",
			msg:  inbound("ann@remote.example", remoteTags("r1")+"; t=1600000000; x=1600086400"),
			want: sideBySideOutcome{"reject", ""}, opendkimIs: &sideBySideOutcome{"accept", ""}},
		// A signature without d= is a syntax error, which OpenDKIM hands to
		// On-BadSignature, as dkimmilter does its permerror.
		{name: "no d=", host: "mx.remote.example", ip: "203.0.113.20",
			msg:  inbound("ann@remote.example", strings.Replace(remoteTags("r1"), " d=remote.example;", "", 1)),
			want: sideBySideOutcome{"reject", ""}},
		{name: "peer is left alone", host: "relay.example", ip: "192.0.2.99",
			msg:  sideBySideBreak(inbound("ann@remote.example", remoteTags("r1"))),
			want: sideBySideOutcome{"accept", ""}},
	}
}

// runSideBySide starts OpenDKIM on setup and dkimmilter on what
// import-opendkim makes of it, and sends every case through both.
func runSideBySide(t *testing.T, od string, srv *dnstest.Server, dnsIP string, setup sideBySideSetup, cases []sideBySideCase) {
	dir, err := os.MkdirTemp("", "dkmsbs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// Key files as opendkim-genkey lays them out (PKCS#1). testkit has one
	// key per size, so they all hold the same key, which the test does not
	// mind: it compares d= and s=, not the signatures.
	for file, names := range setup.keys {
		key := testkit.RSAKey(2048)
		testkit.WriteKey(dir, file, key, true)
		for _, name := range names {
			srv.SetTXT(name, testkit.KeyRecord(key, ""))
		}
	}

	odPort := port(freePort(t))
	fill := func(s string) string {
		return strings.NewReplacer("DIR", dir, "DNSIP", dnsIP, "PORT", odPort).Replace(s)
	}
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(fill(text)), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	conf := write("opendkim.conf", setup.conf)
	for name, text := range setup.files {
		write(name, text)
	}
	// Run as root here: UserID would need the opendkim user's access to a
	// temporary directory; the import reports UserID as the unit's job.
	runConf := filepath.Join(dir, "opendkim-run.conf")
	text, _ := os.ReadFile(conf)
	os.WriteFile(runConf, []byte(strings.Replace(string(text), "UserID                  opendkim\n", "", 1)), 0o644)

	// The keys belong to the service user, as the README's switch has it
	// (OpenDKIM runs as root here and reads them anyway): the import
	// checks the result as that user, the user dkimmilter where it exists.
	if u, err := user.Lookup("dkimmilter"); err == nil {
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
			if err == nil {
				err = os.Lchown(p, uid, gid)
			}
			return err
		})
	}

	// dkimmilter's configuration comes from the import, unchanged but for
	// where it listens.
	imported := filepath.Join(dir, "dkimmilter.toml")
	code, out, errOut := runCmd("import-opendkim", "-o", imported, conf)
	if code != exitOK {
		t.Fatalf("import-opendkim: exit %d\n%s\n%s", code, out, errOut)
	}
	sock := filepath.Join(dir, "dkimmilter.sock")
	startProc(t, "serve", "-config", imported, "-listen", "unix:"+sock)

	cmd := exec.Command(od, "-f", "-x", runConf)
	odLog := &syncWriter{}
	cmd.Stdout, cmd.Stderr = odLog, odLog
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("opendkim:\n%s", odLog.String())
			toml, _ := os.ReadFile(imported)
			t.Logf("imported:\n%s", toml)
		}
	})
	odAddr := "127.0.0.1:" + odPort
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", odAddr); err == nil {
			c.Close()
			break
		}
		if i > 250 {
			t.Fatalf("opendkim does not listen on %s:\n%s", odAddr, odLog.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	milters := []struct{ name, network, addr string }{
		{"opendkim", "tcp", odAddr},
		{"dkimmilter", "unix", sock},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, m := range milters {
				got, err := sideBySideSend(m.network, m.addr, tc.host, tc.ip, tc.daemon, tc.login, fmt.Sprintf("4XSBS%04d", i), tc.msg)
				if err != nil {
					t.Fatalf("%s: %v", m.name, err)
				}
				want := tc.want
				if m.name == "opendkim" && tc.opendkimIs != nil {
					want = *tc.opendkimIs
				}
				if got != want {
					t.Errorf("%s: %+v, want %+v", m.name, got, want)
				}
			}
		})
	}
}

// sideBySideSend sends one message through a milter on a connection of its
// own, as Postfix's smtpd does for one SMTP session.
func sideBySideSend(network, addr, host, ip, daemon, login string, qid, msg string) (sideBySideOutcome, error) {
	c, err := testkit.Dial(network, addr)
	if err != nil {
		return sideBySideOutcome{}, err
	}
	defer c.Close()
	if daemon != "" {
		c.DaemonName = daemon
	}
	if err := c.Connect(host, ip); errors.Is(err, testkit.ErrAccepted) {
		return sideBySideOutcome{action: "accept"}, nil
	} else if err != nil {
		return sideBySideOutcome{}, err
	}
	env := testkit.Envelope{From: "sender@example.net", Rcpts: []string{"rcpt@example.com"}, QueueID: qid}
	if login != "" {
		env.AuthType, env.AuthAuthen = "PLAIN", login
	}
	res, err := c.Send(env, []byte(msg), 0)
	if err != nil {
		return sideBySideOutcome{}, err
	}
	var o sideBySideOutcome
	switch a := res.Action; {
	case a.Code == gomilter.ActAccept || a.Code == gomilter.ActContinue:
		o.action = "accept"
	case a.Code == gomilter.ActDiscard:
		o.action = "discard"
	case a.Code == gomilter.ActReject:
		o.action = "reject"
	case a.Code == gomilter.ActTempFail:
		o.action = "tempfail"
	case a.Code == gomilter.ActReplyCode && a.SMTPCode >= 500:
		o.action = "reject"
	case a.Code == gomilter.ActReplyCode:
		o.action = "tempfail"
	default:
		return o, fmt.Errorf("answer %c", a.Code)
	}
	var sigs []string
	for _, m := range res.Mods {
		switch {
		case m.Code == gomilter.ActQuarantine && o.action == "accept":
			o.action = "quarantine"
		case (m.Code == gomilter.ActInsertHeader || m.Code == gomilter.ActAddHeader) && strings.EqualFold(m.HeaderName, "DKIM-Signature"):
			sig := dkim.ParseSignature(dkim.NewField("DKIM-Signature", m.HeaderValue))
			if sig.Err != nil {
				return o, fmt.Errorf("a DKIM-Signature that does not parse: %v: %q", sig.Err, m.HeaderValue)
			}
			sigs = append(sigs, "d="+sig.Domain+" s="+sig.Selector)
		}
	}
	o.signed = strings.Join(sigs, ", ")
	return o, nil
}
