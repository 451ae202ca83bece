package dkim

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"slices"
	"strings"
	"testing"
)

// The fuzz targets of the wire-format parsers. Each reads untrusted bytes
// (a DKIM-Signature from any sender, a key record from any DNS zone, a
// header block from any client), so each must never panic and must keep
// the properties its callers rely on. Seeds: f.Add below and the corpus in
// testdata/fuzz/; run one with
//
//	go test -run '^$' -fuzz '^FuzzParseTagList$' -fuzztime 30s ./internal/dkim

// FuzzParseTagList: a tag-list that parses round-trips: the values it
// found are the trimmed bytes between Start and End, no name repeats,
// rebuilding "name=value;" gives the same list back, and the loose parser
// (used to name broken signatures) agrees with it.
func FuzzParseTagList(f *testing.F) {
	for _, s := range []string{
		"v=1; a=rsa-sha256; d=example.com; s=sel; h=from:to; bh=abc=; b=de\r\n f",
		" v = 1 ;\r\n\ta=x;", "a=1;;b=2", "a=", "", "a=1; a=2", "a=1; b", "=x",
		"a=b=c; d= e ; ", "x1=;x2=;x3=;x4=;x5=;x6=;x7=;x8=;x9=;y1=;y2=;y3=;y4=;y5=;y6=;y7=;y8=;x1=",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tags, err := ParseTagList(s)
		if err != nil {
			if !errors.Is(err, errTagSyntax) && !errors.Is(err, errDuplicateTag) {
				t.Fatalf("error %v is neither errTagSyntax nor errDuplicateTag", err)
			}
			ParseTagListLoose(s)
			return
		}
		names := map[string]bool{}
		var rebuilt strings.Builder
		for _, tg := range tags {
			if !validTagName(tg.Name) || names[tg.Name] {
				t.Fatalf("bad or repeated name %q in %q", tg.Name, s)
			}
			names[tg.Name] = true
			if got := strings.Trim(s[tg.Start:tg.End], " \t\r\n"); got != tg.Value {
				t.Fatalf("tag %s: value %q, but Start:End holds %q", tg.Name, tg.Value, got)
			}
			rebuilt.WriteString(tg.Name + "=" + tg.Value + ";")
		}
		again, err := ParseTagList(rebuilt.String())
		if err != nil || !sameTags(tags, again) {
			t.Fatalf("rebuilt %q parses as %v, %v; want %v", rebuilt.String(), again, err, tags)
		}
		if loose := ParseTagListLoose(s); !sameTags(tags, loose) {
			t.Fatalf("loose parse %v differs from %v", loose, tags)
		}
	})
}

func sameTags(a, b TagList) bool {
	return slices.EqualFunc(a, b, func(x, y Tag) bool { return x.Name == y.Name && x.Value == y.Value })
}

// FuzzParseKeyRecord: a record that parses has a usable key of the type it
// names, and that key re-encodes to a record that parses to the same key;
// a revoked one has an empty p=; everything else is an error, not a panic.
func FuzzParseKeyRecord(f *testing.F) {
	for _, s := range []string{
		"v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDwIRP/UC3SBsEmGqZ9ZJW3/DkMoGeLnQg1fWn7/zYtIxN2SnFCjxOCKG9v3b4jYfcTNh5ijSsq631uBItLa7od+v/RtdC2UzJ1lWT947qR+Rcac2gbto/NMqJ0fzfVjH4OuKhitdY9tf6mcwGjaNBcWToIMmPSPDdQPNUYckcQ2QIDAQAB",
		"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
		"v=DKIM1; p=", "v=DKIM1; p=!!!", "v=DKIM1; k=dsa; p=AAAA", "v=spf1 -all",
		"v=DKIM1; h=sha1:sha256; s=email:*; t=y:s; n=note; p=AAAA", "p=MA==",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseKeyRecord(s)
		switch {
		case errors.Is(err, ErrKeyRevoked):
			if r == nil || r.P != "" || r.Key != nil {
				t.Fatalf("revoked record %+v", r)
			}
			return
		case err != nil:
			return
		}
		if r.Key == nil || r.Bits <= 0 || (r.KeyType != "rsa" && r.KeyType != "ed25519") {
			t.Fatalf("record parsed without a usable key: %+v", r)
		}
		kt, p, err := EncodePublicKey(r.Key)
		if err != nil || kt != r.KeyType {
			t.Fatalf("EncodePublicKey: %s, %v", kt, err)
		}
		again, err := ParseKeyRecord("v=DKIM1; k=" + kt + "; p=" + p)
		if err != nil || again.Bits != r.Bits {
			t.Fatalf("re-encoded record: %+v, %v", again, err)
		}
	})
}

