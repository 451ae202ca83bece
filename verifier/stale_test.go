package verifier

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/internal/authres"
	"github.com/dkimmilter/dkimmilter/internal/dns"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
)

// staleResolver marks every answer of next as served stale, as the
// cache does when DNS fails (RFC 8767).
type staleResolver struct{ next dns.Resolver }

func (r staleResolver) LookupTXT(ctx context.Context, name string) (*dns.TXTResult, error) {
	res, err := r.next.LookupTXT(ctx, name)
	if res != nil {
		res.Stale, res.StaleFor = true, time.Hour
	}
	return res, err
}

// A key from a stale record still decides the result, and the comment of
// Authentication-Results says where the key came from.
func TestStaleKeyComment(t *testing.T) {
	rsa2048 := testkit.RSAKey(2048)
	std := "v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=sel; t=1795000000; x=1795604800; h=from:to:subject:date:message-id"
	signed := testkit.Sign(t, baseMsg, std, rsa2048)
	tests := []struct {
		name    string
		msg     string
		record  string
		stale   bool
		want    Result
		comment string
	}{
		{"fresh", signed, testkit.KeyRecord(rsa2048, ""), false, Pass, "2048-bit rsa key"},
		{"stale", signed, testkit.KeyRecord(rsa2048, ""), true, Pass, "2048-bit rsa key; stale key record"},
		{"stale, broken", strings.Replace(signed, "Quarterly", "Annual", 1), testkit.KeyRecord(rsa2048, ""), true, Fail, "2048-bit rsa key; stale key record"},
		{"stale testing key", signed, testkit.KeyRecord(rsa2048, "t=y; "), true, Pass, "2048-bit rsa key; testing key; stale key record"},
		{"stale revoked", signed, "v=DKIM1; k=rsa; p=", true, PermError, "stale key record"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r dns.Resolver = &dns.Fake{TXT: map[string][]string{"sel._domainkey.example.com": {tt.record}}, TTL: time.Minute}
			if tt.stale {
				r = staleResolver{r}
			}
			v := New(Options{Resolver: r, Now: func() time.Time { return now }, Timeout: time.Second})
			got := verify(t, v, string(testkit.CRLF([]byte(tt.msg))), 65535)
			if len(got) != 1 || got[0].Result != tt.want || got[0].Stale != tt.stale || got[0].Comment() != tt.comment {
				t.Fatalf("got %+v (comment %q), want %s (comment %q)", got[0], got[0].Comment(), tt.want, tt.comment)
			}
			ar := authres.Format("mx.example.net", AuthResults(got))
			if !strings.Contains(ar, "("+tt.comment+")") {
				t.Errorf("Authentication-Results %q lacks (%s)", ar, tt.comment)
			}
		})
	}
}
