package config

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The [keys.NAME] and [[signing]] lines parse with the daemon's own
// loader into what they say.
func TestKeyTOML(t *testing.T) {
	tests := []struct{ domain, selector, file, name string }{
		{"example.com", "s202611", "/etc/dkimmilter/keys/example.com/s202611.pem", "example-com-s202611"},
		{"mail.example.co.uk", "s202611e", `/srv/keys with "quotes"\and spaces/k.pem`, "mail-example-co-uk-s202611e"},
	}
	for _, tt := range tests {
		name := KeyName(tt.domain, tt.selector)
		if name != tt.name {
			t.Errorf("KeyName(%q, %q) = %q, want %q", tt.domain, tt.selector, name, tt.name)
		}
		text := KeyTOML(name, tt.domain, tt.selector, tt.file) + "\n" + SigningTOML("*@"+tt.domain, []string{name})
		cfg, err := Parse(filepath.Join(t.TempDir(), "dkimmilter.toml"), []byte(text))
		if err != nil {
			t.Fatalf("%v\n%s", err, text)
		}
		k := cfg.Keys[name]
		if k == nil || k.Domain != tt.domain || k.Selector != tt.selector || k.File != tt.file {
			t.Errorf("parsed %+v from\n%s", k, text)
		}
		if len(cfg.Signing) != 1 || cfg.Signing[0].From != "*@"+tt.domain || cfg.Signing[0].Keys[0] != name {
			t.Errorf("signing %+v", cfg.Signing)
		}
	}
	if got := KeyTOML("a.b", "example.com", "s", "/k"); !strings.HasPrefix(got, `[keys."a.b"]`) {
		t.Errorf("dotted name not quoted: %s", got)
	}
}

// KeysLine is the line a rule's keys array starts on, wherever the rule
// puts it, so that keys rotate can show that line before and after.
func TestKeysLine(t *testing.T) {
	text := `[keys.k]
domain = "example.com"
selector = "s"
file = "/k.pem"

[[signing]]
from = "*@example.com"
# a comment
keys = ["k"]

[[signing]]
keys = [
  "k",
]
from = "*@*.example.com"
`
	cfg, err := Parse("", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if got := []int{cfg.Signing[0].KeysLine, cfg.Signing[1].KeysLine}; got[0] != 9 || got[1] != 12 {
		t.Errorf("KeysLine %v, want [9 12]", got)
	}
	cfg, err = Parse("", []byte(`signing = [ { from = "*", keys = ["k"] } ]
[keys.k]
domain = "example.com"
selector = "s"
file = "/k.pem"
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Signing[0].KeysLine; got != 1 {
		t.Errorf("inline table: KeysLine %d, want 1", got)
	}
}

// The two oversigning lists: the defaults; an explicit list takes the
// other list's default without the fields it names itself, cut to the
// signed fields; a field named in both is an error (testdata/bad).
func TestOversignLists(t *testing.T) {
	for _, tt := range []struct {
		doc               string
		always, ifPresent []string
	}{
		{"", []string{"from", "reply-to", "subject", "to", "cc"},
			[]string{"date", "message-id", "mime-version", "content-type", "content-transfer-encoding", "list-unsubscribe", "list-unsubscribe-post"}},
		{"[sign]\noversign = [\"from\", \"Date\", \"list-unsubscribe\"]\n", []string{"from", "date", "list-unsubscribe"},
			[]string{"message-id", "mime-version", "content-type", "content-transfer-encoding", "list-unsubscribe-post"}},
		{"[sign]\noversign_if_present = [\"subject\", \"date\"]\n", []string{"from", "reply-to", "to", "cc"},
			[]string{"subject", "date"}},
		{"[sign]\nheaders = [\"from\", \"subject\", \"date\"]\n", []string{"from", "subject"}, []string{"date"}},
	} {
		cfg, err := Parse("", []byte(tt.doc))
		if err != nil {
			t.Fatalf("%q: %v", tt.doc, err)
		}
		if !slices.Equal(cfg.Sign.Oversign, tt.always) || !slices.Equal(cfg.Sign.OversignIfPresent, tt.ifPresent) {
			t.Errorf("%q: oversign %q, if present %q; want %q, %q", tt.doc, cfg.Sign.Oversign, cfg.Sign.OversignIfPresent, tt.always, tt.ifPresent)
		}
	}
}

func TestTOMLString(t *testing.T) {
	for in, want := range map[string]string{`a"b\c`: `"a\"b\\c"`, "tab\there": `"tab\u0009here"`, "é": `"é"`} {
		if got := TOMLString(in); got != want {
			t.Errorf("TOMLString(%q) = %s, want %s", in, got, want)
		}
	}
}
