package dnsupdate

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/miekg/dns"
)

func TestParseTSIGKey(t *testing.T) {
	tests := []struct {
		name, text string
		wantName   string
		wantAlg    string
		wantErr    string
	}{
		{name: "tsig-keygen", text: "key \"dkim-update\" {\n\talgorithm hmac-sha256;\n\tsecret \"MTIzNA==\";\n};\n",
			wantName: "dkim-update.", wantAlg: dns.HmacSHA256},
		{name: "one line, upper case name", text: `key "Dkim.Example." { algorithm hmac-sha512; secret "MTIzNA=="; };`,
			wantName: "dkim.example.", wantAlg: dns.HmacSHA512},
		{name: "unquoted name, comments", text: "# made by hand\nkey k1 { // the key\n algorithm HMAC-SHA384; /* strong\n enough */ secret \"MTIzNA==\"; };",
			wantName: "k1.", wantAlg: dns.HmacSHA384},
		{name: "hmac-sha1", text: `key "k" { secret "MTIzNA=="; algorithm hmac-sha1; };`, wantName: "k.", wantAlg: dns.HmacSHA1},
		{name: "empty", text: "", wantErr: "no key statement"},
		{name: "not a key", text: `zone "x" { };`, wantErr: `"zone" where a key statement should start`},
		{name: "md5", text: `key "k" { algorithm hmac-md5; secret "MTIzNA=="; };`, wantErr: `algorithm "hmac-md5" is not supported`},
		{name: "bad base64", text: `key "k" { algorithm hmac-sha256; secret "not base64!"; };`, wantErr: "line 1: the secret is not base64"},
		{name: "no secret", text: `key "k" { algorithm hmac-sha256; };`, wantErr: `key "k" has no secret`},
		{name: "no algorithm", text: `key "k" { secret "MTIzNA=="; };`, wantErr: `key "k" has no algorithm`},
		{name: "unknown option", text: "key \"k\" {\n algorithm hmac-sha256;\n secrets \"MTIzNA==\"; };", wantErr: `line 3: unknown key option "secrets"`},
		{name: "missing semicolon", text: `key "k" { algorithm hmac-sha256 secret "MTIzNA=="; };`, wantErr: "want ; after algorithm hmac-sha256"},
		{name: "no closing brace", text: `key "k" { algorithm hmac-sha256; secret "MTIzNA==";`, wantErr: "no closing }"},
		{name: "no final semicolon", text: `key "k" { algorithm hmac-sha256; secret "MTIzNA=="; }`, wantErr: "want ; after }"},
		{name: "two keys", text: `key "a" { algorithm hmac-sha256; secret "MTIzNA=="; }; key "b" { algorithm hmac-sha256; secret "MTIzNA=="; };`, wantErr: "a second key statement"},
		{name: "open quote", text: `key "k { };`, wantErr: "quote never closed"},
		{name: "open comment", text: `/* key`, wantErr: "comment /* never closed"},
		{name: "bad name", text: `key "a..b" { algorithm hmac-sha256; secret "MTIzNA=="; };`, wantErr: `key name "a..b" is not a valid DNS name`},
		{name: "no name", text: `key { algorithm hmac-sha256; };`, wantErr: "has no name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := ParseTSIGKey(tt.text)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseTSIGKey = %+v, %v; want error with %q", k, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if k.Name != tt.wantName || k.Algorithm != tt.wantAlg || k.Secret != "MTIzNA==" {
				t.Errorf("ParseTSIGKey = %+v, want name %s, algorithm %s", k, tt.wantName, tt.wantAlg)
			}
		})
	}
}

