package dnsupdate

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/config"
)

// A command stopped at its timeout is stopped with everything it
// started: a provider tool's helper that lived on would make the change
// later, behind the back of the caller that was told it failed and that
// looks again, and may send it again, before retrying (two adds of one
// record at a provider whose API appends make two records).
func TestCommandTimeoutStopsItsChildren(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "late-change")
	body := "(sleep 1; echo made > '" + marker + "') >/dev/null 2>&1 &\nsleep 30\n"
	p, err := New(&config.Publisher{Name: "api", Method: "command", Command: []string{script(t, body)}, Timeout: 300 * time.Millisecond}, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Apply(context.Background(), Change{Action: Add, Name: "s1._domainkey.example.com", Value: "v=DKIM1; p=A"}); err == nil {
		t.Fatal("Apply succeeded, want the timeout")
	}
	time.Sleep(1500 * time.Millisecond)
	if _, err := os.Stat(marker); err == nil {
		t.Fatalf("a child of the command stopped at its timeout went on and made its change afterwards")
	}
}
