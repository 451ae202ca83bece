package milter

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"

	gomilter "github.com/emersion/go-milter"

	"github.com/dkimmilter/dkimmilter/internal/dkim"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
	"github.com/dkimmilter/dkimmilter/verifier"
)

const outbound = `From: Alice <alice@example.com>
To: Bob <bob@example.net>
Cc: carol@example.org
Subject: Lunch on Friday?
Date: Mon, 23 Nov 2026 10:00:00 +0000
Message-ID: <lunch-1@example.com>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Received: from laptop (laptop [10.1.2.3]) by mx.example.com

Hi Bob,

how about the Thai place at noon?  
	-- Alice
`

var aliceEnv = testkit.Envelope{From: "alice@example.com", Rcpts: []string{"bob@example.net"}, QueueID: "4Xabc123"}

// Mail from an internal host (v4, v6, and Postfix's sendmail path, which
// connects as 127.0.0.1) and from authenticated clients is signed, in any
// chunking; what we sign verifies here and with go-msgauth.
func TestSignOutbound(t *testing.T) {
	e := newEnv(t, "")
	tests := []struct {
		name, ip string
		env      testkit.Envelope
		chunk    int
	}{
		{"localhost sendmail", "127.0.0.1", aliceEnv, 0},
		{"internal v4 network", "10.9.8.7", aliceEnv, 0},
		{"internal v6 network", "2001:db8:1::25", aliceEnv, 0},
		{"tiny chunks", "127.0.0.1", aliceEnv, 1},
		{"odd chunks", "127.0.0.1", aliceEnv, 3},
		{"authenticated", "198.51.100.7", testkit.Envelope{From: "alice@example.com", AuthType: "PLAIN", AuthAuthen: "alice"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := e.on(t)
			r, out := e.send(tt.ip, tt.env, outbound, tt.chunk)
			if r.Action.Code != gomilter.ActContinue {
				t.Fatalf("answer %c %d %s", r.Action.Code, r.Action.SMTPCode, r.Action.SMTPText)
			}
			ins := testkit.Mods(r, gomilter.ActInsertHeader)
			if len(ins) != 1 || ins[0].HeaderName != "DKIM-Signature" || ins[0].HeaderIndex != 0 {
				t.Fatalf("modifications %+v, want one DKIM-Signature inserted at the top", r.Mods)
			}
			if !strings.HasPrefix(ins[0].HeaderValue, " v=1;") {
				t.Errorf("value must carry its leading space (SMFIP_HDR_LEADSPC): %q", ins[0].HeaderValue)
			}
			if len(testkit.Fields(out, "Authentication-Results")) != 0 {
				t.Error("outbound mail got an Authentication-Results")
			}
			res := e.verify(out)
			if len(res) != 1 || res[0].Result != verifier.Pass {
				t.Fatalf("our signature does not verify: %+v", res[0])
			}
			if !strings.Contains(e.lastLog(), "decision=signed") || !strings.Contains(e.lastLog(), "qid=4Xabc123") && tt.env.QueueID != "" {
				t.Errorf("log line: %s", e.lastLog())
			}
		})
	}
}

// The signing-oracle test: a client that is neither internal nor
// authenticated never gets a signature, whatever its From says.
func TestNeverSignForUntrustedClient(t *testing.T) {
	e := newEnv(t, "")
	for _, ip := range []string{"198.51.100.7", "11.0.0.1", "2001:db8:2::1"} {
		r, out := e.send(ip, aliceEnv, outbound, 0)
		for _, m := range r.Mods {
			if m.HeaderName == "DKIM-Signature" {
				t.Fatalf("%s: signed for an untrusted client", ip)
			}
		}
		ar := testkit.Fields(out, "Authentication-Results")
		if len(ar) != 1 || ar[0] != "mx.example.com; dkim=none" {
			t.Errorf("%s: A-R %q, want dkim=none", ip, ar)
		}
		if !strings.Contains(e.lastLog(), "decision=verified") {
			t.Errorf("log: %s", e.lastLog())
		}
	}
}

// With sign_authenticated = false, SASL alone is not enough.
func TestSignAuthenticatedOff(t *testing.T) {
	e := newEnv(t, strings.Replace(baseConfig, "[sign]\n", "[sign]\nsign_authenticated = false\n", 1))
	r, _ := e.send("198.51.100.7", testkit.Envelope{From: "alice@example.com", AuthType: "PLAIN", AuthAuthen: "alice"}, outbound, 0)
	for _, m := range r.Mods {
		if m.HeaderName == "DKIM-Signature" {
			t.Fatal("signed although sign_authenticated = false")
		}
	}
}

