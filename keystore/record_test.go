package keystore

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/dkimmilter/dkimmilter/internal/dkim"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
)

func mustWrap(t *testing.T, k any) *PrivateKey {
	t.Helper()
	pk, err := wrapKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pk
}

// The zone line round-trips: a zone parser (miekg/dns) reads it, every
// character-string it puts on the wire is at most 255 bytes, the strings
// joined are the record, and the record holds the public half of the key.
func TestZoneLineRoundTrip(t *testing.T) {
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	tests := []struct {
		name       string
		key        *PrivateKey
		kt         string
		minStrings int
	}{
		{"rsa1024", mustWrap(t, testkit.RSAKey(1024)), "rsa", 1},
		{"rsa2048", mustWrap(t, testkit.RSAKey(2048)), "rsa", 3},
		{"rsa4096", mustWrap(t, testkit.RSAKey(4096)), "rsa", 3},
		{"ed25519", mustWrap(t, ed), "ed25519", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			value := Record(tt.key)
			if !strings.HasPrefix(value, "v=DKIM1; k="+tt.kt+"; p=") {
				t.Errorf("record %q", value)
			}
			name := dkim.DNSName("s202611", "example.com")
			line := ZoneLine(name, value)
			t.Log(line)
			if !strings.HasPrefix(line, "s202611._domainkey.example.com. IN TXT ( \"v=DKIM1; k="+tt.kt+"; ") {
				t.Errorf("zone line %q", line)
			}
			strs := wireStrings(t, line)
			if len(strs) < tt.minStrings {
				t.Errorf("%d strings, want at least %d", len(strs), tt.minStrings)
			}
			if len(strs) > 1 && strs[0] != "v=DKIM1; k="+tt.kt+"; " {
				t.Errorf("first string %q: the split is not before p=", strs[0])
			}
			joined := strings.Join(strs, "")
			if joined != value {
				t.Fatalf("joined strings differ from the record:\n%s\n%s", joined, value)
			}
			rec, err := dkim.ParseKeyRecord(joined)
			if err != nil {
				t.Fatal(err)
			}
			pub := tt.key.Signer.Public().(interface{ Equal(crypto.PublicKey) bool })
			if !pub.Equal(rec.Key) || rec.KeyType != tt.kt || rec.Bits != tt.key.Bits {
				t.Errorf("record holds another key: %s %d bits", rec.KeyType, rec.Bits)
			}
		})
	}
}

// wireStrings parses a zone line with miekg/dns and returns the
// character-strings of the TXT record as they go on the wire, checking
// each is at most 255 bytes and that the parser did not have to split one.
func wireStrings(t *testing.T, line string) []string {
	t.Helper()
	rr, err := dns.NewRR(line)
	if err != nil {
		t.Fatalf("not valid zone syntax: %v\n%s", err, line)
	}
	txt, ok := rr.(*dns.TXT)
	if !ok {
		t.Fatalf("%T, want TXT", rr)
	}
	if want := strings.Count(line, `" "`) + 1; len(txt.Txt) != want {
		t.Errorf("the parser made %d strings of the %d written: one was over 255 bytes", len(txt.Txt), want)
	}
	buf := make([]byte, 65535)
	off, err := dns.PackRR(rr, buf, 0, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	// Uncompressed owner name, then type, class, TTL, RDLENGTH.
	rdata := buf[len(rr.Header().Name)+1+10 : off]
	var out []string
	for len(rdata) > 0 {
		n := int(rdata[0])
		if n > 255 || 1+n > len(rdata) {
			t.Fatalf("bad rdata")
		}
		out = append(out, string(rdata[1:1+n]))
		rdata = rdata[1+n:]
	}
	return out
}

// Values with characters that a zone file escapes split on the bytes
// the resolver sees, never inside an escape.
func TestTxtStringsEscapes(t *testing.T) {
	quoted := `v=DKIM1; n=say "hi" \ ` + strings.Repeat(`"\`, 150) + "; " // 325 bytes
	tests := []struct {
		name, value string
		want        []string
	}{
		{"short", "v=DKIM1; p=abc", []string{"v=DKIM1; p=abc"}},
		{"exactly 255", "v=DKIM1; p=" + strings.Repeat("A", 244), []string{"v=DKIM1; p=" + strings.Repeat("A", 244)}},
		{"256: split before p=", "v=DKIM1; p=" + strings.Repeat("A", 245), []string{"v=DKIM1; ", "p=" + strings.Repeat("A", 245)}},
		{"long p=", "v=DKIM1; k=rsa; p=" + strings.Repeat("B", 600), []string{"v=DKIM1; k=rsa; ", "p=" + strings.Repeat("B", 253), strings.Repeat("B", 255), strings.Repeat("B", 92)}},
		{"quotes and backslashes", quoted + "p=" + strings.Repeat("C", 300),
			[]string{quoted[:255], quoted[255:], "p=" + strings.Repeat("C", 253), strings.Repeat("C", 47)}},
		{"control and 8-bit", "v=DKIM1; n=\tcaf\xc3\xa9\x01; p=" + strings.Repeat("D", 260), []string{"v=DKIM1; n=\tcaf\xc3\xa9\x01; ", "p=" + strings.Repeat("D", 253), "DDDDDDD"}},
		{"no p=", strings.Repeat("E", 300), []string{strings.Repeat("E", 255), strings.Repeat("E", 45)}},
		{"p= first", "p=" + strings.Repeat("F", 300), []string{"p=" + strings.Repeat("F", 253), strings.Repeat("F", 47)}},
		{"tag ending in p", "v=DKIM1; zp=x; p=" + strings.Repeat("G", 260), []string{"v=DKIM1; zp=x; ", "p=" + strings.Repeat("G", 253), "GGGGGGG"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := txtStrings(tt.value)
			if strings.Join(got, "\x00") != strings.Join(tt.want, "\x00") {
				t.Errorf("txtStrings:\n got %q\nwant %q", got, tt.want)
			}
			if s := wireStrings(t, ZoneLine("k1._domainkey.example.org", tt.value)); strings.Join(s, "\x00") != strings.Join(got, "\x00") {
				t.Errorf("on the wire:\n got %q\nwant %q", s, got)
			}
		})
	}
}

func TestRevokedRecord(t *testing.T) {
	r, err := dkim.ParseKeyRecord(RevokedRecord("ed25519"))
	if r == nil || r.KeyType != "ed25519" || !errors.Is(err, dkim.ErrKeyRevoked) {
		t.Errorf("%+v %v", r, err)
	}
}
