package milter

import (
	"strings"
	"testing"

	"github.com/dkimmilter/dkimmilter/internal/testkit"
)

// At debug level the log says why each message was signed or verified,
// which key was chosen, and each DNS query with its answer, by queue id.
func TestDebugLog(t *testing.T) {
	e := newEnv(t, "")
	key := testkit.RSAKey(2048)
	e.dns.SetTXT("dbg._domainkey.sender.example", testkit.KeyRecord(key, ""))
	signed := testkit.Sign(t, inbound, "v=1; a=rsa-sha256; c=relaxed/relaxed; d=sender.example; s=dbg; h=from:to:subject", key)
	e.send("127.0.0.1", testkit.Envelope{From: "alice@example.com", QueueID: "4Xout001"}, outbound, 0)
	e.send(remote, daveEnv, signed, 0)
	e.send(remote, testkit.Envelope{From: "dave@sender.example", QueueID: "4Xin0002"}, signed, 0)

	log := e.logs.String()
	for _, want := range []string{
		`level=DEBUG msg=decision qid=4Xout001 client=client.example.net[127.0.0.1] from=alice@example.com mode=sv trusted=true why="internal host (sign.internal_hosts: 127.0.0.1)"`,
		`level=DEBUG msg="signing key chosen" qid=4Xout001 from=alice@example.com rule=*@example.com key=rsa d=example.com s=rsa`,
		`level=DEBUG msg=decision qid=4Xin0001 client=`,
		`trusted=false why="client`,
		`level=DEBUG msg="dns lookup" qid=4Xin0001 name=dbg._domainkey.sender.example duration=`,
		`records="[\"v=DKIM1; k=rsa; p=`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("the debug log lacks %q", want)
		}
	}
	// The second message's key comes from the cache: no query.
	if n := strings.Count(log, `msg="dns lookup"`); n != 1 {
		t.Errorf("%d DNS lookups logged, want 1 (the second is cached)", n)
	}
	if t.Failed() {
		t.Log(log)
	}
}
