package milter

import (
	"strings"
	"testing"

	gomilter "github.com/emersion/go-milter"

	"github.com/dkimmilter/dkimmilter/config"
)

// A reason quoting a hostile tag value cannot add a reply line, lose a
// '%' to Postfix, or make the line overlong; the same goes for a
// quarantine reason.
func TestReplyIsReplySafe(t *testing.T) {
	hostile := "unknown algorithm a=rsa-\r\n250 2.0.0 Ok: fake%s%%" + strings.Repeat("x", 600)
	resp, _ := answer(outBadSignature, config.Reject, hostile)
	got := string(resp.Response().Data)
	got = strings.TrimSuffix(got, "\x00")
	if strings.ContainsAny(got, "\r\n%\x00") || len(got) > 300 {
		t.Errorf("unsafe reply text %q", got)
	}
	if !strings.HasPrefix(got, "550 5.7.20 No passing DKIM signature: unknown algorithm a=rsa-??250 2.0.0 Ok: fake?s??") {
		t.Errorf("got %q", got)
	}
	_, q := answer(outBadSignature, config.Quarantine, hostile)
	if strings.ContainsAny(q, "\r\n%") || len(q) > 220 || !strings.HasPrefix(q, "DKIM: unknown algorithm") {
		t.Errorf("unsafe quarantine reason %q", q)
	}
}

// Every outcome and action: the SMTP reply, or the quarantine reason, or
// discard. A signing or internal failure never tells the SMTP client its
// details.
func TestAnswerTable(t *testing.T) {
	const reason = "no key for signature"
	tests := []struct {
		o    outcome
		a    config.Action
		code byte   // 0: no answer (the message goes on)
		text string // the reply, or the quarantine reason
	}{
		{outDNSError, config.Tempfail, 'y', "451 4.4.3 DKIM key lookup failed: " + reason},
		{outDNSError, config.Reject, 'y', "550 5.7.20 DKIM key lookup failed: " + reason},
		{outSecurity, config.Tempfail, 'y', "452 4.3.4 Message header too large to verify DKIM: " + reason},
		{outSecurity, config.Reject, 'y', "552 5.3.4 Message header too large to verify DKIM: " + reason},
		{outBadSignature, config.Tempfail, 'y', "451 4.7.20 No passing DKIM signature: " + reason},
		{outKeyNotFound, config.Reject, 'y', "550 5.7.20 No passing DKIM signature: no key for signature"},
		{outPolicy, config.Reject, 'y', "550 5.7.20 No passing DKIM signature: " + reason},
		{outNoSignature, config.Reject, 'y', "550 5.7.20 No DKIM signature"},
		{outNoSignature, config.Tempfail, 'y', "451 4.7.20 No DKIM signature"},
		{outSignError, config.Tempfail, 'y', "451 4.3.0 DKIM signing failed, try again later"},
		{outSignError, config.Reject, 'y', "550 5.7.0 DKIM signing failed"},
		{outInternalError, config.Tempfail, 'y', "451 4.3.0 Internal error in the DKIM milter, try again later"},
		{outInternalError, config.Reject, 'y', "550 5.3.0 Internal error in the DKIM milter"},
		{outKeyNotFound, config.Quarantine, 0, "DKIM: " + reason},
		{outNoSignature, config.Quarantine, 0, "DKIM: no DKIM signature"},
		{outSignError, config.Quarantine, 0, "DKIM: signing failed, held unsigned"},
		{outInternalError, config.Quarantine, 0, "DKIM: internal error"},
		{outPolicy, config.Discard, 'd', ""},
		{outSignError, config.Discard, 'd', ""},
		{outInternalError, config.Discard, 'd', ""},
		{outBadSignature, config.Accept, 0, ""},
	}
	for _, tt := range tests {
		resp, q := answer(tt.o, tt.a, reason)
		switch {
		case tt.code == 0 && resp != nil, tt.code != 0 && resp == nil:
			t.Errorf("%s %s: response %v", tt.o, tt.a, resp)
		case resp != nil && resp.Response().Code != tt.code:
			t.Errorf("%s %s: answer %c, want %c", tt.o, tt.a, resp.Response().Code, tt.code)
		case tt.code == 'y' && string(resp.Response().Data) != tt.text+"\x00":
			t.Errorf("%s %s: reply %q, want %q", tt.o, tt.a, resp.Response().Data, tt.text)
		case tt.code == 0 && q != tt.text:
			t.Errorf("%s %s: quarantine %q, want %q", tt.o, tt.a, q, tt.text)
		case resp != nil && !resp.Continue():
			// go-milter would drop the session, and with it the
			// connection's client address (doc/postfix.md).
			t.Errorf("%s %s: go-milter takes %c for the end of the session", tt.o, tt.a, tt.code)
		}
	}
	if respDiscard.Response().Code != byte(gomilter.ActDiscard) {
		t.Error("discard is not SMFIR_DISCARD")
	}
}
