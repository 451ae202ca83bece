package dkim

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

func TestParseTagList(t *testing.T) {
	tests := []struct {
		in   string
		want map[string]string
		err  error
	}{
		{"v=1; a=rsa-sha256", map[string]string{"v": "1", "a": "rsa-sha256"}, nil},
		{" v = 1 ;\r\n\ta=x;", map[string]string{"v": "1", "a": "x"}, nil},
		{"b=ab cd\r\n ef; h=From : To", map[string]string{"b": "ab cd\r\n ef", "h": "From : To"}, nil},
		{"a=1;;b=2", map[string]string{"a": "1", "b": "2"}, nil},
		{"a=", map[string]string{"a": ""}, nil},
		{"", map[string]string{}, nil},
		{"a=1; a=2", nil, errDuplicateTag},
		{"a=1; b", nil, errTagSyntax},
		{"1a=x", nil, errTagSyntax},
		{"a b=x", nil, errTagSyntax},
		{"=x", nil, errTagSyntax},
	}
	for _, tt := range tests {
		got, err := ParseTagList(tt.in)
		if tt.err != nil {
			if !errors.Is(err, tt.err) {
				t.Errorf("ParseTagList(%q) error = %v, want %v", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseTagList(%q): %v", tt.in, err)
			continue
		}
		if len(got) != len(tt.want) {
			t.Errorf("ParseTagList(%q) = %v, want %v", tt.in, got, tt.want)
		}
		for k, v := range tt.want {
			if g, ok := got.Get(k); !ok || g != v {
				t.Errorf("ParseTagList(%q)[%s] = %q, want %q", tt.in, k, g, v)
			}
		}
	}
}

// Start and End cover the whole value with its surrounding white space,
// which is what RFC 6376 §3.7 removes from b=.
func TestTagOffsets(t *testing.T) {
	s := "a=1; b= AB\r\n CD ; bh=x"
	tags, err := ParseTagList(s)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := tags.Lookup("b")
	if got := s[:b.Start] + s[b.End:]; got != "a=1; b=; bh=x" {
		t.Errorf("b= removed: %q", got)
	}
}

func TestDecodeQuotedPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"@example.com":        "@example.com",
		"joe=40x@example.com": "joe@x@example.com",
		"a =3D\r\n b":         "a=b",
	} {
		if got, err := decodeQuotedPrintable(in); err != nil || got != want {
			t.Errorf("decodeQuotedPrintable(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := decodeQuotedPrintable("a=4"); err == nil {
		t.Error("truncated escape accepted")
	}
}

func TestParseKeyRecord(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	spki, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	pkcs1 := x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	b64 := base64.StdEncoding.EncodeToString
	spkiB64 := b64(spki)
	folded := spkiB64[:40] + " \t" + spkiB64[40:]

	tests := []struct {
		name, rec string
		bits      int
		keyType   string
		err       string // substring; "" for success
		notKey    bool
		testing   bool
	}{
		{"rsa spki", "v=DKIM1; k=rsa; p=" + spkiB64, 2048, "rsa", "", false, false},
		{"rsa default k", "p=" + spkiB64, 2048, "rsa", "", false, false},
		{"rsa pkcs1", "v=DKIM1; p=" + b64(pkcs1), 2048, "rsa", "", false, false},
		{"folded p", "v=DKIM1; p=" + folded, 2048, "rsa", "", false, false},
		{"ed25519", "v=DKIM1; k=ed25519; p=" + b64(edPub), 256, "ed25519", "", false, false},
		{"testing", "v=DKIM1; t=y:s; p=" + spkiB64, 2048, "rsa", "", false, true},
		{"revoked", "v=DKIM1; p=", 0, "rsa", "key revoked", false, false},
		{"bad base64", "v=DKIM1; p=!!!", 0, "rsa", "bad base64", false, false},
		{"cut at 255 bytes", ("v=DKIM1; k=rsa; p=" + spkiB64)[:255], 0, "rsa", "key record cut at 255 bytes", false, false},
		{"cut at 255 bytes, base64 whole", ("v=DKIM1; k=rsa; p=" + spkiB64)[:254] + "=", 0, "rsa", "key record cut at 255 bytes", false, false},
		{"unknown k", "v=DKIM1; k=dsa; p=" + spkiB64, 0, "dsa", "unknown key type k=dsa", false, false},
		{"ed25519 spki", "v=DKIM1; k=ed25519; p=" + spkiB64, 0, "ed25519", "ed25519 key in p=", false, false},
		{"wrong version", "v=DKIM2; p=" + spkiB64, 0, "", "v=DKIM2", true, false},
		{"spf record", "v=spf1 -all", 0, "", "v=spf1", true, false},
		{"no p", "v=DKIM1; k=rsa", 0, "", "no p= tag", true, false},
		{"garbage", "hello world", 0, "", "", true, false},
	}
	for _, tt := range tests {
		r, err := ParseKeyRecord(tt.rec)
		if tt.notKey {
			if !errors.Is(err, ErrNotKeyRecord) || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s: err = %v, want not-a-key %q", tt.name, err, tt.err)
			}
			continue
		}
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s: err = %v, want %q", tt.name, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if r.Bits != tt.bits || r.KeyType != tt.keyType || r.Testing() != tt.testing {
			t.Errorf("%s: bits %d type %s testing %v", tt.name, r.Bits, r.KeyType, r.Testing())
		}
	}
}

func TestKeyRecordPolicy(t *testing.T) {
	r := &KeyRecord{Hashes: []string{"sha1"}, Services: []string{"other"}}
	if r.AllowsHash("sha256") || r.AllowsEmail() {
		t.Error("h=sha1 / s=other should exclude sha256 / email")
	}
	r = &KeyRecord{}
	if !r.AllowsHash("sha256") || !r.AllowsEmail() {
		t.Error("absent h= and s= allow everything")
	}
}