func TestReadTSIGKey(t *testing.T) {
	k, err := ReadTSIGKey("testdata/tsig-keygen.key")
	if err != nil {
		t.Fatal(err)
	}
	if k.DisplayName() != "dkim-update" || k.AlgorithmName() != "hmac-sha256" || k.File != "testdata/tsig-keygen.key" {
		t.Errorf("ReadTSIGKey = %+v", k)
	}
	if _, err := ReadTSIGKey("testdata/none.key"); err == nil || !strings.Contains(err.Error(), "testdata/none.key") {
		t.Errorf("missing file: %v, want an error naming it", err)
	}
	bad := filepath.Join(t.TempDir(), "bad.key")
	os.WriteFile(bad, []byte("key x;"), 0o600)
	if _, err := ReadTSIGKey(bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("bad file: %v, want an error naming it", err)
	}
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name    string
		p       *config.Publisher
		wantErr string
	}{
		{name: "nil", p: nil, wantErr: "no [publish.NAME] table"},
		{name: "method", p: &config.Publisher{Name: "x", Method: "nsupdate"}, wantErr: `[publish.x] method "nsupdate"`},
		{name: "no command", p: &config.Publisher{Name: "x", Method: "command"}, wantErr: `[publish.x] method "command" needs command`},
		{name: "key file", p: &config.Publisher{Name: "x", Method: "rfc2136", TSIGKey: "/nonexistent/k.key"}, wantErr: "[publish.x] tsig_key: TSIG key file: open /nonexistent/k.key"},
		{name: "zone", p: &config.Publisher{Name: "x", Method: "rfc2136", Zone: "a..b"}, wantErr: `[publish.x] zone "a..b" is not a DNS name`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := New(tt.p, nil, time.Second)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New = %v, %v; want error with %q", p, err, tt.wantErr)
			}
		})
	}
}

// record is a 2048-bit RSA key's record: longer than one string.
var record = "v=DKIM1; k=rsa; p=" + strings.Repeat("MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA", 9)