// A From domain with no SigningTable rule is verified, not signed.
func TestNoSigningRule(t *testing.T) {
	e := newEnv(t, "")
	_, out := e.send("127.0.0.1", aliceEnv, strings.Replace(outbound, "alice@example.com", "alice@elsewhere.example", 1), 0)
	if len(testkit.Fields(out, "DKIM-Signature")) != 0 {
		t.Fatal("signed without a rule")
	}
	if !strings.Contains(e.lastLog(), "no signing rule for alice@elsewhere.example") {
		t.Errorf("log does not say why: %s", e.lastLog())
	}
}

// Dual signing: one signature per key of the rule, RSA and Ed25519, both
// valid; oversigning lists From, To, Cc, Subject… once more than present.
func TestDualSigningAndOversigning(t *testing.T) {
	e := newEnv(t, strings.Replace(baseConfig, `keys = ["rsa"]`, `keys = ["rsa", "ed"]`, 1))
	r, out := e.send("127.0.0.1", aliceEnv, outbound, 0)
	sigs := testkit.Fields(out, "DKIM-Signature")
	if len(sigs) != 2 {
		t.Fatalf("%d signatures, want 2: %+v", len(sigs), r.Mods)
	}
	res := e.verify(out)
	algs := map[string]bool{}
	for _, v := range res {
		if v.Result != verifier.Pass {
			t.Errorf("s=%s: %s %v", v.Selector, v.Result, v.Err)
		}
		algs[v.Algorithm] = true
		h := strings.Join(v.Signature.Headers, ":")
		for _, want := range []string{"from:from", "to:to", "cc:cc", "subject:subject", "date:date", "message-id:message-id", "mime-version:mime-version"} {
			if !strings.Contains(h, want) {
				t.Errorf("h=%s lacks %s", h, want)
			}
		}
		if strings.Contains(h, "received") {
			t.Errorf("h=%s signs Received", h)
		}
		if !strings.Contains(h, "reply-to") {
			t.Errorf("h=%s: an absent oversigned field (Reply-To) must still be listed once", h)
		}
		if v.Signature.Canonicalization != "relaxed/relaxed" || !v.Signature.HasExpire {
			t.Errorf("c=%s x=%v", v.Signature.Canonicalization, v.Signature.HasExpire)
		}
	}
	if !algs["rsa-sha256"] || !algs["ed25519-sha256"] {
		t.Errorf("algorithms %v", algs)
	}
	// Adding a second From after signing breaks both signatures.
	h, body := testkit.Split(out)
	tampered := testkit.Join(append(h, dkim.ParseField("From: Mallory <ceo@example.com>")), body)
	for _, v := range e.verify(tampered) {
		if v.Result == verifier.Pass {
			t.Error("a From added after signing still passes")
		}
	}
}

// With the default lists, what a mailing list adds does not break the
// author's signature unless it adds a field the author's message had, or
// one a reader takes for the author's: List-Unsubscribe and
// List-Unsubscribe-Post (RFC 8058) added by a list leave it valid, while a
// second Date, or a Reply-To where there was none, break it. Regression:
// List-Unsubscribe was oversigned even when absent, and every list that
// added it broke the signature (Exim's defaults had that bug for years).
func TestOversignIfPresent(t *testing.T) {
	e := newEnv(t, "")
	_, out := e.send("127.0.0.1", aliceEnv, outbound, 0)
	h, body := testkit.Split(out)
	for _, tt := range []struct {
		name  string
		added []string
		pass  bool
	}{
		{"list adds List-Unsubscribe", []string{"List-Unsubscribe: <https://lists.example.org/u?x=1>", "List-Unsubscribe-Post: List-Unsubscribe=One-Click"}, true},
		{"list adds List-Id", []string{"List-Id: <talk.lists.example.org>"}, true},
		{"a second Date", []string{"Date: Tue, 24 Nov 2026 10:00:00 +0000"}, false},
		{"a Reply-To where there was none", []string{"Reply-To: mallory@evil.example"}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h2 := append(dkim.Header(nil), h...)
			for _, f := range tt.added {
				h2 = append(h2, dkim.ParseField(f))
			}
			res := e.verify(testkit.Join(h2, body))
			if len(res) != 1 || (res[0].Result == verifier.Pass) != tt.pass {
				t.Errorf("%+v, want pass %v", res, tt.pass)
			}
		})
	}
}

