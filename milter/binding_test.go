package milter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	gomilter "github.com/emersion/go-milter"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
	"github.com/dkimmilter/dkimmilter/keystore"
	"github.com/dkimmilter/dkimmilter/verifier"
)

// tenantsConfig is a host that signs for two tenants, a.example (and its
// subdomains) and b.example; "{{sign}}" takes [sign] lines, "{{more}}"
// tables at the end. The submission service ORIGINATING is in
// daemon_names, 10.0.0.0/8 is internal.
const tenantsConfig = `
authserv_id = "mx.example.com"
[sign]
internal_hosts = ["127.0.0.1", "10.0.0.0/8"]
daemon_names = ["ORIGINATING"]
{{sign}}
[dns]
nameservers = ["{{dns}}"]
timeout = "1s"
[keys.a]
domain = "a.example"
selector = "rsa"
file = "{{dir}}/rsa.pem"
[keys.b]
domain = "b.example"
selector = "rsa"
file = "{{dir}}/rsa.pem"
[[signing]]
from = "*@a.example"
keys = ["a"]
[[signing]]
from = "*@*.a.example"
keys = ["a"]
[[signing]]
from = "*@b.example"
keys = ["b"]
{{more}}
`

// tenantsEnv starts a milter with tenantsConfig; with one = true, only
// a.example is signed (a host with a single signing domain).
func tenantsEnv(t *testing.T, sign, more string, one bool) *env {
	t.Helper()
	cfg := strings.NewReplacer("{{sign}}", sign, "{{more}}", more).Replace(tenantsConfig)
	if one {
		cfg, _, _ = strings.Cut(cfg, "[keys.b]")
		cfg += "[[signing]]\nfrom = \"*@a.example\"\nkeys = [\"a\"]\n" + more
	}
	e := newEnv(t, cfg)
	for _, d := range []string{"a.example", "x.a.example", "b.example"} {
		e.dns.SetTXT("rsa._domainkey."+d, testkit.KeyRecord(e.rsa, ""))
	}
	return e
}

// tenantMsg is outbound with its From replaced.
func tenantMsg(from string) string {
	return strings.Replace(outbound, "From: Alice <alice@example.com>", "From: "+from, 1)
}

func login(name string) testkit.Envelope {
	if name == "" {
		return testkit.Envelope{From: "alice@a.example", Rcpts: []string{"bob@example.net"}}
	}
	return testkit.Envelope{From: "alice@a.example", Rcpts: []string{"bob@example.net"}, AuthType: "PLAIN", AuthAuthen: name}
}

// signedFor is the d= of the message's one signature, checked to
// verify; "" when it has none.
func (e *env) signedFor(out []byte) string {
	e.t.Helper()
	sigs := testkit.Fields(out, "DKIM-Signature")
	if len(sigs) == 0 {
		return ""
	}
	res := e.verify(out)
	if len(sigs) != 1 || len(res) != 1 || res[0].Result != verifier.Pass {
		e.t.Fatalf("signatures %q: %+v", sigs, res)
	}
	return res[0].Domain
}

