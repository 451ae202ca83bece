package config

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/internal/dkim"
)

func TestEmptyFileIsDefault(t *testing.T) {
	for _, data := range []string{"", "\n", "# nothing\n\n[sign]\n[dns]\n"} {
		cfg, err := Parse("empty.toml", []byte(data))
		if err != nil {
			t.Fatalf("Parse(%q): %v", data, err)
		}
		if cfg.File != "empty.toml" {
			t.Errorf("File = %q", cfg.File)
		}
		cfg.File = ""
		if want := Default(); !reflect.DeepEqual(cfg, want) {
			t.Errorf("Parse(%q) =\n%+v\nwant Default() =\n%+v", data, cfg, want)
		}
	}
	// Decoding over the defaults must not change them for the next caller.
	if _, err := Parse("x.toml", []byte(`[sign]`+"\n"+`headers = ["from"]`)); err != nil {
		t.Fatal(err)
	}
	if got := Default().Sign.Headers; len(got) != 29 || got[1] != "reply-to" {
		t.Errorf("Default().Sign.Headers changed: %q", got)
	}
}

func TestFull(t *testing.T) {
	cfg, err := Load("testdata/full.toml")
	if err != nil {
		t.Fatal(err)
	}
	dir, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		File:       "testdata/full.toml",
		Listen:     "unix:/var/spool/postfix/dkimmilter/dkimmilter.sock",
		SocketMode: 0o600,
		Mode:       ModeSign | ModeVerify,
		AuthservID: "mx.example.com",
		Peers: Hosts{
			{Prefix: netip.MustParsePrefix("192.0.2.25/32")},
			{Name: ".relay.example.net"},
			{Exclude: true, Name: "bad.relay.example.net"},
		},
		Sign: Sign{
			InternalHosts: Hosts{
				{Prefix: netip.MustParsePrefix("127.0.0.1/32")},
				{Prefix: netip.MustParsePrefix("::1/128")},
				{Prefix: netip.MustParsePrefix("10.0.0.0/8")},
				{Prefix: netip.MustParsePrefix("192.0.2.7/32")},
				{Prefix: netip.MustParsePrefix("2001:db8::/32")},
				{Name: "submit.example.com"},
				{Name: ".lan.example.com"},
				{Exclude: true, Prefix: netip.MustParsePrefix("10.9.9.9/32")},
			},
			DaemonNames:       []string{"ORIGINATING"},
			SignAuthenticated: false,
			HeaderCanon:       dkim.Simple,
			BodyCanon:         dkim.Simple,
			Expire:            0,
			Headers:           []string{"from", "subject", "date", "to", "message-id"},
			Oversign:          []string{"from", "subject"},
			OversignIfPresent: []string{"date", "message-id"}, // the default, cut to the signed fields
		},
		Keys: map[string]*Key{
			"example-rsa": {Name: "example-rsa", Domain: "example.com", Selector: "s2026r", File: "/etc/dkimmilter/keys/example.com/s2026r.pem", Line: 28},
			"example.ed":  {Name: "example.ed", Domain: "example.com", Selector: "S2026e.Lab_1", File: filepath.Join(dir, "keys/s2026e.pem"), Line: 33},
			"any-domain":  {Name: "any-domain", Domain: "%", Selector: "dkim", File: "/etc/dkimmilter/keys/%/dkim.pem", Line: 39},
			"hosted": {Name: "hosted", Domain: "%", Line: 100,
				Query:     "SELECT selector, private_key FROM dkim_keys WHERE domain = $1",
				ListQuery: "SELECT domain, selector, private_key FROM dkim_keys"},
			"customer": {Name: "customer", Domain: "customer.example", Selector: "s1", File: filepath.Join(dir, "keys/customer-s1.pem"), Line: 109,
				Rotate: 30 * 24 * time.Hour, Publish: "provider", Selectors: []string{"s1", "s2"}, Delegate: "provider.example"},
			"own": {Name: "own", Domain: "example.org", Selector: "s2026", File: "/etc/dkimmilter/keys/example.org/s2026.pem", Line: 118,
				Rotate: 36 * time.Hour, Publish: "script"},
		},
		Signing: []*SigningRule{
			{From: "alice@example.com", Keys: []string{"example-rsa"}, Identity: "alice@example.com", Line: 41, KeysLine: 43},
			{From: "*@example.com", Keys: []string{"example-rsa", "example.ed"}, Identity: "@mail.example.com", Line: 46, KeysLine: 48},
			{From: "*@*.example.com", Keys: []string{"example-rsa"}, Line: 51, KeysLine: 53},
			{From: "x-*@example.*", Keys: []string{"example-rsa"}, Line: 55, KeysLine: 57},
			{From: "*", Keys: []string{"any-domain"}, Identity: "@%", Line: 59, KeysLine: 61},
			{From: "*@*.example.net", Keys: []string{"hosted"}, Line: 105, KeysLine: 107},
		},
		Verify: Verify{MinRSABits: 2048, MaxSignatures: 4},
		DNS: DNS{
			Nameservers: []string{"127.0.0.1:5353", "[::1]:53", "192.0.2.53:53", "[2001:db8::53]:5300"},
			Timeout:     2500 * time.Millisecond,
			MaxStale:    60 * time.Hour,
		},
		Actions: Actions{SignError: Reject, DNSError: Tempfail, BadSignature: Quarantine, KeyNotFound: Discard,
			Policy: Reject, Security: Tempfail, NoSignature: Quarantine, InternalError: Accept},
		Limits:        Limits{MaxSessions: 64, IdleTimeout: 5 * time.Minute, MessageTimeout: time.Hour, MaxHeaders: 200, MaxHeaderBytes: 65536},
		MetricsListen: "127.0.0.1:9180",
		Database: Database{DSN: "host=/run/postgresql dbname=mail user=dkimmilter", MaxConns: 3,
			QueryTimeout: 750 * time.Millisecond, CacheSize: 500, CacheTTL: 30 * time.Second,
			SendersQuery: "SELECT allowed FROM dkim_senders WHERE login = $1"},
		Publishers: map[string]*Publisher{
			"provider": {Name: "provider", Line: 125, Method: "rfc2136", Server: "ns1.provider.example:53", Zone: "provider.example",
				TSIGKey: filepath.Join(dir, "tsig.key"), TTL: time.Minute, Timeout: 10 * time.Second},
			"script": {Name: "script", Line: 132, Method: "command", Command: []string{"/usr/local/bin/dns-api", "--account", "mail"},
				TTL: 5 * time.Minute, Timeout: 30 * time.Second},
		},
		Rotation: Rotation{StateDir: "/srv/dkim/state", Margin: 36 * time.Hour, RevokedFor: 72 * time.Hour,
			CheckInterval: 30 * time.Second, Retry: 10 * time.Second, RetryMax: 15 * time.Minute},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got\n%+v\nwant\n%+v", cfg, want)
		for _, n := range cfg.KeyNames() {
			t.Logf("key %+v", *cfg.Keys[n])
		}
		for _, r := range cfg.Signing {
			t.Logf("rule %+v", *r)
		}
		for n, p := range cfg.Publishers {
			t.Logf("publisher %s %+v", n, *p)
		}
	}
	if !cfg.Mode.Signs() || !cfg.Mode.Verifies() || cfg.Mode.String() != "sv" {
		t.Error("mode sv: sign and verify should be enabled")
	}
	if got := cfg.KeyNames(); !reflect.DeepEqual(got, []string{"any-domain", "customer", "example-rsa", "example.ed", "hosted", "own"}) {
		t.Errorf("KeyNames() = %q", got)
	}
	if got := cfg.Where(22); got != "testdata/full.toml:22" {
		t.Errorf("Where(22) = %q", got)
	}
}