// FuzzHeaderCanon: a field as a milter receives it (name, value with LF
// folds) is rebuilt with CRLF folds; simple canonicalization gives it back
// byte for byte, relaxed has no LF left in the value and is
// idempotent (canonicalizing its own output changes nothing).
func FuzzHeaderCanon(f *testing.F) {
	f.Add("Subject", " Lunch\n\t on  Friday? ")
	f.Add("From", "Alice <alice@example.com>")
	f.Add("X-Empty", "")
	f.Add("DKIM-Signature", " v=1; a=rsa-sha256;\r\n\tb=abc")
	f.Add("Odd \t", "\r\n x\ry\n")
	f.Fuzz(func(t *testing.T, name, value string) {
		fld := NewField(name, value)
		if v := fld.Value(); !strings.Contains(name, ":") && strings.ReplaceAll(v, "\r\n", "\n") != strings.ReplaceAll(value, "\r\n", "\n") {
			t.Fatalf("Value() = %q, field built from %q", v, value)
		}
		if got := string(appendCanonicalHeader(nil, Simple, fld.Raw)); got != fld.Raw+"\r\n" {
			t.Fatalf("simple = %q, want %q", got, fld.Raw+"\r\n")
		}
		r1 := appendCanonicalHeader(nil, Relaxed, fld.Raw)
		if !bytes.HasSuffix(r1, []byte("\r\n")) {
			t.Fatalf("relaxed %q lacks its CRLF", r1)
		}
		body := r1[:len(r1)-2]
		// A lone CR is content (dkimpy keeps it too); a line break is not.
		if i := bytes.IndexByte(body, ':'); i >= 0 && bytes.IndexByte(body[i+1:], '\n') >= 0 {
			t.Fatalf("relaxed value keeps a line break: %q", r1)
		}
		if r2 := appendCanonicalHeader(nil, Relaxed, string(body)); !bytes.Equal(r1, r2) {
			t.Fatalf("relaxed is not idempotent: %q then %q", r1, r2)
		}
	})
}

// FuzzSignedHeaders: the linear-time selection of h= fields that hostile
// signatures take agrees with the plain scan, for any header and h= list.
// fields is one field per line, names is an h= value.
func FuzzSignedHeaders(f *testing.F) {
	f.Add("From: a\nTo: b\nFROM: c\nSubject: d", "from:from:from:to:subject:x")
	f.Add("A:1\nb:2\na:3\nB:4", "a:b:A:B:a")
	f.Add("\u017fubject: long s\nSubject: s", "subject:subject")
	f.Fuzz(func(t *testing.T, fields, names string) {
		var h Header
		for _, l := range strings.Split(fields, "\n") {
			h = append(h, ParseField(l))
		}
		list := strings.Split(names, ":")
		for _, c := range []Canon{Simple, Relaxed} {
			// The plain scan, written out here as the reference.
			used := make([]bool, len(h))
			var want []byte
			for _, n := range list {
				for i := len(h) - 1; i >= 0; i-- {
					if !used[i] && EqualFoldASCII(h[i].Name, n) {
						used[i] = true
						want = appendCanonicalHeader(want, c, h[i].Raw)
						break
					}
				}
			}
			if got := h.appendSignedIndexed(nil, c, list); !bytes.Equal(got, want) {
				t.Fatalf("%v: indexed %q, scan %q", c, got, want)
			}
			if got := h.AppendSignedHeaders(nil, c, list); !bytes.Equal(got, want) {
				t.Fatalf("%v: AppendSignedHeaders %q, scan %q", c, got, want)
			}
		}
	})
}

