package milter

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	gomilter "github.com/emersion/go-milter"
	"github.com/miekg/dns"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/dkim"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
	"github.com/dkimmilter/dkimmilter/verifier"
)

// actionKeys are the [actions] keys, each named as its outcome.
var actionKeys = []string{"dns_error", "security", "bad_signature", "key_not_found", "policy", "no_signature", "sign_error", "internal_error", "sender_mismatch"}

// parseActions reads an [actions] table through the real parser, so that
// the tests use the keys an admin writes: "key = action" lines, and every
// key not named set to other ("" keeps the defaults).
func parseActions(t *testing.T, other string, lines ...string) config.Actions {
	t.Helper()
	set := map[string]bool{}
	doc := "[actions]\n"
	for _, l := range lines {
		k, _, _ := strings.Cut(l, "=")
		set[strings.TrimSpace(k)] = true
		doc += l + "\n"
	}
	for _, k := range actionKeys {
		if !set[k] && other != "" {
			doc += k + " = \"" + other + "\"\n"
		}
	}
	cfg, err := config.Parse("actions.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Actions
}

// setActions makes new connections run with acts.
func (e *env) setActions(acts config.Actions) {
	rt := *e.rt
	cfg := *rt.Config
	cfg.Actions = acts
	rt.Config = &cfg
	e.rt = &rt
	e.srv.SetRuntime(&rt)
}

// actionsEnv is a milter with the keys and DNS answers the [actions]
// tests use: selector good (published), testing (t=y), revoked (p=),
// servfail (the name server fails), nxdomain (not published); and a
// header limit of 60 fields.
func actionsEnv(t *testing.T) (*env, func(msg, sel string) string) {
	e := newEnv(t, baseConfig+"[limits]\nmax_headers = 60\n")
	k := testkit.RSAKey(2048)
	e.dns.SetTXT("good._domainkey.sender.example", testkit.KeyRecord(k, ""))
	e.dns.SetTXT("testing._domainkey.sender.example", testkit.KeyRecord(k, "t=y; "))
	e.dns.SetTXT("revoked._domainkey.sender.example", "v=DKIM1; k=rsa; p=")
	e.dns.SetRcode("servfail._domainkey.sender.example", dns.RcodeServerFailure)
	sign := func(msg, sel string) string {
		return testkit.Sign(t, msg, "v=1; a=rsa-sha256; d=sender.example; s="+sel+"; h=from:subject", k)
	}
	return e, sign
}

// broken changes a signed header field: every signature fails.
func broken(msg string) string { return strings.Replace(msg, "Invoice 42", "Invoice 43", 1) }

// signSHA1 puts an rsa-sha1 signature by actionsEnv's key (testkit has
// one key per size) on top: dkim=policy while it is intact, dkim=fail once
// broken.
func signSHA1(t *testing.T, msg, sel string) string {
	return testkit.Sign(t, msg, "v=1; a=rsa-sha1; d=sender.example; s="+sel+"; h=from:subject", testkit.RSAKey(2048))
}

// Each verification outcome with each action, through the milter as
// Postfix drives it. Every other [actions] key is set to an action that
// would show if it applied. The reply carries the reason of the signature
// that decided (RFC 7372 codes); accept and quarantine stamp the
// Authentication-Results; discard is SMFIR_DISCARD; the log names the
// outcome and the action; and the connection goes on with the next
// message, its client still known.
func TestActionsByOutcome(t *testing.T) {
	e, sign := actionsEnv(t)
	good := sign(inbound, "good")
	tests := []struct {
		outcome, name, msg string
		tempfail, reject   string // the replies
		reason             string // of a quarantine
	}{
		{"dns_error", "servfail", sign(inbound, "servfail"),
			"451 4.4.3 DKIM key lookup failed: DNS server failure", "550 5.7.20 DKIM key lookup failed: DNS server failure", "DNS server failure"},
		{"security", "too many header fields", padded(inbound, 70, "X-Pad-%d: x"),
			"452 4.3.4 Message header too large to verify DKIM: too many header fields",
			"552 5.3.4 Message header too large to verify DKIM: too many header fields", "too many header fields"},
		{"bad_signature", "header changed", broken(good),
			"451 4.7.20 No passing DKIM signature: signature did not verify",
			"550 5.7.20 No passing DKIM signature: signature did not verify", "signature did not verify"},
		{"bad_signature", "revoked key", sign(inbound, "revoked"),
			"451 4.7.20 No passing DKIM signature: key revoked", "550 5.7.20 No passing DKIM signature: key revoked", "key revoked"},
		{"key_not_found", "unpublished selector", sign(inbound, "nxdomain"),
			"451 4.7.20 No passing DKIM signature: no key for signature",
			"550 5.7.20 No passing DKIM signature: no key for signature", "no key for signature"},
		{"bad_signature", "broken rsa-sha1", broken(signSHA1(t, inbound, "good")),
			"451 4.7.20 No passing DKIM signature: signature did not verify",
			"550 5.7.20 No passing DKIM signature: signature did not verify", "signature did not verify"},
		{"policy", "rsa-sha1 only", signSHA1(t, inbound, "good"),
			"451 4.7.20 No passing DKIM signature: rsa-sha1 is not accepted (RFC 8301)",
			"550 5.7.20 No passing DKIM signature: rsa-sha1 is not accepted (RFC 8301)", "rsa-sha1 is not accepted (RFC 8301)"},
		{"no_signature", "unsigned", inbound, "451 4.7.20 No DKIM signature", "550 5.7.20 No DKIM signature", "no DKIM signature"},
	}
	for _, tt := range tests {
		for _, a := range config.AllActions {
			t.Run(tt.outcome+"/"+tt.name+"/"+a.String(), func(t *testing.T) {
				other := "discard"
				if a == config.Discard {
					other = "reject"
				}
				e := e.on(t)
				e.setActions(parseActions(t, other, tt.outcome+` = "`+a.String()+`"`))
				c := e.dial(remote)
				r, out := e.sendOn(c, daveEnv, tt.msg, 0)
				code, smtp, text := r.Action.Code, fmt.Sprint(r.Action.SMTPCode, " ", r.Action.SMTPText), ""
				q := testkit.Mods(r, gomilter.ActQuarantine)
				var want gomilter.ActionCode
				switch a {
				case config.Accept, config.Quarantine:
					want = gomilter.ActContinue
					if ar := testkit.Fields(out, "Authentication-Results"); len(ar) != 1 {
						t.Errorf("delivered with %d Authentication-Results", len(ar))
					}
				case config.Tempfail:
					want, text = gomilter.ActReplyCode, tt.tempfail
				case config.Reject:
					want, text = gomilter.ActReplyCode, tt.reject
				case config.Discard:
					want = gomilter.ActDiscard
				}
				if code != want || text != "" && smtp != text {
					t.Fatalf("answer %c %q, want %c %q", code, smtp, want, text)
				}
				if wantQ := a == config.Quarantine; len(q) != 1 && wantQ || len(q) != 0 && !wantQ || wantQ && q[0].Reason != "DKIM: "+tt.reason {
					t.Errorf("quarantine %+v", q)
				}
				line := e.lastLog()
				if !strings.Contains(line, "outcome="+tt.outcome+" ") || strings.Contains(line, "action=") != (a != config.Accept) ||
					a != config.Accept && !strings.Contains(line, "action="+a.String()+" ") {
					t.Errorf("log line: %s", line)
				}

				// The next message on the connection passes, and the
				// session still knows its client.
				r, out = e.sendOn(c, daveEnv, good, 0)
				if ar := testkit.Fields(out, "Authentication-Results"); r.Action.Code != gomilter.ActContinue || len(ar) != 1 || !strings.Contains(ar[0], "dkim=pass") {
					t.Errorf("next message: %c %q", r.Action.Code, ar)
				}
				if l := e.lastLog(); !strings.Contains(l, "client=client.example.net[198.51.100.7]") || strings.Contains(l, "outcome=") {
					t.Errorf("next message's log line: %s", l)
				}
			})
		}
	}

	// One passing signature is enough, and a t=y key never triggers an
	// action: neither has an outcome.
	e.setActions(parseActions(t, "reject"))
	for name, msg := range map[string]string{
		"pass":                    good,
		"pass and key not found":  sign(good, "nxdomain"),
		"testing key fails":       broken(sign(inbound, "testing")),
		"key not found then pass": sign(sign(inbound, "nxdomain"), "good"),
	} {
		r, out := e.send(remote, daveEnv, msg, 0)
		if r.Action.Code != gomilter.ActContinue || len(testkit.Fields(out, "Authentication-Results")) != 1 || len(testkit.Mods(r, gomilter.ActQuarantine)) != 0 {
			t.Errorf("%s: answer %c %d %q, want accept", name, r.Action.Code, r.Action.SMTPCode, r.Action.SMTPText)
		}
		if l := e.lastLog(); strings.Contains(l, "outcome=") || strings.Contains(l, "action=") {
			t.Errorf("%s: log line %s", name, l)
		}
	}

	var b bytes.Buffer
	e.metrics.WritePrometheus(&b)
	for _, a := range []string{"tempfail", "reject", "quarantine", "discard"} {
		if !strings.Contains(b.String(), `dkimmilter_actions_total{action="`+a+`"}`) {
			t.Errorf("%s is not counted:\n%s", a, b.String())
		}
	}
}

// When a message has several outcomes, the first in the order dns_error,
// security, bad_signature, key_not_found, policy decides, with its own
// action and reason, whatever the others are set to; t=y signatures are
// left out, and a pass among them wins.
func TestOutcomeOrder(t *testing.T) {
	e, sign := actionsEnv(t)
	tests := []struct {
		name    string
		actions []string
		msg     string
		outcome string // "" for none
		smtp    string // "" for accept
	}{
		{"unpublished selector: bad_signature no longer covers it", []string{`bad_signature = "reject"`, `key_not_found = "accept"`},
			sign(inbound, "nxdomain"), "key_not_found", ""},
		{"dns error before a broken signature", []string{`dns_error = "accept"`, `bad_signature = "reject"`},
			broken(sign(sign(inbound, "good"), "servfail")), "dns_error", ""},
		{"dns error before a broken signature, tempfail", []string{`dns_error = "tempfail"`, `bad_signature = "reject"`},
			broken(sign(sign(inbound, "servfail"), "good")), "dns_error", "451 4.4.3 DKIM key lookup failed: DNS server failure"},
		{"broken before key not found", []string{`bad_signature = "accept"`, `key_not_found = "reject"`},
			broken(sign(sign(inbound, "nxdomain"), "good")), "bad_signature", ""},
		{"broken before key not found, reject", []string{`bad_signature = "reject"`, `key_not_found = "tempfail"`},
			broken(sign(sign(inbound, "nxdomain"), "good")), "bad_signature", "550 5.7.20 No passing DKIM signature: signature did not verify"},
		{"key not found before policy", []string{`key_not_found = "tempfail"`, `policy = "reject"`},
			signSHA1(t, sign(inbound, "nxdomain"), "good"), "key_not_found", "451 4.7.20 No passing DKIM signature: no key for signature"},
		{"policy after key not found, in either order", []string{`key_not_found = "reject"`, `policy = "tempfail"`},
			sign(signSHA1(t, inbound, "good"), "nxdomain"), "key_not_found", "550 5.7.20 No passing DKIM signature: no key for signature"},
		{"testing key left out", []string{`bad_signature = "reject"`, `policy = "tempfail"`},
			signSHA1(t, broken(sign(inbound, "testing")), "good"), "policy", "451 4.7.20 No passing DKIM signature: rsa-sha1 is not accepted (RFC 8301)"},
		{"a broken rsa-sha1 is a bad signature, not policy", []string{`bad_signature = "reject"`, `policy = "accept"`},
			broken(signSHA1(t, inbound, "good")), "bad_signature", "550 5.7.20 No passing DKIM signature: signature did not verify"},
		{"a pass among failures", []string{`dns_error = "reject"`, `bad_signature = "reject"`, `key_not_found = "reject"`},
			sign(sign(sign(inbound, "servfail"), "nxdomain"), "good"), "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := e.on(t)
			e.setActions(parseActions(t, "", tt.actions...))
			r, _ := e.send(remote, daveEnv, tt.msg, 0)
			got := ""
			if r.Action.Code == gomilter.ActReplyCode {
				got = fmt.Sprint(r.Action.SMTPCode, " ", r.Action.SMTPText)
			} else if r.Action.Code != gomilter.ActContinue {
				got = string(rune(r.Action.Code))
			}
			if got != tt.smtp {
				t.Errorf("answer %q, want %q", got, tt.smtp)
			}
			if l := e.lastLog(); tt.outcome != "" && !strings.Contains(l, "outcome="+tt.outcome+" ") || tt.outcome == "" && strings.Contains(l, "outcome=") {
				t.Errorf("log line (want outcome %q): %s", tt.outcome, l)
			}
		})
	}
}

