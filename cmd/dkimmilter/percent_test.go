package main

import (
	"os"
	"path/filepath"
	"testing"
)

// A '%' pattern finds the key files of domains, and not other keys' files
// or names that are not domains (they made the background key check
// report keys that do not exist).
func TestPercentMatches(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"rsa.pem", "example.com.pem", "news.example.org.pem", ".hidden.example.pem", "bad_name!.example.pem", "example.com.pem.bak"} {
		os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600)
	}
	skip := map[string]bool{filepath.Join(dir, "rsa.pem"): true}
	got := percentMatches(filepath.Join(dir, "%.pem"), skip)
	want := map[string]bool{"example.com": true, "news.example.org": true}
	if len(got) != len(want) {
		t.Fatalf("matches %+v, want the domains %v", got, want)
	}
	for _, m := range got {
		if !want[m.domain] {
			t.Errorf("unexpected match %+v", m)
		}
	}
}
