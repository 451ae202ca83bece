package keystore

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"testing"
)

// A key file error carries its fix as a value: its text ends with
// "(hint: …)" for a log line, and SplitHint gives the two apart, through
// any wrapping, for a report that prints the hint on its own line.
func TestSplitHint(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.pem")
	_, err := ReadPrivateKey(missing)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err %v does not match fs.ErrNotExist", err)
	}
	wrapped := fmt.Errorf("keys.example: %w", err)
	text, hint := SplitHint(wrapped)
	if text != "keys.example: "+missing+" does not exist" || hint == "" || wrapped.Error() != text+" (hint: "+hint+")" {
		t.Errorf("SplitHint(%q) = %q, %q", wrapped, text, hint)
	}
	if text, hint := SplitHint(errors.New("plain (hint: not ours)")); text != "plain (hint: not ours)" || hint != "" {
		t.Errorf("an error of another package: %q, %q", text, hint)
	}
}