// The sender binding through the milter, as Postfix drives it: what an
// authenticated client gets signed, by login, From and configuration.
func TestSenderBinding(t *testing.T) {
	const mapping = `[sign.senders]
"alice@a.example" = ["ceo@b.example"]
"bob" = ["b.example"]
`
	type client struct {
		ip, daemon string
	}
	user := client{remote, "smtpd"}
	tests := []struct {
		name      string
		sign      string // [sign] lines
		more      string // tables at the end
		one       bool   // a.example is the only signing domain
		from      client
		login     string
		header    string // From field
		signedFor string // d=, "" for not signed
		why       string // in the log line's why
	}{
		{"own domain", "", "", false, user, "alice@a.example", "alice@a.example", "a.example", "authenticated as alice@a.example"},
		{"another address of the own domain", "", "", false, user, "alice@a.example", "<info@A.EXAMPLE>", "a.example", "authenticated as alice@a.example"},
		{"a subdomain of the own domain", "", "", false, user, "alice@a.example", "news@x.a.example", "a.example", "authenticated as alice@a.example"},
		{"another tenant's domain", "", "", false, user, "alice@a.example", "CEO <ceo@b.example>", "",
			"login alice@a.example may have mail signed for a.example and its subdomains only, not for From ceo@b.example; [sign.senders] can allow more (sign.sender_binding; actions.sender_mismatch = accept)"},
		{"a login of a subdomain, the parent domain", "", "", false, user, "alice@x.a.example", "ceo@a.example", "", "not for From ceo@a.example"},
		{"mapped address", "", mapping, false, user, "alice@a.example", "ceo@b.example", "b.example", "authenticated as alice@a.example"},
		{"mapped address, login in another case", "", mapping, false, user, "Alice@A.example", "ceo@b.example", "b.example", "authenticated as Alice@A.example"},
		{"mapped, another address", "", mapping, false, user, "alice@a.example", "sales@b.example", "", "what [sign.senders] lists for it, not for From sales@b.example"},
		{"login without domain, one signing domain", "", "", true, user, "alice", "alice@a.example", "a.example", "authenticated as alice"},
		{"login without domain, several signing domains", "", "", false, user, "alice", "alice@a.example", "",
			`login "alice" has no domain part and nothing in [sign.senders] maps it, while the signing rules sign for several domains (a.example, b.example)`},
		{"login without domain, mapped", "", mapping, false, user, "bob", "bob@b.example", "b.example", "authenticated as bob"},
		{"login without domain, mapped, not that", "", mapping, false, user, "bob", "bob@a.example", "", `login "bob" may have mail signed only for what [sign.senders] lists for it`},
		{"internal host", "", "", false, client{"10.1.2.3", "smtpd"}, "alice@a.example", "ceo@b.example", "b.example", "internal host (sign.internal_hosts: 10.0.0.0/8)"},
		// A submission service in daemon_names is where users log in:
		// its authenticated users are bound; what comes through it
		// without a login is signed as before.
		{"service in daemon_names, authenticated, own domain", "", "", false, client{remote, "ORIGINATING"}, "alice@a.example", "alice@a.example", "a.example", "(sign.daemon_names)"},
		{"service in daemon_names, authenticated, another tenant's domain", "", "", false, client{remote, "ORIGINATING"}, "alice@a.example", "ceo@b.example", "", "not for From ceo@b.example"},
		{"service in daemon_names, not authenticated", "", "", false, client{remote, "ORIGINATING"}, "", "ceo@b.example", "b.example", "(sign.daemon_names)"},
		{"off", `sender_binding = "off"`, "", false, user, "alice@a.example", "ceo@b.example", "b.example", "authenticated as alice@a.example"},
		{"off, login without domain", `sender_binding = "off"`, "", false, user, "alice", "ceo@b.example", "b.example", "authenticated as alice"},
		{"no signing rule: not a mismatch", "", "", false, user, "alice@a.example", "x@c.example", "", "no signing rule for x@c.example"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.why == "" {
				t.Fatal("each row names what the log line's why says")
			}
			e := tenantsEnv(t, tt.sign, tt.more, tt.one)
			c, err := testkit.Dial("tcp", e.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.DaemonName = tt.from.daemon
			if err := c.Connect("client.example.net", tt.from.ip); err != nil {
				t.Fatal(err)
			}
			r, out := e.sendOn(c, login(tt.login), tenantMsg(tt.header), 0)
			if r.Action.Code != gomilter.ActContinue {
				t.Fatalf("answer %c %d %s", r.Action.Code, r.Action.SMTPCode, r.Action.SMTPText)
			}
			if got := e.signedFor(out); got != tt.signedFor {
				t.Fatalf("signed for %q, want %q", got, tt.signedFor)
			}
			line := e.lastLog()
			if tt.login != "" && !strings.Contains(line, " login="+tt.login+" ") && !strings.Contains(line, fmt.Sprintf(" login=%q ", tt.login)) {
				t.Errorf("the log line does not name the login: %s", line)
			}
			if !strings.Contains(line, fmt.Sprintf("%q", tt.why)[1:len(fmt.Sprintf("%q", tt.why))-1]) {
				t.Errorf("log line lacks %q: %s", tt.why, line)
			}
			mismatch := strings.Contains(line, "outcome=sender_mismatch")
			ars := testkit.Fields(out, "Authentication-Results")
			switch {
			case tt.signedFor != "":
				if mismatch || len(ars) != 0 || !strings.Contains(line, "decision=signed") {
					t.Errorf("signed, with %d A-R: %s", len(ars), line)
				}
			case strings.HasPrefix(tt.why, "no signing rule"):
				if mismatch {
					t.Errorf("a From no rule signs is no sender mismatch: %s", line)
				}
			default:
				// Refused: verified as an untrusted client's message.
				if !mismatch || !strings.Contains(line, "level=WARN") || !strings.Contains(line, "decision=verified") ||
					len(ars) != 1 || ars[0] != "mx.example.com; dkim=none" {
					t.Errorf("A-R %q; log: %s", ars, line)
				}
			}
		})
	}
}