func TestDescribeRFC2136(t *testing.T) {
	p, err := New(&config.Publisher{Name: "bind", Method: "rfc2136", Server: "192.0.2.53", Zone: "Example.com",
		TSIGKey: "testdata/tsig-keygen.key", TTL: 5 * time.Minute, Timeout: time.Second}, nil, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	name := "s1._domainkey.example.com"
	tests := []struct {
		c    Change
		want []string // lines, in order
	}{
		{c: Change{Action: Add, Name: name, Value: record}, want: []string{
			"; signed with TSIG key dkim-update (hmac-sha256); to send it by hand: nsupdate -k testdata/tsig-keygen.key",
			"server 192.0.2.53 53", "zone example.com.",
			"prereq nxrrset s1._domainkey.example.com. TXT",
			"update delete s1._domainkey.example.com. TXT",
			`update add s1._domainkey.example.com. 300 TXT "` + record[:255] + `" "` + record[255:] + `"`,
			"send"}},
		{c: Change{Action: Revoke, Name: name, Value: "v=DKIM1; k=rsa; p=", Expect: `v=DKIM1; n="x"; p=Y`}, want: []string{
			`prereq yxrrset s1._domainkey.example.com. TXT "v=DKIM1; n=\"x\"; p=Y"`,
			"update delete s1._domainkey.example.com. TXT",
			`update add s1._domainkey.example.com. 300 TXT "v=DKIM1; k=rsa; p="`, "send"}},
		{c: Change{Action: Delete, Name: name}, want: []string{
			"zone example.com.", "update delete s1._domainkey.example.com. TXT", "send"}},
	}
	for _, tt := range tests {
		got := p.Describe(tt.c)
		lines := strings.Split(got, "\n")
		i := 0
		for _, l := range lines {
			if i < len(tt.want) && l == tt.want[i] {
				i++
			}
		}
		if i < len(tt.want) {
			t.Errorf("Describe(%s) =\n%s\nmissing line %q", tt.c.Action, got, tt.want[i])
		}
		if strings.Contains(got, "1S4L2t4ilSm1KyyOvuMc2UbZYBcSyCQ8tuDIzE1f") {
			t.Errorf("Describe shows the secret:\n%s", got)
		}
		if tt.c.Action == Delete && strings.Contains(got, "prereq") || tt.c.Action == Delete && strings.Contains(got, "update add") {
			t.Errorf("Describe(delete) without Expect has a prerequisite or an add:\n%s", got)
		}
	}
}

func TestSplitEscape(t *testing.T) {
	for _, v := range []string{"", "v=DKIM1; p=", record, `a"b\c` + "\t\xe9", strings.Repeat("x", 255), strings.Repeat("y", 256)} {
		strs := split(v)
		var joined strings.Builder
		for _, s := range strs {
			u := unescape(s)
			if len(u) > maxString {
				t.Errorf("split(%.20q…): a string of %d bytes", v, len(u))
			}
			joined.WriteString(u)
		}
		if joined.String() != v {
			t.Errorf("split then unescape(%q) = %q", v, joined.String())
		}
		// miekg packs the presentation form back into the same bytes.
		rr := txtRR("x.example.", 60, v)
		buf := make([]byte, 4096)
		n, err := dns.PackRR(rr, buf, 0, nil, false)
		if err != nil {
			t.Fatal(err)
		}
		back, _, err := dns.UnpackRR(buf[:n], 0)
		if err != nil {
			t.Fatal(err)
		}
		if got := value(back.(*dns.TXT)); got != v {
			t.Errorf("packed and unpacked %q = %q", v, got)
		}
	}
}

func TestMessage(t *testing.T) {
	u := &rfc2136{table: "publish.t", ttl: 300}
	name := "s1._domainkey.example.com."
	tests := []struct {
		c        Change
		wantPre  string // the prerequisite RR, as miekg prints it; "" none
		wantAdds int
	}{
		{c: Change{Action: Add, Name: name, Value: "v=DKIM1; p=A"}, wantPre: "s1._domainkey.example.com.\t0\tNONE\tTXT\t", wantAdds: 1},
		{c: Change{Action: Revoke, Name: name, Value: "v=DKIM1; p=", Expect: "v=DKIM1; p=A"}, wantPre: "s1._domainkey.example.com.\t0\tIN\tTXT\t\"v=DKIM1; p=A\"", wantAdds: 1},
		{c: Change{Action: Revoke, Name: name, Value: "v=DKIM1; p="}, wantAdds: 1},
		{c: Change{Action: Delete, Name: name, Expect: "v=DKIM1; p="}, wantPre: "s1._domainkey.example.com.\t0\tIN\tTXT\t\"v=DKIM1; p=\""},
		{c: Change{Action: Delete, Name: name}},
	}
	for _, tt := range tests {
		m := u.message("example.com.", tt.c, prereqs(name, tt.c))
		if m.Opcode != dns.OpcodeUpdate || m.Question[0].Name != "example.com." || m.Question[0].Qtype != dns.TypeSOA {
			t.Errorf("%v: not an UPDATE of example.com: %v", tt.c, m)
		}
		pre := ""
		if len(m.Answer) == 1 {
			pre = m.Answer[0].String()
		} else if len(m.Answer) > 1 {
			t.Errorf("%v: %d prerequisites", tt.c, len(m.Answer))
		}
		if pre != tt.wantPre {
			t.Errorf("%v: prerequisite %q, want %q", tt.c, pre, tt.wantPre)
		}
		// first the TXT RRset's deletion (class ANY), then the addition
		if len(m.Ns) != 1+tt.wantAdds || m.Ns[0].Header().Class != dns.ClassANY || m.Ns[0].Header().Rrtype != dns.TypeTXT {
			t.Errorf("%v: update section %v", tt.c, m.Ns)
		}
		if tt.wantAdds == 1 {
			if rr, ok := m.Ns[1].(*dns.TXT); !ok || rr.Hdr.Ttl != 300 || value(rr) != tt.c.Value {
				t.Errorf("%v: added %v", tt.c, m.Ns[1])
			}
		}
	}
}

// script writes an executable shell script in a temporary directory.
func script(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "publish.sh")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCommand(t *testing.T) {
	change := Change{Action: Revoke, Name: "s1._domainkey.example.com", Value: "v=DKIM1; p=", Expect: "v=DKIM1; p=OLD"}
	tests := []struct {
		name     string
		body     string
		timeout  time.Duration
		wantOut  []string // substrings of the output
		wantErr  []string // substrings of the error; none: success
		maxBytes int
	}{
		{name: "success", body: `echo "args: $*"; echo "env: $DKIMMILTER_ACTION $DKIMMILTER_NAME $DKIMMILTER_TTL [$DKIMMILTER_VALUE] [$DKIMMILTER_EXPECT]"; echo "to stderr" >&2`,
			wantOut: []string{"args: --zone example.com revoke s1._domainkey.example.com v=DKIM1; p=\n",
				"env: revoke s1._domainkey.example.com 120 [v=DKIM1; p=] [v=DKIM1; p=OLD]", "to stderr"}},
		{name: "failure", body: "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo line $i; done; echo 'API says: 403 forbidden' >&2; exit 3",
			wantErr: []string{"[publish.api] revoke s1._domainkey.example.com:", "failed: exit status 3", "API says: 403 forbidden", "line 4\n"}},
		{name: "timeout", body: "echo started; sleep 30", timeout: 300 * time.Millisecond,
			wantErr: []string{"was stopped after the timeout of 300ms", "raise timeout in [publish.api]", "started"}},
		{name: "child keeps the pipe open", body: "(sleep 30 &) ; sleep 30", timeout: 300 * time.Millisecond,
			wantErr: []string{"was stopped after the timeout"}},
		{name: "huge output", body: "yes 0123456789 | head -c 1000000; echo; echo the end; exit 1",
			wantOut: []string{"bytes of output left out]", "the end"}, wantErr: []string{"exit status 1", "the end"}, maxBytes: maxOutput + 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			timeout := tt.timeout
			if timeout == 0 {
				timeout = 10 * time.Second
			}
			p, err := New(&config.Publisher{Name: "api", Method: "command", Command: []string{script(t, tt.body), "--zone", "example.com"},
				TTL: 2 * time.Minute, Timeout: timeout}, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			out, err := p.Apply(context.Background(), change)
			if took := time.Since(start); took > timeout+5*time.Second {
				t.Errorf("Apply took %s with a timeout of %s", took, timeout)
			}
			for _, w := range tt.wantOut {
				if !strings.Contains(out, w) {
					t.Errorf("output %.300q lacks %q", out, w)
				}
			}
			if tt.maxBytes > 0 && len(out) > tt.maxBytes {
				t.Errorf("output of %d bytes, want at most %d", len(out), tt.maxBytes)
			}
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Apply: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Apply succeeded, want an error (output %q)", out)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "line 3\n") {
				t.Errorf("error shows more than the last lines: %q", err)
			}
		})
	}
}

func TestCommandMissingProgram(t *testing.T) {
	p, err := New(&config.Publisher{Name: "api", Method: "command", Command: []string{"/nonexistent/dns-tool"}}, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Apply(context.Background(), Change{Action: Add, Name: "s._domainkey.example.com", Value: "v=DKIM1; p=A"})
	if err == nil || !strings.Contains(err.Error(), "running /nonexistent/dns-tool") || errors.Is(err, ErrChanged) {
		t.Errorf("Apply = %v, want an error naming the program", err)
	}
}

func TestDescribeCommand(t *testing.T) {
	p, err := New(&config.Publisher{Name: "api", Method: "command", Command: []string{"/usr/local/bin/dns tool", "--it's"}, TTL: time.Minute}, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := p.Describe(Change{Action: Add, Name: "s1._domainkey.example.com", Value: "v=DKIM1; p=ABC"})
	want := `'/usr/local/bin/dns tool' '--it'\''s' add s1._domainkey.example.com 'v=DKIM1; p=ABC'` + "\n"
	if !strings.HasSuffix(got, want) || !strings.Contains(got, "_TTL=60") {
		t.Errorf("Describe =\n%s\nwant it to end with\n%s", got, want)
	}
}
