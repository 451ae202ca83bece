package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// check reads the TSIG key file of a rotating key's publisher as the
// daemon will: one it cannot parse would otherwise pass the check and
// fail the first rotation step, a rotation period after the reload.
func TestCheckRotationTSIGKeyUnreadable(t *testing.T) {
	f := rotationFixture(t, "30d", "")
	tsig := filepath.Join(f.dir, "tsig.key")
	// The secret alone, as some tools keep it, not a key statement.
	if err := os.WriteFile(tsig, []byte("c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCmd("check", "-config", f.cfg, "-user", me)
	if code != exitConfig {
		t.Fatalf("exit %d, want %d\n%s%s", code, exitConfig, out, errs)
	}
	wantOutput(t, errs, "publish.bind.tsig_key: TSIG key file "+tsig+": line 1: ")
	if strings.Contains(errs, "c2VjcmV0") {
		t.Errorf("the check shows the secret:\n%s", errs)
	}
}
