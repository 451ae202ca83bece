package main

import (
	"strings"
	"testing"
)

// check says what an authenticated login may have signed; with several
// signing domains, that a login without a domain part needs a mapping,
// and how to write it; it warns of the binding turned off, and of
// mappings that cannot take effect.
func TestCheckSenderBinding(t *testing.T) {
	const org = `[keys.org]
domain = "example.org"
selector = "rsa"
file = "keys/rsa.pem"
[[signing]]
from = "*@example.org"
keys = ["org"]
`
	const pct = `[keys.hosted]
domain = "%"
selector = "h"
file = "keys/%/h.pem"
[[signing]]
from = "*"
keys = ["hosted"]
`
	tests := []struct {
		name, extra string
		out, errs   []string // each must be in stdout, stderr
		notOut      []string
		noWarning   bool
	}{
		{"one signing domain", "", []string{
			"sender binding: an authenticated login may have mail signed for its own domain and its subdomains (alice@a.example: a.example, x.a.example), and for what [sign.senders] lists for it (none listed)",
			`sender binding: the signing rules sign for one domain, example.com: a login without a domain part ("alice") may have mail signed for any From they match`,
		}, nil, []string{"If your SASL logins"}, true},
		{"two signing domains", org, []string{
			`sender binding: the signing rules sign for 2 domains (example.com, example.org), so a login without a domain part ("alice", not "alice@example.com") gets mail signed only for what [sign.senders] lists for it (none is mapped now).`,
			"If your SASL logins are bare user names (Postfix logs them as sasl_username=), map each one",
			"    [sign.senders]\n    \"alice\" = [\"alice@example.com\"]\n",
			`actions.sender_mismatch ("accept") applies`,
		}, nil, nil, true},
		{"two signing domains, bare logins mapped", org + "[sign.senders]\nbob = [\"bob@example.org\"]\n\"carol@example.com\" = [\"example.org\"]\nAlice = [\"example.com\"]\n",
			[]string{"(3 logins listed)", "(mapped now: alice, bob)"}, nil, nil, true},
		{"a '%' key", pct, []string{"the signing rules sign for example.com and a domain per From domain ('%' keys), so a login without a domain part"}, nil, nil, true},
		{"off", org + "[sign]\nsender_binding = \"off\"\n", []string{
			"sender binding off: an authenticated login may have mail signed for any From a [[signing]] rule matches",
		}, []string{
			`warning: ` + "CFG" + `: sign.sender_binding = "off": a client that authenticates gets mail signed for any From a [[signing]] rule matches, whatever its login. With the signing rules signing for 2 domains (example.com, example.org), each user, or anyone with one user's password, can have mail signed as any of them`,
			"Remove the line to bind each login to its own domain and what [sign.senders] lists for it.",
		}, []string{"If your SASL logins"}, false},
		{"off, one domain, a mapping", "[sign]\nsender_binding = \"off\"\n[sign.senders]\nbob = [\"bob@example.org\"]\n", nil, []string{
			`sign.sender_binding = "off": a client that authenticates gets mail signed for any From a [[signing]] rule matches, whatever its login. Remove the line`,
			`[sign.senders] has no effect: sign.sender_binding is "off"`,
		}, nil, false},
		{"authenticated clients not signed", org + "[sign]\nsign_authenticated = false\n[sign.senders]\nbob = [\"bob@example.org\"]\n", nil, []string{
			`[sign.senders] has no effect: sign.sign_authenticated is false and sign.daemon_names is empty, so no authenticated client is signed for`,
		}, []string{"sender binding"}, false},
		// The logins of a submission service in daemon_names are bound,
		// even when authentication alone signs nothing.
		{"authenticated clients signed only through daemon_names", org + "[sign]\nsign_authenticated = false\ndaemon_names = [\"ORIGINATING\"]\n[sign.senders]\nbob = [\"bob@example.org\"]\n", []string{
			"sender binding: an authenticated login may have mail signed for its own domain",
		}, nil, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.extra)
			code, out, errs := runCmd("check", "-config", f.cfg, "-user", me)
			if code != exitOK {
				t.Fatalf("exit %d: %s", code, errs)
			}
			for _, w := range tt.out {
				if !strings.Contains(out, w) {
					t.Errorf("stdout lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tt.notOut {
				if strings.Contains(out, w) {
					t.Errorf("stdout has %q:\n%s", w, out)
				}
			}
			for _, w := range tt.errs {
				if w = strings.ReplaceAll(w, "CFG", f.cfg); !strings.Contains(errs, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errs)
				}
			}
			if tt.noWarning && strings.Contains(errs, "sender") {
				t.Errorf("a warning: %s", errs)
			}
		})
	}
}