// The SigningTable is read in order and the first rule that matches the
// From address wins, as OpenDKIM's: a rule for one address above the
// domain's rule gives that address its own key, and a catch-all below the
// domain's rule takes only what the rules above it left. (A rule that a
// rule above it shadows entirely is a configuration error.)
func TestSigningTableOrder(t *testing.T) {
	rule := func(from, key string) string {
		return "[[signing]]\nfrom = \"" + from + "\"\nkeys = [\"" + key + "\"]\n"
	}
	for _, tt := range []struct {
		name, cfg string
		want      map[string]string // From address: the selector it is signed with
	}{
		{"address rule above the domain's", strings.Replace(baseConfig, "[[signing]]\n", rule("alice@example.com", "ed")+"[[signing]]\n", 1),
			map[string]string{"alice@example.com": "ed", "bob@example.com": "rsa"}},
		{"catch-all below the domain's", baseConfig + rule("*", "ed"),
			map[string]string{"alice@example.com": "rsa", "bob@example.org": "ed"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.cfg)
			for from, want := range tt.want {
				env := testkit.Envelope{From: from, QueueID: "4Xorder"}
				_, out := e.send("127.0.0.1", env, strings.Replace(outbound, "alice@example.com", from, 1), 0)
				res := e.verify(out)
				if len(res) != 1 || res[0].Selector != want || res[0].Result != verifier.Pass {
					t.Errorf("%s: %d signatures, first %+v; want one by s=%s", from, len(res), res, want)
				}
			}
		})
	}
}

// "%" in a key's domain and file: one rule signs many domains, each with
// its own key; a domain without a key file is not signed (the rule does
// not apply) rather than deferred forever.
func TestPercentRule(t *testing.T) {
	cfg := baseConfig + `
[keys.multi]
domain = "%"
selector = "m1"
file = "{{dir}}/multi/%.pem"
[[signing]]
from = "*"
keys = ["multi"]
`
	e := newEnv(t, cfg)
	for _, d := range []string{"one.example", "two.example"} {
		k := testkit.RSAKey(2048)
		testkit.WriteKey(e.dir, "multi/"+d+".pem", k, false)
		e.dns.SetTXT("m1._domainkey."+d, testkit.KeyRecord(k, ""))
		msg := strings.ReplaceAll(outbound, "alice@example.com", "alice@"+strings.ToUpper(d))
		_, out := e.send("127.0.0.1", aliceEnv, msg, 0)
		res := e.verify(out)
		if len(res) != 1 || res[0].Result != verifier.Pass || res[0].Domain != d || res[0].Selector != "m1" {
			t.Fatalf("%s: %+v", d, res)
		}
	}
	_, out := e.send("127.0.0.1", aliceEnv, strings.ReplaceAll(outbound, "alice@example.com", "alice@nokey.example"), 0)
	if len(testkit.Fields(out, "DKIM-Signature")) != 0 {
		t.Error("signed a domain without a key file")
	}
	// The first rule still wins for example.com.
	_, out = e.send("127.0.0.1", aliceEnv, outbound, 0)
	if res := e.verify(out); len(res) != 1 || res[0].Selector != "rsa" {
		t.Errorf("example.com: %+v", res)
	}
}

// A key that cannot be used answers actions.sign_error (tempfail by
// default) at end of headers, so the message is not sent unsigned; the
// same connection then carries on.
func TestSignErrorTempfails(t *testing.T) {
	cfg := baseConfig + `
[keys.multi]
domain = "%"
selector = "m1"
file = "{{dir}}/multi/%.pem"
[[signing]]
from = "*@*.example.org"
keys = ["multi"]
`
	e := newEnv(t, cfg)
	path := testkit.WriteKey(e.dir, "multi/news.example.org.pem", testkit.RSAKey(2048), false)
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	c := e.dial("127.0.0.1")
	r, _ := e.sendOn(c, aliceEnv, strings.ReplaceAll(outbound, "alice@example.com", "alice@news.example.org"), 0)
	if r.Action.Code != gomilter.ActReplyCode || r.Action.SMTPCode != 451 || len(r.Mods) != 0 {
		t.Fatalf("answer %+v (%+v), want 451 and no signature", r.Action, r.Mods)
	}
	if !strings.Contains(e.logs.String(), "chmod 600") {
		t.Errorf("the log must say how to fix it: %s", e.logs.String())
	}
	// Same connection, next message: still signed (the session kept its
	// client address).
	_, out := e.sendOn(c, aliceEnv, outbound, 0)
	if res := e.verify(out); len(res) != 1 || res[0].Result != verifier.Pass {
		t.Errorf("next message on the connection: %+v", res)
	}
}