// Each actions.sender_mismatch: accept and quarantine deliver the message
// unsigned, verified; tempfail and reject answer with the From domain and
// the login; discard drops it. The connection goes on, and a message the
// login may send is signed after it. Each refusal is counted once.
func TestSenderMismatchActions(t *testing.T) {
	e := tenantsEnv(t, "", "", false)
	for _, a := range config.AllActions {
		t.Run(a.String(), func(t *testing.T) {
			e := e.on(t)
			acts := e.rt.Config.Actions
			acts.SenderMismatch = a
			e.setActions(acts)
			before := e.counter(`dkimmilter_sender_mismatches_total{reason="not_allowed"}`)
			c := e.dial(remote)
			r, out := e.sendOn(c, login("alice@a.example"), tenantMsg("ceo@b.example"), 0)
			code, smtp := r.Action.Code, fmt.Sprint(r.Action.SMTPCode, " ", r.Action.SMTPText)
			q := testkit.Mods(r, gomilter.ActQuarantine)
			want, text := gomilter.ActContinue, ""
			switch a {
			case config.Tempfail:
				want, text = gomilter.ActReplyCode, "451 4.7.1 From domain not allowed for this login: b.example (login alice@a.example)"
			case config.Reject:
				want, text = gomilter.ActReplyCode, "550 5.7.1 From domain not allowed for this login: b.example (login alice@a.example)"
			case config.Discard:
				want = gomilter.ActDiscard
			}
			if code != want || text != "" && smtp != text {
				t.Fatalf("answer %c %q, want %c %q", code, smtp, want, text)
			}
			if len(testkit.Fields(out, "DKIM-Signature")) != 0 {
				t.Fatal("signed")
			}
			if a == config.Accept || a == config.Quarantine {
				if ar := testkit.Fields(out, "Authentication-Results"); len(ar) != 1 || ar[0] != "mx.example.com; dkim=none" {
					t.Errorf("A-R %q, want dkim=none", ar)
				}
			}
			wantQ := "DKIM: not signed, From domain not allowed for this login: b.example (login alice@a.example)"
			if isQ := a == config.Quarantine; isQ != (len(q) == 1) || isQ && q[0].Reason != wantQ {
				t.Errorf("quarantine %+v, want %q", q, wantQ)
			}
			line := e.lastLog()
			wantDecision := "decision=verified"
			if a == config.Tempfail || a == config.Reject || a == config.Discard {
				wantDecision = `decision="sender mismatch"`
			}
			for _, w := range []string{"login=alice@a.example", "from=ceo@b.example", "outcome=sender_mismatch", wantDecision, "level=WARN",
				"actions.sender_mismatch = " + a.String()} {
				if !strings.Contains(line, w) {
					t.Errorf("log line lacks %s: %s", w, line)
				}
			}
			if strings.Contains(line, "action=") != (a != config.Accept) {
				t.Errorf("action= in the log line: %s", line)
			}
			if got := e.counter(`dkimmilter_sender_mismatches_total{reason="not_allowed"}`) - before; got != 1 {
				t.Errorf("dkimmilter_sender_mismatches_total counted %d", got)
			}

			r, out = e.sendOn(c, login("alice@a.example"), tenantMsg("alice@a.example"), 0)
			if r.Action.Code != gomilter.ActContinue || e.signedFor(out) != "a.example" {
				t.Errorf("the next message: %c, signed for %q", r.Action.Code, e.signedFor(out))
			}
		})
	}
	if got := e.counter(`dkimmilter_sender_mismatches_total{reason="login_without_domain"}`); got != 0 {
		t.Errorf("login_without_domain = %d before any", got)
	}
	e.setActions(e.rt.Config.Actions) // the defaults: accept
	e.send(remote, login("alice"), tenantMsg("alice@a.example"), 0)
	if got := e.counter(`dkimmilter_sender_mismatches_total{reason="login_without_domain"}`); got != 1 {
		t.Errorf("login_without_domain = %d, want 1", got)
	}
	if got := e.counter(`dkimmilter_messages_total{decision="sender_mismatch"}`); got != 3 {
		t.Errorf(`messages_total{decision="sender_mismatch"} = %d, want 3 (tempfail, reject, discard)`, got)
	}
}

