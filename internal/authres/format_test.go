package authres

import (
	"strings"
	"testing"
)

func TestFormat(t *testing.T) {
	pass := DKIM{Result: "pass", Comment: "2048-bit rsa key", Domain: "example.com", Identity: "@example.com", Selector: "s2026r",
		Algorithm: "rsa-sha256", B: "Zr5u1P8xABCDEFGH"}
	fail := DKIM{Result: "fail", Reason: "body hash did not verify", Comment: "1024-bit rsa key", Domain: "lists.example.org", Identity: "@lists.example.org",
		Selector: "k1", Algorithm: "rsa-sha256", B: "Yh7Q/A2cXYZ"}
	tests := []struct {
		name string
		vs   []DKIM
		want string
	}{
		{"none", nil, " mx.example.com; dkim=none"},
		{"pass and fail", []DKIM{pass, fail}, " mx.example.com;\r\n" +
			"\tdkim=pass (2048-bit rsa key) header.d=example.com\r\n" +
			"\theader.i=@example.com header.s=s2026r header.a=rsa-sha256\r\n" +
			"\theader.b=Zr5u1P8x;\r\n" +
			"\tdkim=fail reason=\"body hash did not verify\" (1024-bit rsa key)\r\n" +
			"\theader.d=lists.example.org header.i=@lists.example.org header.s=k1\r\n" +
			"\theader.a=rsa-sha256 header.b=\"Yh7Q/A2c\""},
	}
	for _, tt := range tests {
		if got := Format("mx.example.com", tt.vs); got != tt.want {
			t.Errorf("%s:\ngot  %q\nwant %q", tt.name, got, tt.want)
		}
	}
}

// header.b is at least 8 characters and long enough to tell signatures
// apart (RFC 6008 §4).
func TestUniqueB(t *testing.T) {
	vs := []DKIM{{B: "AAAAAAAAAA1xyz"}, {B: "AAAAAAAAAA2xyz"}, {B: "BBBBBBBBBBB"}, {B: "short"}}
	got := uniqueB(vs)
	want := []string{"AAAAAAAAAA1", "AAAAAAAAAA2", "BBBBBBBB", "short"}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("uniqueB[%d] = %q, want %q", i, got[i], want[i])
		}
	}
}

// Text from a message cannot break out of the A-R: no CR or LF, quotes
// escaped, tspecials quoted.
func TestFormatHostileValues(t *testing.T) {
	v := DKIM{Result: "permerror", Reason: "bad \"x\"\r\nX-Injected: yes",
		Domain: "evil\r\nX-Injected: 1", Identity: "a b@c", Selector: "s;x", Algorithm: "rsa-sha256", B: "abc\\def"}
	got := Format("mx.example.com", []DKIM{v})
	for _, l := range strings.Split(got, "\r\n") {
		if strings.ContainsAny(l, "\r\n") {
			t.Errorf("bare CR or LF in %q", l)
		}
		if strings.HasPrefix(l, "X-Injected") {
			t.Errorf("injected a field: %q", got)
		}
	}
	for _, want := range []string{`reason="bad \"x\"??X-Injected: yes"`, `header.s="s;x"`, `header.b="abc\\def"`, `header.i="a b@c"`} {
		if !strings.Contains(strings.ReplaceAll(got, "\r\n\t", " "), want) {
			t.Errorf("missing %s in %q", want, got)
		}
	}
}

// Property values are cut at 320 bytes, not 64: header.d may be a
// 253-byte domain, and a cut one hands a downstream DMARC check the wrong
// domain; the authserv-id is never cut. Regression (found by
// FuzzAuthResults).
func TestFormatLongValues(t *testing.T) {
	id := strings.Repeat("mx", 40) + ".example.com"
	d := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + ".example.com"
	v := DKIM{Result: "pass", Domain: d, Identity: "@" + d, Selector: "s", Algorithm: "rsa-sha256", B: "Zr5u1P8x"}
	got := strings.ReplaceAll(Format(id, []DKIM{v}), "\r\n\t", " ")
	for _, want := range []string{" " + id + ";", " header.d=" + d + " ", " header.i=@" + d + " "} {
		if !strings.Contains(got, want) {
			t.Errorf("%q lacks %q", got, want)
		}
	}
}

// Two forged b= values of 100 KB that differ only at their end: header.b
// is their shared prefix and one more character, found in linear time.
// Regression: the prefix grew one character at a time, each compared
// anew, and took 1.4 s here (minutes for a 1 MiB field).
func TestUniqueBLongSharedPrefix(t *testing.T) {
	a := strings.Repeat("A", 100000)
	got := uniqueB([]DKIM{{B: a + "B"}, {B: a + "C"}, {B: a + "C"}})
	if got[0] != a+"B" || got[1] != a+"C" || got[2] != a+"C" {
		t.Errorf("uniqueB: lengths %d %d %d", len(got[0]), len(got[1]), len(got[2]))
	}
}
