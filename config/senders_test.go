package config

import (
	"reflect"
	"strings"
	"testing"
)

// sign.sender_binding and [sign.senders] as written: logins lower-cased,
// entries lower-cased with a trailing dot dropped, "*" kept.
func TestSenders(t *testing.T) {
	for _, tt := range []struct {
		name    string
		doc     string
		binding SenderBinding
		senders map[string][]string
	}{
		{"default", "", BindDomain, nil},
		{"off", "[sign]\nsender_binding = \"off\"\n", BindOff, nil},
		{"domain written out", "[sign]\nsender_binding = \"domain\"\nsenders = {}\n", BindDomain, nil},
		{"a table", `
[sign.senders]
"Alice@A.example" = ["Sales@B.Example", "c.example.", "*"]
bob = ["bob@a.example"]
`, BindDomain, map[string][]string{
			"alice@a.example": {"sales@b.example", "c.example", "*"},
			"bob":             {"bob@a.example"},
		}},
		{"an inline table", "[sign]\nsenders = { \"gw@a.example\" = [\"*\"] }\n", BindDomain,
			map[string][]string{"gw@a.example": {"*"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("s.toml", []byte(tt.doc))
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Sign.SenderBinding != tt.binding || !reflect.DeepEqual(cfg.Sign.Senders, tt.senders) {
				t.Errorf("binding %s, senders %q; want %s, %q", cfg.Sign.SenderBinding, cfg.Sign.Senders, tt.binding, tt.senders)
			}
		})
	}
}

// Each mistake is reported at its line, with what to write instead.
func TestSendersBad(t *testing.T) {
	for _, tt := range []struct {
		doc  string
		want string
	}{
		{"[sign]\nsender_binding = \"on\"\n", `s.toml:2: sign.sender_binding: "on" is not a sender binding; write "domain" (`},
		{"[sign]\nsender_binding = false\n", `sign.sender_binding: must be a string, not true or false`},
		{"[sign.senders]\n\"alice@a.example\" = []\n", `s.toml:2: sign.senders."alice@a.example": is empty; list the From addresses or domains`},
		{"[sign.senders]\n\"alice@a.example\" = \"b.example\"\n", `must be an array, not a string`},
		{"[sign.senders]\n\"\" = [\"b.example\"]\n", `the login is empty`},
		{"[sign.senders]\n\"al ice\" = [\"b.example\"]\n", `the login "al ice" has a space or a control character`},
		{"[sign.senders]\n\"alice@\" = [\"b.example\"]\n", `the login "alice@" has an empty domain part; write "alice" for a login without one`},
		{"[sign.senders]\n\"alice@a.example\" = [\"b.example\"]\n\"ALICE@a.example\" = [\"c.example\"]\n", `s.toml:3: sign.senders."ALICE@a.example": "ALICE@a.example" is login "alice@a.example" again: logins are matched without regard to case; keep one`},
		{"[sign.senders]\nalice = [\"ok.example\",\n  \"@b.example\"]\n", `s.toml:3: sign.senders.alice[2]: "@b.example" is not an address; write "b.example" for every address of the domain`},
		{"[sign.senders]\nalice = [\"*@b.example\"]\n", `"*@b.example" is not an address; write "b.example"`},
		{"[sign.senders]\nalice = [\"*.b.example\"]\n", `"*.b.example" has a wildcard; write "b.example": a domain covers its subdomains`},
		{"[sign.senders]\nalice = [\"x-*@b.example\"]\n", `"x-*@b.example" has a wildcard: only whole addresses and domains are allowed`},
		{"[sign.senders]\nalice = [\"b_example\"]\n", `"b_example" is not a domain: '_' is not allowed`},
		{"[sign.senders]\nalice = [\"al(ice@b.example\"]\n", `"al(ice@b.example" is not an address: '(' is not allowed`},
		{"[sign.senders]\nalice = [\"alice@b..example\"]\n", `is not an address: the domain is not valid: it has an empty label`},
		{"[sign.senders]\nalice = [\"bücher.example\"]\n", `write internationalised names in their ASCII form`},
		{"[sign.senders]\nalice = [\"b.example\", \"B.example\"]\n", `sign.senders.alice[2]: "B.example" is listed twice`},
		{"[sign.senders]\nalice = [\"\"]\n", `"" is not a domain: it is empty`},
		{"[actions]\nsender_mismatch = \"bounce\"\n", `actions.sender_mismatch: "bounce" is not an action; write "accept", "tempfail", "reject", "quarantine" or "discard"`},
		{"[sign]\nsendres = {}\n", `s.toml:2: sign.sendres: unknown key "sendres" (did you mean "senders"?)`},
	} {
		_, err := Parse("s.toml", []byte(tt.doc))
		if err == nil {
			t.Errorf("%q parsed", tt.doc)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q:\n got %v\nwant %s", tt.doc, err, tt.want)
		}
	}
}

// SenderEntry judges an entry from elsewhere (a database row) as
// [sign.senders] judges its own.
func TestSenderEntry(t *testing.T) {
	for _, tt := range []struct {
		in, entry, problem string
	}{
		{"Sales@B.Example", "sales@b.example", ""},
		{"c.example.", "c.example", ""},
		{"*", "*", ""},
		{"", "", `"" is not a domain: it is empty`},
		{"*.b.example", "", `"*.b.example" has a wildcard; write "b.example"`},
		{"@b.example", "", `"@b.example" is not an address; write "b.example"`},
		{"b example", "", `"b example" is not a domain`},
		{"bücher.example", "", `write internationalised names in their ASCII form`},
	} {
		entry, prob := SenderEntry(tt.in)
		if entry != tt.entry || (tt.problem == "") != (prob == "") || !strings.Contains(prob, tt.problem) {
			t.Errorf("SenderEntry(%q) = %q, %q; want %q, %q", tt.in, entry, prob, tt.entry, tt.problem)
		}
	}
}