// With quarantine, a verification action that refuses the message wins;
// one that accepts leaves the quarantine.
func TestSenderMismatchQuarantineAndVerification(t *testing.T) {
	e := tenantsEnv(t, "", "", false)
	for _, tt := range []struct {
		noSignature config.Action
		code        gomilter.ActionCode
		outcome     string
	}{
		{config.Accept, gomilter.ActContinue, "sender_mismatch"},
		{config.Reject, gomilter.ActReplyCode, "no_signature"},
	} {
		acts := e.rt.Config.Actions
		acts.SenderMismatch, acts.NoSignature = config.Quarantine, tt.noSignature
		e.setActions(acts)
		r, _ := e.send(remote, login("alice@a.example"), tenantMsg("ceo@b.example"), 0)
		if r.Action.Code != tt.code || (tt.code == gomilter.ActContinue) != (len(testkit.Mods(r, gomilter.ActQuarantine)) == 1) {
			t.Errorf("no_signature = %s: answer %c, mods %+v", tt.noSignature, r.Action.Code, r.Mods)
		}
		if !strings.Contains(e.lastLog(), "outcome="+tt.outcome+" ") {
			t.Errorf("no_signature = %s: %s", tt.noSignature, e.lastLog())
		}
	}
}

// failingSource is a binding source that cannot answer: a database down.
type failingSource struct{}

func (failingSource) Senders(context.Context, string) ([]string, bool, error) {
	return nil, false, errors.New("connection refused")
}

func (failingSource) String() string { return "the test source" }

// A source that cannot answer is a signing failure (actions.sign_error,
// tempfail by default), never a signature and never a mismatch; a From
// the login's own domain covers needs no source.
func TestSenderSourceError(t *testing.T) {
	e := tenantsEnv(t, "", "", false)
	rt := *e.rt
	rt.Senders = keystore.NewBinding(rt.Config, failingSource{})
	e.rt = &rt
	e.srv.SetRuntime(&rt)

	r, out := e.send(remote, login("alice@a.example"), tenantMsg("alice@a.example"), 0)
	if r.Action.Code != gomilter.ActContinue || e.signedFor(out) != "a.example" {
		t.Fatalf("own domain: %c, signed for %q", r.Action.Code, e.signedFor(out))
	}
	r, _ = e.send(remote, login("alice@a.example"), tenantMsg("ceo@b.example"), 0)
	if r.Action.Code != gomilter.ActReplyCode || r.Action.SMTPCode != 451 || !strings.HasPrefix(r.Action.SMTPText, "4.3.0 DKIM signing failed") {
		t.Fatalf("answer %c %d %s, want the sign_error tempfail", r.Action.Code, r.Action.SMTPCode, r.Action.SMTPText)
	}
	line := e.lastLog()
	for _, w := range []string{`decision="sign error"`, "outcome=sign_error", "level=ERROR", `the test source could not say which From domains login \"alice@a.example\" may use: connection refused`} {
		if !strings.Contains(line, w) {
			t.Errorf("log line lacks %s: %s", w, line)
		}
	}
	if e.counter("dkimmilter_sign_errors_total") != 1 || e.counter(`dkimmilter_sender_mismatches_total{reason="not_allowed"}`) != 0 {
		t.Errorf("counted as a mismatch, or not as a sign error")
	}
}

// counter reads one series of the env's metrics.
func (e *env) counter(series string) int {
	e.t.Helper()
	var buf bytes.Buffer
	e.metrics.WritePrometheus(&buf)
	for _, l := range strings.Split(buf.String(), "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			var n int
			fmt.Sscan(v, &n)
			return n
		}
	}
	e.t.Fatalf("no series %s", series)
	return 0
}
