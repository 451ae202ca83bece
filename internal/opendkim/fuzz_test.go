package opendkim

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/BurntSushi/toml"
)

// Whatever opendkim.conf holds, the translation is TOML that parses: every
// value from the file is quoted, every comment stays a comment.
func FuzzTranslate(f *testing.F) {
	for _, dir := range []string{"debian-default", "long-lived", "unsupported", "single-key"} {
		data, err := os.ReadFile(filepath.Join("testdata", dir, "etc/opendkim.conf"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("Socket inet:8891@[::1]\nAuthservID \"x\\y\"\nDomain a\"b,c\nSelector s\nKeyFile /k\x00\n"))
	f.Add([]byte("InternalHosts csl:a\nb,c\r\nMTA \u2028x\nSignHeaders \x7f,From\n"))
	f.Fuzz(func(t *testing.T, conf []byte) {
		// Under a root, so that the paths the input names (/dev/stdin,
		// /dev/urandom) are not read.
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "opendkim.conf"), conf, 0o644); err != nil {
			t.Fatal(err)
		}
		res, err := Translate("/opendkim.conf", Options{Root: dir, Hostname: func() (string, error) { return "mx.example.com", nil }})
		if err != nil {
			return // an Include of a file that is not there
		}
		var m map[string]any
		if _, err := toml.Decode(string(res.TOML), &m); err != nil {
			t.Fatalf("not TOML: %v\n%s", err, res.TOML)
		}
	})
}