// verifyOutcome, result by result: which error is which outcome.
func TestVerifyOutcome(t *testing.T) {
	v := func(r verifier.Result, err error) *verifier.Verification {
		return &verifier.Verification{Result: r, Err: err}
	}
	testKey := v(verifier.Fail, verifier.ErrSignature)
	testKey.Testing = true
	tests := []struct {
		name    string
		results []*verifier.Verification
		want    outcome
	}{
		{"none", nil, outNoSignature},
		{"pass", []*verifier.Verification{v(verifier.Pass, nil)}, noOutcome},
		{"timeout", []*verifier.Verification{v(verifier.TempError, verifier.ErrDNSTimeout)}, outDNSError},
		{"too many fields", []*verifier.Verification{v(verifier.PermError, verifier.ErrTooManyHeaders)}, outSecurity},
		{"header too large", []*verifier.Verification{v(verifier.PermError, verifier.ErrHeaderTooLarge)}, outSecurity},
		{"body hash", []*verifier.Verification{v(verifier.Fail, verifier.ErrBodyHash)}, outBadSignature},
		{"l= too long", []*verifier.Verification{v(verifier.Fail, verifier.ErrBodyTooShort)}, outBadSignature},
		{"revoked", []*verifier.Verification{v(verifier.PermError, verifier.ErrKeyRevoked)}, outBadSignature},
		{"expired", []*verifier.Verification{v(verifier.PermError, verifier.ErrExpired)}, outBadSignature},
		{"malformed", []*verifier.Verification{v(verifier.PermError, errors.New("signature missing required tag s="))}, outBadSignature},
		{"one TXT record, not a key", []*verifier.Verification{v(verifier.PermError, fmt.Errorf("%w: key record has v=spf1, not DKIM1", dkim.ErrNotKeyRecord))}, outBadSignature},
		{"no key", []*verifier.Verification{v(verifier.PermError, verifier.ErrNoKey)}, outKeyNotFound},
		{"no key among TXT records", []*verifier.Verification{v(verifier.PermError, fmt.Errorf("%w (2 TXT records, none a DKIM key)", verifier.ErrNoKey))}, outKeyNotFound},
		{"short key", []*verifier.Verification{v(verifier.Policy, dkim.ErrKeyTooShort)}, outPolicy},
		{"unsigned From", []*verifier.Verification{v(verifier.Policy, verifier.ErrUnsignedFrom)}, outPolicy},
		{"neutral only", []*verifier.Verification{v(verifier.PermError, verifier.ErrNoKey), v(verifier.Neutral, verifier.ErrTooMany)}, outKeyNotFound},
		{"testing only", []*verifier.Verification{testKey}, noOutcome},
		{"testing and policy", []*verifier.Verification{testKey, v(verifier.Policy, dkim.ErrSHA1)}, outPolicy},
		{"order", []*verifier.Verification{v(verifier.Policy, dkim.ErrSHA1), v(verifier.PermError, verifier.ErrNoKey), v(verifier.Fail, verifier.ErrBodyHash), v(verifier.TempError, verifier.ErrDNSFailure)}, outDNSError},
		{"pass last", []*verifier.Verification{v(verifier.TempError, verifier.ErrDNSFailure), v(verifier.Pass, nil)}, noOutcome},
	}
	for _, tt := range tests {
		got, by := verifyOutcome(tt.results)
		if got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
		if got != noOutcome && got != outNoSignature && (by == nil || resultOutcome(by) != got) {
			t.Errorf("%s: decided by %+v", tt.name, by)
		}
	}
	for o := outDNSError; o <= outSenderMismatch; o++ {
		acts := parseActions(t, "accept", o.String()+` = "discard"`)
		if o.action(acts) != config.Discard {
			t.Errorf("%s does not read actions.%s", o, o)
		}
	}
}
