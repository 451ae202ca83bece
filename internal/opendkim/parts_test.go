package opendkim

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/dkimmilter/dkimmilter/config"
)

// translateFiles writes files (name → content, opendkim.conf among them)
// into a directory and translates its opendkim.conf. "DIR" in contents
// stands for the directory.
func translateFiles(t *testing.T, files map[string]string) *Result {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(strings.ReplaceAll(content, "DIR", dir)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	res, err := Translate(filepath.Join(dir, "opendkim.conf"), Options{Hostname: func() (string, error) { return "", errors.New("no name") }})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func note(t *testing.T, res *Result, name string) Note {
	t.Helper()
	for _, n := range res.Notes {
		if n.Name == name {
			return n
		}
	}
	t.Fatalf("no note for %s", name)
	return Note{}
}

// Each case: a configuration, the setting to look at, whether it is
// reported as changing mail, and text its note or the output must have.
func TestTranslateCases(t *testing.T) {
	for _, tc := range []struct {
		name    string
		files   map[string]string
		setting string
		affects bool
		want    []string // in the note's text and details, or the TOML
	}{
		{"names case-insensitive, booleans by first char", map[string]string{"opendkim.conf": "keytable DIR/kt\nSIGNINGTABLE DIR/st\nmultiplesignatures Yes-please\n", "kt": "k example.com:s:/k.pem\n", "st": "example.com k\n"},
			"MultipleSignatures", false, []string{"every SigningTable line"}},
		{"partial overlap under MultipleSignatures", map[string]string{"opendkim.conf": "KeyTable DIR/kt\nSigningTable refile:DIR/st\nMultipleSignatures 1\n", "kt": "a example.com:a:/a.pem\nb example.com:b:/b.pem\n", "st": "*@example.com a\nuser@* b\n"},
			"SigningTable", true, []string{"neither matches all the other does"}},
		{"different signers under MultipleSignatures", map[string]string{"opendkim.conf": "KeyTable DIR/kt\nSigningTable refile:DIR/st\nMultipleSignatures y\n", "kt": "a example.com:a:/a.pem\nb example.com:b:/b.pem\n", "st": "*@example.com a:@example.com\n* b\n"},
			"SigningTable", true, []string{"different signers"}},
		{"three refile matches: OpenDKIM's bug noted", map[string]string{"opendkim.conf": "KeyTable DIR/kt\nSigningTable refile:DIR/st\nMultipleSignatures y\n", "kt": "a example.com:a:/a.pem\nb example.com:b:/b.pem\nc example.com:c:/c.pem\n", "st": "*@example.com a\n*@example.com b\n* c\n"},
			"SigningTable", false, []string{"only the first and last", `keys = ["a", "b", "c"]`}},
		{"KeyFile without Selector", map[string]string{"opendkim.conf": "Domain example.com\nKeyFile /k.pem\n"},
			"KeyFile", true, []string{"must both be set"}},
		{"single key, Domain * and SubDomains", map[string]string{"opendkim.conf": "Domain *\nKeyFile k.pem\nSelector s\nSubDomains yes\n"},
			"SubDomains", false, []string{"signs every domain already", `from = "*"`, "is relative"}},
		{"single key without Domain signs nothing", map[string]string{"opendkim.conf": "KeyFile /k.pem\nSelector s\n"},
			"KeyFile", false, []string{"OpenDKIM signed nothing", "No signing"}},
		{"Berkeley DB table", map[string]string{"opendkim.conf": "KeyTable DIR/kt.db\nSigningTable DIR/st\n", "st": "* k\n"},
			"KeyTable", true, []string{"Berkeley DB"}},
		{"SQL table", map[string]string{"opendkim.conf": "KeyTable dsn:mysql://u:p@localhost/db/table=k\nSigningTable DIR/st\n", "st": "* k\n"},
			"KeyTable", true, []string{"dsn: data sets are not read"}},
		{"missing table file", map[string]string{"opendkim.conf": "InternalHosts DIR/nothere\n"},
			"InternalHosts", true, []string{"no such file"}},
		{"relative data set path", map[string]string{"opendkim.conf": "InternalHosts file:hosts\n", "hosts": "10.0.0.0/8\n"},
			"InternalHosts", false, []string{"is relative", `"10.0.0.0/8"`}},
		{"SigningTable without KeyTable", map[string]string{"opendkim.conf": "SigningTable DIR/st\n", "st": "* k\n"},
			"SigningTable", true, []string{"refuses to start"}},
		{"KeyTable without SigningTable", map[string]string{"opendkim.conf": "KeyTable DIR/kt\n", "kt": "k example.com:s:/k.pem\n"},
			"KeyTable", true, []string{"SetupPolicyScript"}},
		{"bad canonicalization", map[string]string{"opendkim.conf": "Canonicalization loose\n"},
			"Canonicalization", true, []string{"not a canonicalization"}},
		{"bad mode", map[string]string{"opendkim.conf": "Mode x\n"},
			"Mode", true, []string{"not a mode"}},
		{"AuthservID HOSTNAME without a host name", map[string]string{"opendkim.conf": "AuthservID HOSTNAME\n"},
			"AuthservID", true, []string{"host's name is unknown"}},
		{"On-DNSError explicit", map[string]string{"opendkim.conf": "On-DNSError t\n"},
			"On-DNSError", false, []string{`dns_error = "tempfail"`, "a bug"}},
		{"On-Default discard", map[string]string{"opendkim.conf": "On-Default discard\nOn-SignatureError r\n"},
			"On-Default", false, []string{`bad_signature = "discard"`, `sign_error = "reject"`, `no_signature = "discard"`}},
		{"On-NoSignature quarantine: OpenDKIM 2.11 did not", map[string]string{"opendkim.conf": "On-NoSignature q\n"},
			"On-NoSignature", false, []string{`no_signature = "quarantine"`, "never asked Postfix for the right to", "hold queue"}},
		{"policy stays accept under On-BadSignature reject", map[string]string{"opendkim.conf": "On-BadSignature reject\n"},
			"On-BadSignature", false, []string{`bad_signature = "reject"`, `policy = "accept"`, policyWords, `"reject" here would refuse that mail`, `A broken rsa-sha1 signature is dkim=fail and gets "reject"`, "An expired signature"}},
		{"refile pattern config refuses", map[string]string{"opendkim.conf": "KeyTable DIR/kt\nSigningTable refile:DIR/st\n", "kt": "k example.com:s:/k.pem\n", "st": "*@foo_bar.example k\n*@example.com k\n"},
			"SigningTable", true, []string{`"*@foo_bar.example" cannot be written as a dkimmilter pattern`, "'_'", `from = "*@example.com"`}},
		{"MacroList daemon_name without values", map[string]string{"opendkim.conf": "MacroList daemon_name\n"},
			"MacroList", true, []string{"matched every message"}},
		{"MacroList from a file", map[string]string{"opendkim.conf": "MacroList DIR/macros\n", "macros": "{daemon_name} ORIGINATING|SUBMISSION\n"},
			"MacroList", false, []string{`daemon_names = ["ORIGINATING", "SUBMISSION"]`}},
		{"SenderHeaders From only", map[string]string{"opendkim.conf": "SenderHeaders From\n"},
			"SenderHeaders", false, []string{"From is where"}},
		{"SenderHeaders Sender", map[string]string{"opendkim.conf": "SenderHeaders Sender,From\n"},
			"SenderHeaders", true, []string{"From field only"}},
		{"repeated setting", map[string]string{"opendkim.conf": "Mode v\nMode s\n"},
			"Mode", false, []string{"set again at", `mode = "s"`}},
		{"refile InternalHosts with a regex", map[string]string{"opendkim.conf": "InternalHosts refile:DIR/h\n", "h": "mail*.example.com\n"},
			"InternalHosts", true, []string{"only *.DOMAIN patterns"}},
		{"OmitHeaders removes a signed field", map[string]string{"opendkim.conf": "OmitHeaders *,Subject\n"},
			"OmitHeaders", false, []string{`"subject"`}},
		{"SignHeaders without From and with Received", map[string]string{"opendkim.conf": "SignHeaders To,Received\nOmitHeaders .\n"},
			"SignHeaders", true, []string{`headers = ["from", "to"]`, "change in transit"}},
		{"MaximumHeaders 0", map[string]string{"opendkim.conf": "MaximumHeaders 0\n"},
			"MaximumHeaders", false, []string{"max_header_bytes = 268435456"}},
		{"SignatureTTL in hours", map[string]string{"opendkim.conf": "SignatureTTL 7200\n"},
			"SignatureTTL", false, []string{`expire = "2h"`}},
		{"SignatureAlgorithm ed25519", map[string]string{"opendkim.conf": "SignatureAlgorithm ed25519-sha256\n"},
			"SignatureAlgorithm", false, []string{"from each key's type"}},
		{"unknown key name in SigningTable", map[string]string{"opendkim.conf": "KeyTable DIR/kt\nSigningTable DIR/st\n", "kt": "k example.com:s:/k.pem\n", "st": "example.com nokey\n"},
			"SigningTable", true, []string{"tempfailed"}},
		{"key name % without a matching KeyTable name", map[string]string{"opendkim.conf": "KeyTable DIR/kt\nSigningTable DIR/st\n", "kt": "k example.com:s:/k.pem\n", "st": "example.org %\n"},
			"SigningTable", true, []string{"no KeyTable entry is named like a domain"}},
		{"key names dkimmilter does not take", map[string]string{"opendkim.conf": "KeyTable DIR/kt\nSigningTable DIR/st\n", "kt": "my+key example.com:s:/k.pem\nmy/key example.com:t:/t.pem\n", "st": "example.com my/key\n"},
			"KeyTable", false, []string{"[keys.my-key]", `keys = ["my-key-2"]`, "characters dkimmilter's names do not take"}},
		{"signer outside d=", map[string]string{"opendkim.conf": "KeyTable DIR/kt\nSigningTable DIR/st\n", "kt": "k example.com:s:/k.pem\n", "st": "example.com k:news@other.example\n"},
			"SigningTable", false, []string{"OpenDKIM left i= out"}},
		{"signer with %", map[string]string{"opendkim.conf": "KeyTable DIR/kt\nSigningTable DIR/st\n", "kt": "k example.com:s:/k.pem\n", "st": "example.com k:news@%\n"},
			"SigningTable", false, []string{`identity = "news@%"`}},
		{"inet socket on OpenDKIM's neighbour port", map[string]string{"opendkim.conf": "Socket inet:8893@[192.0.2.1]\n"},
			"Socket", false, []string{`listen = "inet:192.0.2.1:8894"`}},
		{"a name server by name", map[string]string{"opendkim.conf": "Nameservers 192.0.2.53, ns.example.com\n"},
			"Nameservers", false, []string{`nameservers = ["192.0.2.53"]`, "not an IP address"}},
		{"SignHeaders from a data set not read", map[string]string{"opendkim.conf": "SignHeaders lua:/x.lua\n"},
			"SignHeaders", true, []string{"lua: data sets are not read"}},
		{"ifTrue options off", map[string]string{"opendkim.conf": "RemoveOldSignatures false\n"},
			"RemoveOldSignatures", false, []string{"off, as in dkimmilter"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := translateFiles(t, tc.files)
			n := note(t, res, tc.setting)
			if n.Affects != tc.affects {
				t.Errorf("%s: changes mail %v, want %v (%s %q)", tc.setting, n.Affects, tc.affects, n.Text, n.Details)
			}
			text := n.Text + "\n" + strings.Join(n.Details, "\n") + "\n" + string(res.TOML)
			// Comments are wrapped: a sentence is looked for in them
			// with the lines joined as well.
			flat := strings.Join(strings.Fields(strings.ReplaceAll(text, "\n#", " ")), " ")
			for _, w := range tc.want {
				if !strings.Contains(text, w) && !strings.Contains(flat, w) {
					t.Errorf("%q missing from the note (%s %q) and output:\n%s", w, n.Text, n.Details, res.TOML)
				}
			}
		})
	}
}

func TestIncludes(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Five levels deep are read; a file that includes itself is not.
	write("opendkim.conf", "Include l1.conf\nMode v\n")
	for i := 1; i < 5; i++ {
		write("l"+string(rune('0'+i))+".conf", "Include l"+string(rune('0'+i+1))+".conf\n")
	}
	write("l5.conf", "Canonicalization relaxed\n")
	res, err := Translate(filepath.Join(dir, "opendkim.conf"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(res.TOML), `canonicalization = "relaxed/simple"`) || !strings.Contains(string(res.TOML), `mode = "v"`) {
		t.Errorf("included settings not applied:\n%s", res.TOML)
	}
	write("loop.conf", "Include loop.conf\n")
	if _, err := Translate(filepath.Join(dir, "loop.conf"), Options{}); !errors.Is(err, ErrInclude) {
		t.Errorf("a self-include: %v, want ErrInclude", err)
	}
	write("missing.conf", "Mode sv\nInclude nothere.conf\n")
	if _, err := Translate(filepath.Join(dir, "missing.conf"), Options{}); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "missing.conf:2") {
		t.Errorf("a missing include: %v, want its line and fs.ErrNotExist", err)
	}
	write("empty.conf", "Include\n")
	if _, err := Translate(filepath.Join(dir, "empty.conf"), Options{}); err == nil {
		t.Error("Include without a file: no error")
	}
	if _, err := Translate(filepath.Join(dir, "none.conf"), Options{}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a missing opendkim.conf: %v", err)
	}
	if _, err := Translate("relative.conf", Options{Root: dir}); err == nil {
		t.Error("a relative path under a root: no error")
	}
}

func TestBoolValue(t *testing.T) {
	for in, want := range map[string][2]bool{
		"yes": {true, true}, "True": {true, true}, "1": {true, true}, "y": {true, true},
		"no": {false, true}, "False": {false, true}, "0": {false, true},
		"": {false, false}, "maybe": {false, false},
	} {
		v, ok := boolValue(in)
		if [2]bool{v, ok} != want {
			t.Errorf("boolValue(%q) = %v, %v; want %v", in, v, ok, want)
		}
	}
}

func TestGlobs(t *testing.T) {
	for _, tc := range []struct {
		p, q             string
		covers, disjoint bool
	}{
		{"*", "*@example.com", true, false},
		{"*@example.com", "user@example.com", true, false},
		{"*@example.com", "*@*.example.com", false, true},
		{"*@*.example.com", "*@a.example.com", true, false},
		{"*@*.example.com", "*@*.a.example.com", true, false},
		{"*@example.com", "*@example.org", false, true},
		{"*@example.com", "user@*", false, false},
		{"bounce-*@example.com", "*@example.com", false, false},
		{"*@example.com", "bounce-*@example.com", true, false},
		{"a@example.com", "b@example.com", false, true},
		{"*@*", "*@example.com", true, false},
	} {
		if got := config.GlobMatch(tc.p, tc.q); got != tc.covers {
			t.Errorf("GlobMatch(%q, %q) = %v", tc.p, tc.q, got)
		}
		if got := disjoint(tc.p, tc.q); got != tc.disjoint {
			t.Errorf("disjoint(%q, %q) = %v", tc.p, tc.q, got)
		}
	}
}

func TestLookupPattern(t *testing.T) {
	for _, tc := range []struct {
		key, from string
		rank      [3]int
	}{
		{"user@example.com", "user@example.com", [3]int{0, 0, 0}},
		{"example.com", "*@example.com", [3]int{0, 0, 1}},
		{"user@.example.com", "user@*.example.com", [3]int{1, -2, 0}},
		{".example.com", "*@*.example.com", [3]int{1, -2, 1}},
		{".com", "*@*.com", [3]int{1, -1, 1}},
		{"user@*", "user@*", [3]int{2, 0, 0}},
		{"*", "*", [3]int{3, 0, 0}},
		{"*@example.com", "", [3]int{}},
		{"user@*.example.com", "", [3]int{}},
		{"*.example.com", "", [3]int{}},
	} {
		from, rank, why := lookupPattern(tc.key)
		if from != tc.from || rank != tc.rank || (from == "") != (why != "") {
			t.Errorf("lookupPattern(%q) = %q, %v, %q; want %q, %v", tc.key, from, rank, why, tc.from, tc.rank)
		}
	}
}

func TestHostEntry(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.0/8": "10.0.0.0/8", "10.0.0.1/8": "", "192.0.2/24": "", "2001:db8::/32": "2001:db8::/32",
		"2001:db8:0::/32": "", "192.0.2.1": "192.0.2.1", "2001:db8::1": "2001:db8::1", "2001:0db8::1": "",
		"mail.example.com": "mail.example.com", ".example.com": ".example.com", "*.example.com": "", ".": "",
		"-": "", "localhost": "localhost", "a..b": "", "mail_1.example.com": "mail_1.example.com",
	} {
		got, why := hostEntry(in)
		if got != want || (got == "") != (why != "") {
			t.Errorf("hostEntry(%q) = %q, %q; want %q", in, got, why, want)
		}
	}
}

func TestDuration(t *testing.T) {
	for secs, want := range map[uint64]string{0: "0", 86400: "1d", 1209600: "14d", 3600: "1h", 5400: "1h30m", 90061: "25h1m1s", 59: "59s"} {
		if got := duration(secs); got != want {
			t.Errorf("duration(%d) = %q, want %q", secs, got, want)
		}
	}
}

func TestCSL(t *testing.T) {
	d := cslDataset(" a, b=c ,, d = e ", "x:1")
	var got []string
	for _, e := range d.entries {
		got = append(got, e.key+"|"+e.value)
	}
	if want := []string{"a|", "b|c", "d|e"}; !slices.Equal(got, want) {
		t.Errorf("entries %q, want %q", got, want)
	}
}

func TestClean(t *testing.T) {
	for in, want := range map[string]string{"a\x00b": `a\x00b`, "tab\tstays": "tab\tstays", "cr\r": `cr\x0d`, "\xff": "\uFFFD", "del\x7f": `del\x7f`} {
		if got := clean(in); got != want {
			t.Errorf("clean(%q) = %q, want %q", in, got, want)
		}
	}
	if got := underRoot("/r", "/../../etc/x"); got != "/r/etc/x" {
		t.Errorf("underRoot escapes the root: %s", got)
	}
	if got := tomlKey("a.b"); got != `"a.b"` {
		t.Errorf("tomlKey(a.b) = %s", got)
	}
}

// Host entries and {daemon_name} values that dkimmilter's configuration
// refuses are left out with a note, so that the translation still loads.
func TestHostsConfigRefuses(t *testing.T) {
	for _, tc := range []struct {
		name    string
		files   map[string]string
		setting string
		affects bool
		want    []string
	}{
		{"underscore in a host name", map[string]string{"opendkim.conf": "InternalHosts csl:10.0.0.0/8,mail_1.example.com\n"},
			"InternalHosts", true, []string{`"mail_1.example.com" left out`, "dkimmilter's configuration cannot express it", `"10.0.0.0/8"`}},
		{"partial address", map[string]string{"opendkim.conf": "PeerList DIR/peers\n", "peers": "192.0.2\n192.0.2.1\n"},
			"PeerList", false, []string{`"192.0.2" left out`, "OpenDKIM never matched it", `"192.0.2.1"`}},
		{"MTA name that is not one word", map[string]string{"opendkim.conf": "MTA ORIGINATING,SUB MISSION\n"},
			"MTA", false, []string{`"SUB MISSION" left out`, "OpenDKIM never matched it", `daemon_names = ["ORIGINATING"]`}},
		{"MacroList value that is not one word", map[string]string{"opendkim.conf": "MacroList DIR/macros\n", "macros": "daemon_name=ORIGINATING|SUB\x01\n"},
			"MacroList", false, []string{"OpenDKIM never matched it", `daemon_names = ["ORIGINATING"]`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := translateFiles(t, tc.files)
			n := note(t, res, tc.setting)
			if n.Affects != tc.affects {
				t.Errorf("%s: changes mail %v, want %v (%s %q)", tc.setting, n.Affects, tc.affects, n.Text, n.Details)
			}
			text := n.Text + "\n" + strings.Join(n.Details, "\n") + "\n" + string(res.TOML)
			for _, w := range tc.want {
				if !strings.Contains(text, w) {
					t.Errorf("%q missing from the note (%s %q) and output:\n%s", w, n.Text, n.Details, res.TOML)
				}
			}
			if _, err := config.Parse("", res.TOML); err != nil {
				t.Errorf("the translation does not load: %v\n%s", err, res.TOML)
			}
		})
	}
}

// refile patterns without '@': OpenDKIM matched them against the whole
// address, so a '*' took the '@'. One '*' translates; more do not.
func TestRefileWithoutAt(t *testing.T) {
	for _, tc := range []struct {
		name    string
		st      string
		affects bool
		want    []string
	}{
		{"domain suffix", "*example.com k\n", false, []string{`from = "*@*example.com"`, "matches the same addresses"}},
		{"subdomains", "*.example.org k\n", false, []string{`from = "*@*.example.org"`}},
		{"local part prefix", "news* k\n", false, []string{`from = "news*@*"`}},
		{"two stars", "*mail*example.com k\n", true, []string{`"*mail*example.com" has no '@' and more than one '*'`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := translateFiles(t, map[string]string{"opendkim.conf": "KeyTable DIR/kt\nSigningTable refile:DIR/st\n", "kt": "k example.com:s:/k.pem\n", "st": tc.st})
			n := note(t, res, "SigningTable")
			if n.Affects != tc.affects {
				t.Errorf("changes mail %v, want %v (%s %q)", n.Affects, tc.affects, n.Text, n.Details)
			}
			text := n.Text + "\n" + strings.Join(n.Details, "\n") + "\n" + string(res.TOML)
			for _, w := range tc.want {
				if !strings.Contains(text, w) {
					t.Errorf("%q missing from the note (%s %q) and output:\n%s", w, n.Text, n.Details, res.TOML)
				}
			}
			if _, err := config.Parse("", res.TOML); err != nil && !strings.Contains(err.Error(), "k.pem") {
				t.Errorf("the translation does not load: %v\n%s", err, res.TOML)
			}
		})
	}
}

// The translation of a pattern without '@' matches exactly the addresses
// the regular expression OpenDKIM builds from it matches (dkimf_mkregexp:
// '*' is ".*", '.' and '+' escaped, anchored), for every address with
// one '@' over a small alphabet.
func TestAtlessPatternEquivalent(t *testing.T) {
	const alphabet = "ab.*"
	var pats []string
	var gen func(prefix string, n int)
	gen = func(prefix string, n int) {
		if strings.Contains(prefix, "*") {
			pats = append(pats, prefix)
		}
		if n == 0 {
			return
		}
		for i := range len(alphabet) {
			gen(prefix+alphabet[i:i+1], n-1)
		}
	}
	gen("", 5)
	var words []string
	var genw func(prefix string, n int)
	genw = func(prefix string, n int) {
		words = append(words, prefix)
		if n == 0 {
			return
		}
		for _, c := range []string{"a", "b", "."} {
			genw(prefix+c, n-1)
		}
	}
	genw("", 3)
	translated := 0
	for _, p := range pats {
		from, ok := atlessPattern(p)
		if !ok {
			continue
		}
		translated++
		re := regexp.MustCompile("^" + strings.NewReplacer(".", `\.`, "+", `\+`, "*", ".*").Replace(p) + "$")
		for _, l := range words[1:] {
			for _, d := range words[1:] {
				addr := l + "@" + d
				if got, want := config.GlobMatch(from, addr), re.MatchString(addr); got != want {
					t.Fatalf("%q as %q: %q matched %v, OpenDKIM %v", p, from, addr, got, want)
				}
			}
		}
	}
	if translated < 50 {
		t.Fatalf("only %d patterns translated", translated)
	}
}
