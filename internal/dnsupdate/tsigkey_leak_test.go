package dnsupdate

import (
	"strings"
	"testing"
)

// A key file with a mistake in it must not have its secret copied into
// the error: the error goes to the daemon's log and to the terminal of
// `dkimmilter check`, which more people read than the file.
func TestParseTSIGKeyErrorsKeepTheSecret(t *testing.T) {
	const secret = "c2VjcmV0IG9mIHRoZSB0ZXN0IGtleSwgbm90IHRvIGJlIGxvZ2dlZA=="
	for name, text := range map[string]string{
		"no ; after the secret":  `key "k" { algorithm hmac-sha256; secret "` + secret + `" };`,
		"secret, then algorithm": `key "k" { secret "` + secret + `" algorithm hmac-sha256; };`,
		"the bare secret":        secret + "\n",
		"the secret, quoted":     `"` + secret + `";` + "\n",
		"the secret, no option":  `key "k" { algorithm hmac-sha256; "` + secret + `"; };`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseTSIGKey(text)
			if err == nil {
				t.Fatal("parsed")
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), secret[:20]) {
				t.Errorf("the error shows the secret: %v", err)
			}
		})
	}
}
