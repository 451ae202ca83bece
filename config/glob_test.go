package config

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

// globRegexp is the pattern as OpenDKIM's refile would make it (with '.'
// and '+' escaped, '*' as ".*", anchored), the reference GlobMatch must
// agree with.
func globRegexp(p string) *regexp.Regexp {
	parts := strings.Split(p, "*")
	for i := range parts {
		parts[i] = regexp.QuoteMeta(parts[i])
	}
	return regexp.MustCompile(`^(?s:` + strings.Join(parts, ".*") + `)$`)
}

func TestGlobMatch(t *testing.T) {
	tests := []struct {
		pattern, s string
		want       bool
	}{
		{"*", "", true},
		{"*", "a@b", true},
		{"", "", true},
		{"", "a", false},
		{"a@b", "a@b", true},
		{"a@b", "a@bc", false},
		{"a@b", "xa@b", false},
		{"*@b", "@b", true},
		{"a*", "a", true},
		{"*a", "ba", true},
		{"*a", "ab", false},
		{"a*b*c", "abbbc", true},
		{"a*b*c", "acb", false},
		{"*@*.example.com", "a@x.example.com", true},
		{"*@*.example.com", "a@example.com", false},
		{"*@example.*", "a@example.co.uk", true},
		{"x-*@example.com", "x-@example.com", true},
		{"**@b", "a@b", true},
		{"*ü*", "aüb", true},
		{"*ü", "aü", true},
	}
	for _, tt := range tests {
		if got := GlobMatch(tt.pattern, tt.s); got != tt.want {
			t.Errorf("GlobMatch(%q, %q) = %v", tt.pattern, tt.s, got)
		}
		if ref := globRegexp(tt.pattern).MatchString(tt.s); ref != tt.want {
			t.Errorf("the reference disagrees on %q, %q", tt.pattern, tt.s)
		}
	}
}

// randomGlob draws short strings over a small alphabet, so that random
// patterns and addresses meet often.
func randomGlob(r *rand.Rand, alphabet string, n int) string {
	b := make([]byte, r.IntN(n+1))
	for i := range b {
		b[i] = alphabet[r.IntN(len(alphabet))]
	}
	return string(b)
}

// GlobMatch agrees with the regular expression OpenDKIM would build.
func TestGlobMatchRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		p, s := randomGlob(r, "ab.@*", 7), randomGlob(r, "ab.@", 8)
		if got, want := GlobMatch(p, s), globRegexp(p).MatchString(s); got != want {
			t.Fatalf("GlobMatch(%q, %q) = %v, the regexp says %v", p, s, got, want)
		}
	}
}

// The shadowing check must never call a reachable rule unused: whenever
// GlobMatch(p, q) says p covers q, every string q matches, p matches. All
// strings up to a length are tried, each '*' of q expanded.
func TestGlobCoverIsSound(t *testing.T) {
	const alphabet = "ab@"
	var all []string
	var gen func(prefix string, n int)
	gen = func(prefix string, n int) {
		all = append(all, prefix)
		if n == 0 {
			return
		}
		for i := range len(alphabet) {
			gen(prefix+alphabet[i:i+1], n-1)
		}
	}
	gen("", 6)
	r := rand.New(rand.NewPCG(3, 4))
	covered := 0
	for range 3000 {
		p, q := randomGlob(r, "ab@*", 5), randomGlob(r, "ab@*", 5)
		if !GlobMatch(p, q) {
			continue
		}
		covered++
		rq := globRegexp(q)
		for _, s := range all {
			if rq.MatchString(s) && !GlobMatch(p, s) {
				t.Fatalf("%q said to cover %q, but %q matches only the latter", p, q, s)
			}
		}
	}
	if covered < 100 {
		t.Fatalf("only %d covering pairs drawn: the test proves little", covered)
	}
}

// TestShadowed: a rule is reported unused only when an earlier rule
// provably wins over it; glob rules included.
func TestShadowed(t *testing.T) {
	tests := []struct {
		rules []string
		want  string // the error, "" for none
	}{
		// Shadowed: the earlier pattern matches everything the later does.
		{[]string{"*", "x-*@example.com"}, `signing[2].from: "x-*@example.com" is never used: signing[1] (line 9, from = "*")`},
		{[]string{"*@*", "bob@example.com"}, `signing[2].from: "bob@example.com" is never used: signing[1] (line 9, from = "*@*")`},
		{[]string{"*@example.*", "*@example.com"}, `"*@example.com" is never used: signing[1]`},
		{[]string{"*@example.*", "bob@example.org"}, `"bob@example.org" is never used: signing[1]`},
		{[]string{"x-*@example.com", "x-bob@example.com"}, `"x-bob@example.com" is never used`},
		{[]string{"x-*@example.com", "x-a*@example.com"}, `"x-a*@example.com" is never used`},
		{[]string{"*@example.com", "x-*@example.com"}, `"x-*@example.com" is never used: signing[1]`},
		{[]string{"*@*.example.com", "*@a*.example.com"}, `"*@a*.example.com" is never used`},
		{[]string{"*@*.example.com", "*@*.*.example.com"}, `"*@*.*.example.com" is never used`},
		{[]string{"*@*.com", "*@*.example.com"}, `"*@*.example.com" is never used`},
		{[]string{"*bob*@*", "*bob@example.com"}, `"*bob@example.com" is never used`},
		{[]string{"*@*", "*"}, ``}, // not provable from the patterns alone
		// A rule whose key file is named with '%' lets the domains
		// without a file through: it shadows nothing.
		{[]string{"pct:*@example.*", "*@example.org"}, ``},
		{[]string{"pct:*", "x-*@example.com"}, ``},
		{[]string{"x-*@example.com", "x-*@example.com"}, `"x-*@example.com" is never used`},
		// Not shadowed: some address reaches the later rule.
		{[]string{"*@*.example.com", "*@example.com"}, ``},
		{[]string{"x-*@example.com", "*@example.com"}, ``},
		{[]string{"*@example.*", "*@sub.example.com"}, ``},
		{[]string{"*@*.example.com", "*@a*example.com"}, ``},
		{[]string{"*a@x.com", "*b@x.com"}, ``},
		{[]string{"a*@x.com", "*a@x.com"}, ``},
		{[]string{"*@example.com", "*@*"}, ``},
		{[]string{"bob@example.com", "*@example.*"}, ``},
		{[]string{"*@*.example.com", "*@*example.com"}, ``},
	}
	for _, tt := range tests {
		var b strings.Builder
		b.WriteString("[keys.k]\ndomain = \"example.com\"\nselector = \"s\"\nfile = \"/k.pem\"\n")
		b.WriteString("[keys.pct]\ndomain = \"%\"\nselector = \"s\"\nfile = \"/keys/%.pem\"\n")
		for _, r := range tt.rules {
			key := "k"
			if from, ok := strings.CutPrefix(r, "pct:"); ok {
				r, key = from, "pct"
			}
			b.WriteString("[[signing]]\nfrom = \"" + r + "\"\nkeys = [\"" + key + "\"]\n")
		}
		_, err := Parse("", []byte(b.String()))
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%q: %v", tt.rules, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%q: error %v, want %q", tt.rules, err, tt.want)
		}
	}
}