// actions.sign_error, each action, for a key file that cannot be used
// and for a header over [limits]: the message never leaves unsigned
// unless the action says so ("accept"; "quarantine" holds it unsigned),
// and the connection goes on signing.
func TestSignErrorActions(t *testing.T) {
	cfg := baseConfig + `
[limits]
max_headers = 60
[keys.multi]
domain = "%"
selector = "m1"
file = "{{dir}}/multi/%.pem"
[[signing]]
from = "*@*.example.org"
keys = ["multi"]
`
	e := newEnv(t, cfg)
	path := testkit.WriteKey(e.dir, "multi/news.example.org.pem", testkit.RSAKey(2048), false)
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	msgs := map[string]string{
		"unusable key": strings.ReplaceAll(outbound, "alice@example.com", "alice@news.example.org"),
		"header limit": padded(outbound, 70, "X-Pad-%d: x"),
	}
	tests := []struct {
		action   string
		code     gomilter.ActionCode
		smtp     string
		decision string
	}{
		{"accept", gomilter.ActContinue, "", `decision="not signed"`},
		{"tempfail", gomilter.ActReplyCode, "451 4.3.0 DKIM signing failed, try again later", `decision="sign error"`},
		{"reject", gomilter.ActReplyCode, "550 5.7.0 DKIM signing failed", `decision="sign error"`},
		{"quarantine", gomilter.ActContinue, "", `decision="sign error"`},
		{"discard", gomilter.ActDiscard, "", `decision="sign error"`},
	}
	for name, msg := range msgs {
		for _, tt := range tests {
			t.Run(name+"/"+tt.action, func(t *testing.T) {
				e := e.on(t)
				e.setActions(parseActions(t, "reject", `sign_error = "`+tt.action+`"`))
				c := e.dial("127.0.0.1")
				r, out := e.sendOn(c, aliceEnv, msg, 0)
				if r.Action.Code != tt.code || tt.smtp != "" && fmt.Sprint(r.Action.SMTPCode, " ", r.Action.SMTPText) != tt.smtp {
					t.Fatalf("answer %c %d %q, want %c %q", r.Action.Code, r.Action.SMTPCode, r.Action.SMTPText, tt.code, tt.smtp)
				}
				if n := len(testkit.Fields(out, "DKIM-Signature")); n != 0 {
					t.Errorf("%d signatures", n)
				}
				q := testkit.Mods(r, gomilter.ActQuarantine)
				if tt.action == "quarantine" && (len(q) != 1 || q[0].Reason != "DKIM: signing failed, held unsigned") || tt.action != "quarantine" && len(q) != 0 {
					t.Errorf("quarantine %+v", q)
				}
				l := e.lastLog()
				if !strings.Contains(l, tt.decision) || !strings.Contains(l, "outcome=sign_error") || strings.Contains(l, "action=") != (tt.action != "accept") {
					t.Errorf("log line: %s", l)
				}
				// Same connection, next message: signed.
				_, out = e.sendOn(c, aliceEnv, outbound, 0)
				if res := e.verify(out); len(res) != 1 || res[0].Result != verifier.Pass {
					t.Errorf("next message on the connection: %+v", res)
				}
			})
		}
	}
}

// Several messages on one connection, as Postfix sends them (ABORT in
// between): each is decided on its own.
func TestConnectionReuse(t *testing.T) {
	e := newEnv(t, "")
	c := e.dial("127.0.0.1")
	for i := 0; i < 3; i++ {
		_, out := e.sendOn(c, aliceEnv, outbound, 0)
		if res := e.verify(out); len(res) != 1 || res[0].Result != verifier.Pass {
			t.Fatalf("message %d: %+v", i, res)
		}
		_, out = e.sendOn(c, aliceEnv, strings.ReplaceAll(outbound, "alice@example.com", "x@other.example"), 0)
		if len(testkit.Fields(out, "DKIM-Signature")) != 0 {
			t.Fatalf("message %d: unexpected signature", i)
		}
	}
}

// Headers are rebuilt byte for byte (SMFIP_HDR_LEADSPC), so a simple/simple
// signature over fields with odd spacing verifies.
func TestSimpleCanonicalizationSurvives(t *testing.T) {
	e := newEnv(t, strings.Replace(baseConfig, "[sign]\n", "[sign]\ncanonicalization = \"simple/simple\"\n", 1))
	msg := strings.Replace(outbound, "Subject: Lunch on Friday?", "Subject:Lunch\n\t on  Friday?", 1)
	msg = strings.Replace(msg, "To: Bob", "To:\t Bob", 1)
	_, out := e.send("127.0.0.1", aliceEnv, msg, 0)
	res := e.verify(out)
	if len(res) != 1 || res[0].Result != verifier.Pass || res[0].Signature.Canonicalization != "simple/simple" {
		t.Fatalf("%+v", res)
	}
}

func TestClientDesc(t *testing.T) {
	tests := []struct{ host, ip, want string }{
		{"mail.example.net", "198.51.100.7", "mail.example.net[198.51.100.7]"},
		{"[198.51.100.7]", "198.51.100.7", "[198.51.100.7]"},
		{"unknown", "2001:db8::1", "[2001:db8::1]"},
		{"localhost", "", "localhost"},
	}
	for _, tt := range tests {
		s := &session{clientHost: tt.host}
		if tt.ip != "" {
			s.clientIP = netip.MustParseAddr(tt.ip)
		}
		if got := s.clientDesc(); got != tt.want {
			t.Errorf("clientDesc(%q, %q) = %q, want %q", tt.host, tt.ip, got, tt.want)
		}
	}
}
