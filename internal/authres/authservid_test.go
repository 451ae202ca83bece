package authres

import "testing"

// The authserv-id of a field as a forger could spell ours, and fields
// that are not ours.
func TestClaimsAuthservID(t *testing.T) {
	for _, tt := range []struct {
		value string
		want  bool
	}{
		{" mx.example.com; dkim=pass", true},
		{" MX.Example.COM.; dkim=pass", true},
		{" (a comment; with a semicolon) mx.example.com; spf=pass", true},
		{` "mx.example.com"; dkim=pass`, true},
		{"\r\n\tmx.example.com 1; dkim=pass", true},
		{" mx.example.com/4Xq1; dkim=pass", true},
		{" mx.example.com.evil.example; dkim=pass", false},
		{" other.example.net; dkim=pass", false},
		{" (unterminated mx.example.com; dkim=pass", false},
		{"", false},
	} {
		if got := ClaimsAuthservID(tt.value, "mx.example.com"); got != tt.want {
			t.Errorf("ClaimsAuthservID(%q) = %v, want %v", tt.value, got, tt.want)
		}
	}
}