// TestBad runs every file in testdata/bad through Parse. Each starts with
// "# want: REGEXP" lines, and each regexp must match a line of the error.
func TestBad(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.toml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no bad configs: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var wants []*regexp.Regexp
			for _, line := range strings.Split(string(data), "\n") {
				if re, ok := strings.CutPrefix(line, "# want: "); ok {
					wants = append(wants, regexp.MustCompile("(?m)"+re))
				}
			}
			if len(wants) == 0 {
				t.Fatal("no # want: lines")
			}
			// Messages name the file as given, so parse it by base name.
			cfg, err := Parse(filepath.Base(file), data)
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", cfg)
			}
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error is %T, want Errors", err)
			}
			msg := err.Error()
			for _, re := range wants {
				if !re.MatchString(msg) {
					t.Errorf("no error matches %q", re)
				}
			}
			if t.Failed() {
				t.Logf("errors:\n%s", msg)
			}
			for i := 1; i < len(errs); i++ {
				if a, b := errs[i-1].Line, errs[i].Line; b != 0 && (a == 0 || a > b) {
					t.Errorf("errors not in file order:\n%s", msg)
				}
			}
		})
	}
}

// TestExample checks the example config shipped in the README: it parses,
// it says what it is meant to say, and every commented-out option shows
// the real default.
func TestExample(t *testing.T) {
	cfg, err := Load("example.toml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "unix:/var/spool/postfix/dkimmilter/dkimmilter.sock" || cfg.AuthservID != "mx.example.com" {
		t.Errorf("listen %q, authserv_id %q", cfg.Listen, cfg.AuthservID)
	}
	if got := cfg.KeyNames(); !reflect.DeepEqual(got, []string{"example-ed", "example-rsa"}) {
		t.Errorf("keys %q", got)
	}
	if k := cfg.Keys["example-ed"]; k.File != "/etc/dkimmilter/keys/example.com/s2026e.pem" || k.Selector != "s2026e" {
		t.Errorf("example-ed = %+v", *k)
	}
	if len(cfg.Signing) != 1 || cfg.Signing[0].From != "*@example.com" ||
		!reflect.DeepEqual(cfg.Signing[0].Keys, []string{"example-rsa", "example-ed"}) {
		t.Errorf("signing rules: %+v", cfg.Signing)
	}

	// Each "#key = value" line in a table with defaults must parse, on its
	// own, to Default(): the example cannot drift from the code.
	data, _ := os.ReadFile("example.toml")
	lines := strings.Split(string(data), "\n")
	assign := regexp.MustCompile(`^#([a-z_]+) *= *(.*)$`)
	seen := map[string]bool{}
	table := ""
	for i := 0; i < len(lines); i++ {
		if strings.HasPrefix(lines[i], "[") {
			table = strings.Trim(lines[i], "[]")
		}
		if h, ok := strings.CutPrefix(lines[i], "#[publish."); ok {
			table = "publish." + strings.TrimSuffix(h, "]")
		}
		m := assign.FindStringSubmatch(lines[i])
		if m == nil || table == "keys.example-ed" || table == "signing" {
			continue
		}
		if strings.HasPrefix(table, "publish.") {
			checkExamplePublisher(t, i+1, table, m[1], m[2])
			seen["publish."+m[1]] = true
			continue
		}
		value := m[2]
		for strings.HasPrefix(value, "[") && !strings.Contains(value, "]") && i+1 < len(lines) {
			i++
			value += "\n" + strings.TrimPrefix(lines[i], "#")
		}
		doc := m[1] + " = " + value + "\n"
		if table != "" {
			doc = "[" + table + "]\n" + doc
		}
		got, err := Parse("", []byte(doc))
		if err != nil {
			t.Errorf("example line %d: %v", i+1, err)
			continue
		}
		got.File = ""
		if !reflect.DeepEqual(got, Default()) {
			t.Errorf("example line %d: %s is not the default", i+1, doc)
		}
		seen[strings.TrimPrefix(table+"."+m[1], ".")] = true
	}
	// The keys' options have no defaults to show, but each is shown.
	for name := range fileSchema.fields["keys"].anyKey.fields {
		if !regexp.MustCompile(`(?m)^#?` + name + ` *=`).Match(data) {
			t.Errorf("example.toml shows no [keys.NAME] table with %s", name)
		}
	}
	for name, s := range fileSchema.fields {
		if name == "keys" || name == "signing" {
			continue // no defaults: the tables are examples
		}
		opts := []string{name}
		if s.anyKey != nil {
			s = s.anyKey // [publish.NAME]: every key of the table
		}
		if s.fields != nil {
			opts = nil
			for sub := range s.fields {
				opts = append(opts, name+"."+sub)
			}
		}
		for _, o := range opts {
			if !seen[o] {
				t.Errorf("example.toml does not show the default of %s", o)
			}
		}
	}
}

