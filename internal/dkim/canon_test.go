package dkim

import (
	"crypto/sha256"
	"encoding/base64"
	"math/rand"
	"strings"
	"testing"
)

func bodyCanon(t *testing.T, c Canon, body string, chunks []int) (string, int64) {
	t.Helper()
	var out strings.Builder
	h := &recorder{b: &out}
	b := NewBodyHasher(c, h, -1)
	p := []byte(body)
	for _, n := range chunks {
		if n > len(p) {
			n = len(p)
		}
		b.Write(p[:n])
		p = p[n:]
	}
	b.Write(p)
	b.Sum()
	return out.String(), b.Length()
}

// recorder is a hash.Hash that keeps what it is fed.
type recorder struct{ b *strings.Builder }

func (r *recorder) Write(p []byte) (int, error) { return r.b.Write(p) }
func (r *recorder) Sum(b []byte) []byte         { return b }
func (r *recorder) Reset()                      {}
func (r *recorder) Size() int                   { return 0 }
func (r *recorder) BlockSize() int              { return 1 }

func TestBodyCanonicalization(t *testing.T) {
	tests := []struct {
		name, in        string
		simple, relaxed string
	}{
		{"empty", "", "\r\n", ""},
		{"only empty lines", "\r\n\r\n\r\n", "\r\n", ""},
		{"no final CRLF", "abc", "abc\r\n", "abc\r\n"},
		{"trailing empty lines", "abc\r\n\r\n\r\n", "abc\r\n", "abc\r\n"},
		{"inner empty lines kept", "a\r\n\r\nb\r\n", "a\r\n\r\nb\r\n", "a\r\n\r\nb\r\n"},
		{"wsp", " C \r\nD \t E\r\n\r\n\r\n", " C \r\nD \t E\r\n", " C\r\nD E\r\n"},
		{"wsp-only trailing line", "a\r\n  \r\n", "a\r\n  \r\n", "a\r\n"},
		{"bare LF", "a\nb\n\n", "a\r\nb\r\n", "a\r\nb\r\n"},
		{"bare CR is content", "a\rb\r\n", "a\rb\r\n", "a\rb\r\n"},
		{"CR at end", "a\r", "a\r\r\n", "a\r\r\n"},
		// RFC 6376 §3.4.5 example body.
		{"rfc6376 3.4.5", " C \r\nD \t E\r\n\r\n\r\n", " C \r\nD \t E\r\n", " C\r\nD E\r\n"},
	}
	splits := [][]int{nil, {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, {2}, {3, 2}}
	for _, tt := range tests {
		for _, sp := range splits {
			got, n := bodyCanon(t, Simple, tt.in, sp)
			if got != tt.simple || n != int64(len(got)) {
				t.Errorf("%s: simple(%q) chunks %v = %q (len %d), want %q", tt.name, tt.in, sp, got, n, tt.simple)
			}
			got, n = bodyCanon(t, Relaxed, tt.in, sp)
			if got != tt.relaxed || n != int64(len(got)) {
				t.Errorf("%s: relaxed(%q) chunks %v = %q (len %d), want %q", tt.name, tt.in, sp, got, n, tt.relaxed)
			}
		}
	}
}

// The well-known empty-body hashes (mox and dkimpy test vectors).
func TestEmptyBodyHashes(t *testing.T) {
	for c, want := range map[Canon]string{
		Simple:  "frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY=",
		Relaxed: "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
	} {
		b := NewBodyHasher(c, sha256.New(), -1)
		if got := base64.StdEncoding.EncodeToString(b.Sum()); got != want {
			t.Errorf("%v empty body hash = %s, want %s", c, got, want)
		}
	}
}

// Any chunking of a body gives the same hash, including splits between CR
// and LF and inside WSP runs.
func TestBodyHashChunkingInvariant(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	alphabet := []byte("ab \t\r\n\n\r")
	for i := 0; i < 300; i++ {
		body := make([]byte, r.Intn(200))
		for j := range body {
			body[j] = alphabet[r.Intn(len(alphabet))]
		}
		for _, c := range []Canon{Simple, Relaxed} {
			whole := NewBodyHasher(c, sha256.New(), -1)
			whole.Write(body)
			want := whole.Sum()
			parts := NewBodyHasher(c, sha256.New(), -1)
			p := body
			for len(p) > 0 {
				n := 1 + r.Intn(5)
				if n > len(p) {
					n = len(p)
				}
				parts.Write(p[:n])
				p = p[n:]
			}
			if got := parts.Sum(); string(got) != string(want) || parts.Length() != whole.Length() {
				t.Fatalf("%v: chunked hash differs for %q", c, body)
			}
		}
	}
}

func TestBodyHashLimit(t *testing.T) {
	full := NewBodyHasher(Relaxed, sha256.New(), -1)
	full.Write([]byte("hello\r\n"))
	want := full.Sum()
	b := NewBodyHasher(Relaxed, sha256.New(), 7)
	b.Write([]byte("hello\r\nappended footer\r\n"))
	if got := b.Sum(); string(got) != string(want) {
		t.Error("l=7 hash does not cover exactly the first 7 canonical octets")
	}
	if b.Length() != int64(7+len("appended footer\r\n")) {
		t.Errorf("Length = %d, want the whole canonical body", b.Length())
	}
}

func TestHeaderCanonicalization(t *testing.T) {
	tests := []struct {
		raw, simple, relaxed string
	}{
		// RFC 6376 §3.4.5 examples.
		{"A: X", "A: X\r\n", "a:X\r\n"},
		{"B : Y\t\r\n\tZ  ", "B : Y\t\r\n\tZ  \r\n", "b:Y Z\r\n"},
		{"Subject:\r\n  folded   value ", "Subject:\r\n  folded   value \r\n", "subject:folded value\r\n"},
		{"X-Empty:", "X-Empty:\r\n", "x-empty:\r\n"},
		// A lone CR is content, not a fold (dkimpy agrees).
		{"Subject: a\rb", "Subject: a\rb\r\n", "subject:a\rb\r\n"},
	}
	for _, tt := range tests {
		if got := string(appendCanonicalHeader(nil, Simple, tt.raw)); got != tt.simple {
			t.Errorf("simple(%q) = %q, want %q", tt.raw, got, tt.simple)
		}
		if got := string(appendCanonicalHeader(nil, Relaxed, tt.raw)); got != tt.relaxed {
			t.Errorf("relaxed(%q) = %q, want %q", tt.raw, got, tt.relaxed)
		}
	}
}

func TestParseCanon(t *testing.T) {
	tests := []struct {
		in     string
		h, b   Canon
		errors bool
	}{
		{"", Simple, Simple, false},
		{"relaxed", Relaxed, Simple, false},
		{"relaxed/relaxed", Relaxed, Relaxed, false},
		{"simple/relaxed", Simple, Relaxed, false},
		{"relaxed/nowsp", 0, 0, true},
		{"fancy", 0, 0, true},
	}
	for _, tt := range tests {
		h, b, err := ParseCanon(tt.in)
		if (err != nil) != tt.errors || !tt.errors && (h != tt.h || b != tt.b) {
			t.Errorf("ParseCanon(%q) = %v, %v, %v", tt.in, h, b, err)
		}
	}
}

// Oversigned names pick nothing once their instances are used up, and
// instances are taken bottom-up (RFC 6376 §5.4.2).
func TestAppendSignedHeaders(t *testing.T) {
	h := Header{ParseField("From: a"), ParseField("To: b"), ParseField("from: c")}
	got := string(h.AppendSignedHeaders(nil, Simple, []string{"From", "from", "FROM", "to", "missing"}))
	want := "from: c\r\nFrom: a\r\nTo: b\r\n"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
