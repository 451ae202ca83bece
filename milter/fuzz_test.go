package milter

import (
	"errors"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/dkimmilter/dkimmilter/verifier"
)

// FuzzClaimsAuthservID: reading the authserv-id of an inbound A-R field
// (to delete forged ones) never panics; a value that starts with our id,
// however spaced, commented, folded, quoted, cased or versioned, is
// claimed; and the field we write ourselves reads back as ours, with the
// id exactly as we wrote it. Run with
//
//	go test -run '^$' -fuzz '^FuzzClaimsAuthservID$' -fuzztime 30s ./milter
func FuzzClaimsAuthservID(f *testing.F) {
	f.Add(" mx.example.com; dkim=pass", "mx.example.com")
	f.Add(" (sneaky; comment) MX.Example.COM ; spf=pass", "mx.example.com")
	f.Add(` "mx.ex\ample.com"; dmarc=pass`, "mx.example.com")
	f.Add("\r\n\tmx.example.com 1;", "mx.example.com")
	f.Add(" mx.example.com/4Xq1; dkim=pass", "mx.example.com")
	f.Add(" (unterminated mx.example.com;", "mx.example.com")
	f.Add(" mx.example.com.evil.example; dkim=pass", "mx.example.com")
	f.Add(" ((((", "x")
	f.Fuzz(func(t *testing.T, value, id string) {
		ClaimsAuthservID(value, id)
		authservID(value)
		if !configurableID(id) {
			return
		}
		quoted := `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(id) + `"`
		for _, v := range []string{
			" " + id + ";" + value,
			id + " ;" + value,
			" (a (nested) comment) " + id + "(c);" + value,
			"\r\n\t" + upperASCII(id) + " 1;" + value,
			"\n " + quoted + "; " + value,
			" " + id + "/4Xq1; " + value,
		} {
			if !ClaimsAuthservID(v, id) {
				t.Fatalf("%q does not claim %q", v, id)
			}
		}
		vs := []*verifier.Verification{{Result: verifier.Fail, Err: errors.New(value), Domain: value, Selector: value}}
		for _, ar := range []string{verifier.AuthResults(id, nil), verifier.AuthResults(id, vs)} {
			if got, ok := authservID(ar); !ok || got != id || !ClaimsAuthservID(ar, id) {
				t.Fatalf("our own field %q reads back as %q (%v), want %q", ar, got, ok, id)
			}
		}
	})
}

// upperASCII upper-cases ASCII letters only: host names are ASCII, and
// Unicode case mapping is not a round trip ("ı" upper-cases to "I").
func upperASCII(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' {
			return r - 'a' + 'A'
		}
		return r
	}, s)
}

// configurableID reports whether config would accept id as authserv_id
// (config/validate.go): one word, no comment or quote characters.
func configurableID(id string) bool {
	if id == "" || !utf8.ValidString(id) {
		return false
	}
	for _, r := range id {
		if unicode.IsSpace(r) || unicode.IsControl(r) || strings.ContainsRune(`;()"\`, r) {
			return false
		}
	}
	return true
}