// checkExamplePublisher checks one "#key = value" line of a commented
// [publish.NAME] example: a method or command is an example; every other
// value must be the default.
func checkExamplePublisher(t *testing.T, line int, table, key, value string) {
	t.Helper()
	doc := "[" + table + "]\n" + key + " = " + value + "\n"
	switch {
	case key == "command":
		doc += "method = \"command\"\n"
	case key == "method" && value == `"command"`:
		doc += "command = [\"/bin/true\"]\n"
	case key != "method":
		doc += "method = \"rfc2136\"\n"
	}
	cfg, err := Parse("", []byte(doc))
	if err != nil {
		t.Errorf("example line %d: %v", line, err)
		return
	}
	p := cfg.Publishers[strings.TrimPrefix(table, "publish.")]
	if key == "method" || key == "command" {
		return
	}
	if p.Server != "" || p.Zone != "" || p.TSIGKey != "" || p.TTL != DefaultPublishTTL || p.Timeout != DefaultPublishTimeout {
		t.Errorf("example line %d: %s is not the default: %+v", line, doc, *p)
	}
}

// Every [actions] key takes every action, and sets its own field only.
func TestEveryActionForEveryOutcome(t *testing.T) {
	field := map[string]func(*Actions) *Action{
		"sign_error":      func(a *Actions) *Action { return &a.SignError },
		"dns_error":       func(a *Actions) *Action { return &a.DNSError },
		"bad_signature":   func(a *Actions) *Action { return &a.BadSignature },
		"key_not_found":   func(a *Actions) *Action { return &a.KeyNotFound },
		"policy":          func(a *Actions) *Action { return &a.Policy },
		"security":        func(a *Actions) *Action { return &a.Security },
		"no_signature":    func(a *Actions) *Action { return &a.NoSignature },
		"internal_error":  func(a *Actions) *Action { return &a.InternalError },
		"sender_mismatch": func(a *Actions) *Action { return &a.SenderMismatch },
	}
	if n := len(fileSchema.fields["actions"].fields); n != len(field) {
		t.Fatalf("[actions] has %d keys, the test knows %d", n, len(field))
	}
	for key, get := range field {
		for _, a := range AllActions {
			cfg, err := Parse("a.toml", []byte("[actions]\n"+key+" = \""+a.String()+"\"\n"))
			if err != nil {
				t.Errorf("%s = %q: %v", key, a, err)
				continue
			}
			want := Default().Actions
			*get(&want) = a
			if cfg.Actions != want {
				t.Errorf("%s = %q: got %+v, want %+v", key, a, cfg.Actions, want)
			}
		}
	}
	if got := []string{Accept.String(), Tempfail.String(), Reject.String(), Quarantine.String(), Discard.String(), Action(9).String()}; strings.Join(got, " ") != "accept tempfail reject quarantine discard action9" {
		t.Errorf("action words %q", got)
	}
}

