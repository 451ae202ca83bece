package dkim

import (
	"slices"
	"testing"
)

// The address of a From field, as the signer picks it: valid fields, and
// the malformed ones real mail has.
func TestFromAddresses(t *testing.T) {
	tests := map[string]string{
		" Alice <alice@example.com>":                   "alice@example.com",
		" alice@example.com":                           "alice@example.com",
		" \"Doe, John\" <john@example.com>":            "john@example.com",
		" =?utf-8?q?J=C3=BCrgen?= <j@example.com>":     "j@example.com",
		" a@example.com, b@example.org":                "a@example.com",
		" Broken <<x@example.com>":                     "x@example.com",
		" undisclosed <odd name@example.com>":          "odd name@example.com",
		" (comment) bob@example.com (another comment)": "bob@example.com",
	}
	for in, want := range tests {
		if got := FromAddresses(in); len(got) == 0 || got[0] != want {
			t.Errorf("FromAddresses(%q) = %q; want %q first", in, got, want)
		}
	}
	if got := FromAddresses(" no address here"); got != nil {
		t.Errorf("found %q in nothing", got)
	}
	if got := FromAddresses(" a@example.com, B <b@example.org>"); !slices.Equal(got, []string{"a@example.com", "b@example.org"}) {
		t.Errorf("two mailboxes: %q", got)
	}
}