// FuzzBodyHasher: the body hash and length do not depend on where the
// chunks are cut (Postfix cuts anywhere, even between CR and LF), with or
// without l=.
func FuzzBodyHasher(f *testing.F) {
	f.Add([]byte("Hi Bob,\r\n\r\nhow about \t noon?  \r\n\r\n\r\n"), []byte{1, 2, 3}, true, int16(-1))
	f.Add([]byte("a\rb\r\n\n\r"), []byte{1}, false, int16(3))
	f.Add([]byte(""), []byte{}, false, int16(0))
	f.Fuzz(func(t *testing.T, body, cuts []byte, relaxed bool, limit int16) {
		c := Simple
		if relaxed {
			c = Relaxed
		}
		l := int64(limit)
		if l < 0 {
			l = -1
		}
		whole := NewBodyHasher(c, sha256.New(), l)
		whole.Write(body)
		want := whole.Sum()
		parts := NewBodyHasher(c, sha256.New(), l)
		p := body
		for i := 0; len(p) > 0; i++ {
			n := len(p)
			if len(cuts) > 0 {
				n = min(len(p), 1+int(cuts[i%len(cuts)]))
			}
			parts.Write(p[:n])
			p = p[n:]
		}
		if got := parts.Sum(); !bytes.Equal(got, want) || parts.Length() != whole.Length() {
			t.Fatalf("chunked (cuts %v) hash or length differs for %q", cuts, body)
		}
	})
}

// FuzzParseSignature: any DKIM-Signature value parses without a panic; a
// signature that is usable has every field its verification needs, and the
// tags it was read from rebuild into a signature that parses the same.
func FuzzParseSignature(f *testing.F) {
	for _, s := range []string{
		" v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=sel; t=1795000000; x=1795604800; h=from:to; bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=; b=dGVzdA==",
		" v=1; a=ed25519-sha256; d=football.example.com; i=@football.example.com; q=dns/txt; s=brisbane; h=from : to; l=42; bh=AAAA; b=AA\r\n\tAA",
		" v=1; a=rsa-sha1; d=x.example; s=s; h=from; bh=AA==; b=AA==",
		" v=1; a=rsa-sha256; d=x.example; s=s; h=to; bh=AA==; b=AA==",
		" v=1; a=rsa-sha256; d=x.example; s=s; i=a=0D=0A@x.example; h=from; bh=AA==; b=AA==",
		" v=1; v=1", "", "garbage", " d=evil\r\n X: y; s=\"q\"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, value string) {
		s := ParseSignature(NewField("DKIM-Signature", value))
		if s.Err != nil {
			return
		}
		// rsa-sha1 is usable (verified, and policy at best); SHA-1 with
		// any other key type is not an algorithm.
		knownHash := s.Hash == "sha256" || s.Hash == "sha1" && s.KeyType == "rsa"
		if _, ok := lookupName(s.Domain); !ok || s.dnsSelector == "" || !isASCII(s.DNSName()) || !knownHash ||
			len(s.Sig) == 0 || !slices.ContainsFunc(s.Headers, func(n string) bool { return EqualFoldASCII(n, "from") }) || !strings.Contains(s.Identity, "@") {
			t.Fatalf("usable signature lacks something: %+v", s)
		}
		if stripped := s.withoutB(); strings.Count(stripped, "b=") > strings.Count(s.Field.Raw, "b=") {
			t.Fatalf("withoutB(%q) = %q", s.Field.Raw, stripped)
		}
		var rebuilt strings.Builder
		for _, tg := range s.Tags {
			rebuilt.WriteString(" " + tg.Name + "=" + tg.Value + ";")
		}
		again := ParseSignature(NewField("DKIM-Signature", rebuilt.String()))
		if again.Err != nil || again.Domain != s.Domain || again.Selector != s.Selector ||
			again.Identity != s.Identity || again.Algorithm != s.Algorithm || again.Length != s.Length ||
			!again.Time.Equal(s.Time) || !again.Expire.Equal(s.Expire) || !slices.Equal(again.Headers, s.Headers) {
			t.Fatalf("rebuilt signature %q parses as %+v, want %+v", rebuilt.String(), again, s)
		}
	})
}