func TestLoadMissing(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "none.toml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want fs.ErrNotExist", err)
	}
}

func TestErrorFormat(t *testing.T) {
	for _, tc := range []struct {
		e    Error
		want string
	}{
		{Error{File: "f.toml", Line: 3, Key: "listen", Msg: "bad"}, "f.toml:3: listen: bad"},
		{Error{File: "f.toml", Key: "listen", Msg: "bad"}, "f.toml: listen: bad"},
		{Error{File: "f.toml", Line: 3, Msg: "bad"}, "f.toml:3: bad"},
	} {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("%+v: got %q, want %q", tc.e, got, tc.want)
		}
	}
	errs := Errors{{File: "a", Line: 1, Msg: "x"}, {File: "a", Line: 2, Msg: "y"}}
	if got := errs.Error(); got != "a:1: x\na:2: y" {
		t.Errorf("Errors.Error() = %q", got)
	}
	var e *Error
	if !errors.As(error(errs), &e) || e.Line != 1 {
		t.Errorf("errors.As(Errors, *Error) = %v", e)
	}
	if got := Default().Where(3); got != "defaults" {
		t.Errorf("Default().Where = %q", got)
	}
}

func TestParseRelativeKeyFile(t *testing.T) {
	doc := "[keys.k]\ndomain = \"example.com\"\nselector = \"s\"\nfile = \"k/%.pem\"\n"
	cfg, err := Parse("/etc/dkimmilter/dkimmilter.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Keys["k"].File; got != "/etc/dkimmilter/k/%.pem" {
		t.Errorf("file = %q", got)
	}
}

func TestSuggest(t *testing.T) {
	names := []string{"example-ed", "example-rsa", "other"}
	for _, tc := range []struct{ name, want string }{
		{"exmple-ed", ` (did you mean "example-ed"?)`},
		{"Example-RSA", ` (did you mean "example-rsa"?)`},
		{"example-rsa", ""},
		{"unrelated", ""},
		{"othr", ` (did you mean "other"?)`},
	} {
		if got := Suggest(tc.name, names); got != tc.want {
			t.Errorf("Suggest(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}
	long := strings.Repeat("a", 100)
	if got := editDistance(long, long+"bc"); got != 2 {
		t.Errorf("editDistance of long names = %d", got)
	}
}
