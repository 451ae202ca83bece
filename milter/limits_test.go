package milter

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	gomilter "github.com/emersion/go-milter"

	"github.com/dkimmilter/dkimmilter/internal/testkit"
)

// padded returns msg with n filler fields inserted after its first line
// (which stays the From field for outbound messages).
func padded(msg string, n int, field string) string {
	first, rest, _ := strings.Cut(msg, "\n")
	var b strings.Builder
	b.WriteString(first + "\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, field+"\n", i)
	}
	return b.String() + rest
}

// A header over [limits] max_headers or max_header_bytes gets a defined
// result, never a crash: inbound, dkim=permerror with the limit as reason
// and actions.security applied; outbound, actions.sign_error. Forged
// A-R fields past the limit are still removed, and the log names the limit.
func TestHeaderLimits(t *testing.T) {
	limits := "[limits]\nmax_headers = 60\nmax_header_bytes = 16384\n"
	forged := "Authentication-Results: mx.example.com; dkim=pass header.d=bank.example\n"
	tests := []struct {
		name, actions, ip, msg string
		env                    testkit.Envelope
		code                   gomilter.ActionCode
		smtp                   int
		ar                     string // the A-R we stamp; "" for none
		deleted                []uint32
		log                    []string
	}{
		{name: "inbound, too many fields", ip: remote, env: daveEnv,
			msg:  padded(inbound, 70, "X-Pad-%d: x") + "",
			code: gomilter.ActContinue, ar: `mx.example.com; dkim=permerror reason="too many header fields"`,
			log: []string{"message header over limits.max_headers", `dkim="permerror reason=\"too many header fields\""`, "not verified: 75 header fields, over limits.max_headers = 60"}},
		{name: "inbound, forged A-R past the limit is removed", ip: remote, env: daveEnv,
			msg:  forged + strings.Replace(padded(inbound, 70, "X-Pad-%d: x"), "\n\n", "\n"+forged+"\n", 1),
			code: gomilter.ActContinue, ar: `mx.example.com; dkim=permerror reason="too many header fields"`, deleted: []uint32{2, 1},
			log: []string{"removed 2 forged Authentication-Results"}},
		{name: "inbound, one huge field", ip: remote, env: daveEnv,
			msg:  padded(inbound, 1, "X-Big: "+strings.Repeat("y", 20000)+"%.0d"),
			code: gomilter.ActContinue, ar: `mx.example.com; dkim=permerror reason="header too large"`,
			log: []string{"message header over limits.max_header_bytes", "over limits.max_header_bytes = 16384"}},
		{name: "inbound, security = reject", actions: `security = "reject"`, ip: remote, env: daveEnv,
			msg:  padded(inbound, 70, "X-Pad-%d: x"),
			code: gomilter.ActReplyCode, smtp: 552, log: []string{"action=reject outcome=security"}},
		{name: "inbound, bad_signature = reject does not apply", actions: `bad_signature = "reject"`, ip: remote, env: daveEnv,
			msg:  padded(inbound, 70, "X-Pad-%d: x"),
			code: gomilter.ActContinue, ar: `mx.example.com; dkim=permerror reason="too many header fields"`, log: []string{"outcome=security"}},
		{name: "outbound, sign_error = tempfail (default)", ip: "127.0.0.1", env: aliceEnv,
			msg:  padded(outbound, 70, "X-Pad-%d: x"),
			code: gomilter.ActReplyCode, smtp: 451,
			log: []string{"decision=\"sign error\"", "cannot sign: too many header fields (79 header fields, over limits.max_headers = 60)"}},
		{name: "outbound, sign_error = accept", actions: `sign_error = "accept"`, ip: "127.0.0.1", env: aliceEnv,
			msg:  padded(outbound, 70, "X-Pad-%d: x"),
			code: gomilter.ActContinue, log: []string{"decision=\"not signed\"", "delivered unsigned"}},
		{name: "at the limit exactly: verified as usual", ip: remote, env: daveEnv,
			msg:  padded(inbound, 55, "X-Pad-%d: x"),
			code: gomilter.ActContinue, ar: "mx.example.com; dkim=none"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, baseConfig+limits+"[actions]\n"+tt.actions+"\n")
			m := e.metrics
			r, out := e.send(tt.ip, tt.env, tt.msg, 0)
			if r.Action.Code != tt.code || r.Action.SMTPCode != tt.smtp {
				t.Fatalf("answer %c %d %q, want %c %d", r.Action.Code, r.Action.SMTPCode, r.Action.SMTPText, tt.code, tt.smtp)
			}
			if tt.code == gomilter.ActContinue {
				ar := testkit.Fields(out, "Authentication-Results")
				if tt.ar == "" && len(ar) != 0 || tt.ar != "" && (len(ar) == 0 || ar[0] != tt.ar) {
					t.Errorf("A-R %q, want %q", ar, tt.ar)
				}
				if len(testkit.Fields(out, "DKIM-Signature")) != 0 && tt.ip != remote {
					t.Error("signed a header over the limit")
				}
			}
			var deleted []uint32
			for _, c := range testkit.Mods(r, gomilter.ActChangeHeader) {
				deleted = append(deleted, c.HeaderIndex)
			}
			if fmt.Sprint(deleted) != fmt.Sprint(tt.deleted) && (len(deleted) > 0 || len(tt.deleted) > 0) {
				t.Errorf("deleted A-R %v, want %v", deleted, tt.deleted)
			}
			for _, w := range tt.log {
				if !strings.Contains(e.logs.String(), w) {
					t.Errorf("log lacks %q:\n%s", w, e.logs.String())
				}
			}
			var b bytes.Buffer
			m.WritePrometheus(&b)
			if len(tt.log) > 0 && strings.Contains(tt.log[0], "limits.max_headers") && !strings.Contains(b.String(), `dkimmilter_limits_hit_total{limit="max_headers"} 1`) {
				t.Errorf("limit not counted:\n%s", b.String())
			}
			// The connection carries on with the next message.
			e.sendSigned(t, e.addr)
		})
	}
}

// A thousand signatures: max_signatures are verified, as many again are
// listed as neutral, the rest not at all, so the A-R we insert stays
// small; the message is not a pass.
func TestManySignatures(t *testing.T) {
	e := newEnv(t, baseConfig+"[limits]\nmax_headers = 2000\n")
	k := testkit.RSAKey(2048)
	e.dns.SetTXT("good._domainkey.sender.example", testkit.KeyRecord(k, ""))
	msg := testkit.Sign(t, inbound, "v=1; a=rsa-sha256; d=sender.example; s=good; h=from:subject", k)
	junk := padded("X: y\n", 1000, "DKIM-Signature: v=1; a=rsa-sha256; d=junk%d.example; s=s; h=from; bh=AA==; b=AA==")
	_, rest, _ := strings.Cut(junk, "\n")
	r, out := e.send(remote, daveEnv, rest+msg, 0)
	if r.Action.Code != gomilter.ActContinue {
		t.Fatalf("answer %+v", r.Action)
	}
	ar := testkit.Fields(out, "Authentication-Results")
	if len(ar) != 1 {
		t.Fatalf("%d A-R fields", len(ar))
	}
	if n := strings.Count(ar[0], "dkim="); n != 16 {
		t.Errorf("%d results, want 8 verified and 8 neutral", n)
	}
	if strings.Count(ar[0], `dkim=neutral reason="too many signatures"`) != 8 || strings.Contains(ar[0], "dkim=pass") {
		t.Errorf("A-R: %s", ar[0])
	}
	if len(ar[0]) > 8192 {
		t.Errorf("A-R of %d bytes", len(ar[0]))
	}
}
