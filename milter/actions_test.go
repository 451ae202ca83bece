package milter

import (
	"strings"
	"testing"

	"github.com/dkimmilter/dkimmilter/verifier"
)

// A reason quoting a hostile tag value cannot add a reply line, lose a
// '%' to Postfix, or make the line overlong.
func TestFirstReasonIsReplySafe(t *testing.T) {
	v := &verifier.Verification{Result: verifier.PermError,
		Err: errString("unknown algorithm a=rsa-\r\n250 2.0.0 Ok: fake%s%%" + strings.Repeat("x", 600))}
	got := firstReason([]*verifier.Verification{v})
	if strings.ContainsAny(got, "\r\n%") || len(got) > 200 {
		t.Errorf("unsafe reply text %q", got)
	}
	if !strings.HasPrefix(got, "unknown algorithm a=rsa-??250 2.0.0 Ok: fake?s??") {
		t.Errorf("got %q", got)
	}
}

type errString string

func (e errString) Error() string { return string(e) }
