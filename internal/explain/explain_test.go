package explain

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/internal/dkim"
	"github.com/dkimmilter/dkimmilter/internal/dns"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
	"github.com/dkimmilter/dkimmilter/verifier"
)

// explainMsg has what the probes need: a signature separator with its
// trailing space, a link, a line that an mbox would quote.
const explainMsg = `From: Alice <alice@example.com>
To: list@lists.example.org
Subject: Quarterly numbers
Date: Mon, 23 Nov 2026 10:00:00 +0000
Message-ID: <q4@example.com>

Hello Bob,

the numbers are at https://example.com/q4 as promised.
From now on they will be there every quarter.

-- 
Alice
`

const explainMIME = `From: Alice <alice@example.com>
To: list@lists.example.org
Subject: Quarterly numbers
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b1"

--b1
Content-Type: text/plain

Hello Bob.
--b1
Content-Type: text/csv

q,n
4,42
--b1--
`

func TestExplain(t *testing.T) {
	key := testkit.RSAKey(2048)
	txt := map[string][]string{"sel._domainkey.example.com": {testkit.KeyRecord(key, "")}}
	tags := func(c string, extra string) string {
		return "v=1; a=rsa-sha256; c=" + c + "; d=example.com; s=sel; t=1795000000; x=1795604800; h=from:to:subject:date:message-id:content-type" + extra
	}
	relaxed := testkit.Sign(t, explainMsg, tags("relaxed/relaxed", ""), key)
	// z= (RFC 6376 §3.5): the signer's copies of the fields it signed.
	copies := testkit.Sign(t, explainMsg, tags("relaxed/relaxed", "; z=From:Alice=20<alice@example.com>|To:list@lists.example.org|Subject:Quarterly=20numbers"), key)
	other, err := rsa.GenerateKey(rand.Reader, 2048) // testkit.RSAKey(2048) is key itself
	if err != nil {
		t.Fatal(err)
	}
	otherKey := map[string][]string{"sel._domainkey.example.com": {testkit.KeyRecord(other, "")}}
	simple := testkit.Sign(t, explainMsg, tags("simple/simple", ""), key)
	footer := "\r\n--\r\nlist mailing list\r\nhttps://lists.example.org/unsubscribe\r\n"
	expiredTags := "v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=sel; t=1794000000; x=1794600000; h=from:to:subject"
	expired := testkit.Sign(t, explainMsg, expiredTags, key)
	future := testkit.Sign(t, explainMsg, "v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=sel; t=1795086400; h=from:to:subject", key)
	mime := testkit.Sign(t, explainMIME, tags("relaxed/relaxed", ""), key)
	// bh= of the body hashed with LF line ends, as a broken signer would.
	lfBH := base64.StdEncoding.EncodeToString(lfBodyHash(&dkim.Signature{BodyCanon: dkim.Relaxed, Length: -1, Hash: "sha256"}, splitLines(testkit.CRLF([]byte(explainMsg[strings.Index(explainMsg, "\n\n")+2:])))))
	// rsa-sha1 is explained with SHA-1 hashes; intact it is policy, and the
	// what-ifs count a policy for rsa-sha1 as verifying.
	sha1Tags := func(c string) string { return strings.Replace(tags(c, ""), "rsa-sha256", "rsa-sha1", 1) }
	sha1 := testkit.Sign(t, explainMsg, sha1Tags("relaxed/relaxed"), key)
	sha1Simple := testkit.Sign(t, explainMsg, sha1Tags("simple/simple"), key)
	sha1Expired := testkit.Sign(t, explainMsg, strings.Replace(expiredTags, "rsa-sha256", "rsa-sha1", 1), key)
	lfBH1 := base64.StdEncoding.EncodeToString(lfBodyHash(&dkim.Signature{BodyCanon: dkim.Relaxed, Length: -1, Hash: "sha1"}, splitLines(testkit.CRLF([]byte(explainMsg[strings.Index(explainMsg, "\n\n")+2:])))))

	tests := []struct {
		name   string
		msg    string
		txt    map[string][]string
		result verifier.Result
		err    error  // the milter's reason
		detail error  // Detail's reason (the re-run for x=/t=)
		probe  string // Probe.Kind
		text   string // in Probe.Text or a header hint
		lines  int    // len(Probe.Lines)
		verif  bool   // Probe.Verifies
		not    string // in no header hint
	}{
		{name: "pass", msg: relaxed, result: verifier.Pass},
		{name: "pass, LF line ends", msg: strings.ReplaceAll(relaxed, "\r\n", "\n"), result: verifier.Pass},
		{name: "pass, simple, LF line ends", msg: strings.ReplaceAll(simple, "\r\n", "\n"), result: verifier.Pass},
		{name: "pass, as delivered", msg: "Authentication-Results: mx.example.net; dkim=pass\r\nReceived: from a by b\r\n" + relaxed, result: verifier.Pass},
		{name: "pass, mbox From line", msg: "From alice@example.com Mon Nov 23 10:00:00 2026\n" + strings.ReplaceAll(relaxed, "\r\n", "\n"), result: verifier.Pass},
		{name: "footer", msg: relaxed + footer, result: verifier.Fail, err: verifier.ErrBodyHash, probe: ProbeFooter, text: "without its last 4 lines", lines: 4, verif: true},
		{name: "footer, LF file", msg: strings.ReplaceAll(relaxed+footer, "\r\n", "\n"), result: verifier.Fail, err: verifier.ErrBodyHash, probe: ProbeFooter, lines: 4, verif: true},
		{name: "long footer at a separator", msg: relaxed + "\r\n_____\r\n" + strings.Repeat("legal text\r\n", 50), result: verifier.Fail, err: verifier.ErrBodyHash, probe: ProbeFooter, lines: 52, verif: true},
		{name: "footer and Subject tag", msg: strings.Replace(relaxed, "Subject: ", "Subject: [list] ", 1) + footer, result: verifier.Fail, err: verifier.ErrBodyHash, probe: ProbeFooter, verif: false},
		{name: "MIME footer part", msg: strings.Replace(mime, "--b1--", "--b1\r\nContent-Type: text/plain\r\n\r\nlist footer\r\n--b1--", 1), result: verifier.Fail, err: verifier.ErrBodyHash, probe: ProbeMIMEFooter, text: "a footer MIME part", lines: 4, verif: true},
		{name: "link rewritten", msg: strings.Replace(relaxed, "https://example.com/q4", "https://safe.example.net/?u=example.com%2Fq4", 1), result: verifier.Fail, err: verifier.ErrBodyHash, probe: ProbeNone, text: probeNoneText},
		{name: "sig separator stripped, simple", msg: strings.Replace(simple, "-- \r\n", "--\r\n", 1), result: verifier.Fail, err: verifier.ErrBodyHash, probe: ProbeSpaceRemoved, text: `"-- "`, lines: 1, verif: true},
		{name: "sig separator stripped, relaxed", msg: strings.Replace(relaxed, "-- \r\n", "--\r\n", 1), result: verifier.Pass},
		{name: "trailing space added, simple", msg: strings.Replace(simple, "Hello Bob,", "Hello Bob,  ", 1), result: verifier.Fail, err: verifier.ErrBodyHash, probe: ProbeSpaceAdded, lines: 1, verif: true},
		{name: "CR CR LF", msg: strings.Replace(simple, "Alice\r\n", "Alice\r\r\n", 1), result: verifier.Fail, err: verifier.ErrBodyHash, probe: ProbeLineEnds, text: "doubled CRs", verif: true},
		{name: "mbox quoting", msg: strings.Replace(relaxed, "\r\nFrom now", "\r\n>From now", 1), result: verifier.Fail, err: verifier.ErrBodyHash, probe: ProbeMboxFrom, lines: 1, verif: true},
		{name: "c= says simple, bh= is relaxed", msg: strings.Replace(relaxed, "c=relaxed/relaxed", "c=relaxed/simple", 1), result: verifier.Fail, err: verifier.ErrBodyHash, probe: ProbeCanonicalization, text: "under relaxed body canonicalization"},
		{name: "signed with LF line ends", msg: replaceBH(t, testkit.Sign(t, explainMsg, tags("relaxed/relaxed", ""), key), lfBH), result: verifier.Fail, err: verifier.ErrBodyHash, probe: ProbeLineEnds, text: "bare LF"},
		{name: "Subject altered", msg: strings.Replace(relaxed, "Quarterly", "Annual", 1), result: verifier.Fail, err: verifier.ErrSignature,
			text: "is the one that made this signature (the signature opens with it to a sha256 digest), so the signed header changed after signing", not: "not the one"},
		{name: "Subject altered, z= copies", msg: strings.Replace(copies, "Subject: Quarterly", "Subject: Annual", 1), result: verifier.Fail, err: verifier.ErrSignature,
			text: `the signed header Subject changed: it was "Quarterly numbers" when signed, it is "Annual numbers" now`, not: "not the one"},
		{name: "key replaced", msg: relaxed, txt: otherKey, result: verifier.Fail, err: verifier.ErrSignature,
			text: "is not the one that made this signature (the signature does not open with it)", not: "changed after signing"},
		{name: "Subject tagged", msg: strings.Replace(relaxed, "Subject: ", "Subject: [list] ", 1), result: verifier.Fail, err: verifier.ErrSignature, text: `"[list] " is removed from Subject`},
		{name: "Subject tagged, simple", msg: strings.Replace(simple, "Subject: ", "Subject: [SPAM] ", 1), result: verifier.Fail, err: verifier.ErrSignature, text: `"[SPAM] " is removed`},
		{name: "Subject tag at the end", msg: strings.Replace(relaxed, "Quarterly numbers", "Quarterly numbers [External]", 1), result: verifier.Fail, err: verifier.ErrSignature, text: `" [External]"`},
		{name: "From rewritten", msg: strings.Replace(relaxed, "From: Alice <alice@example.com>", "From: Alice via list <list@lists.example.org>\r\nX-Original-From: Alice <alice@example.com>", 1), result: verifier.Fail, err: verifier.ErrSignature, text: "X-Original-From holds"},
		{name: "expired, otherwise valid", msg: expired, result: verifier.PermError, err: verifier.ErrExpired, detail: nil},
		{name: "expired and broken", msg: expired + footer, result: verifier.PermError, err: verifier.ErrExpired, detail: verifier.ErrBodyHash, probe: ProbeFooter, lines: 4, verif: true},
		{name: "future t=", msg: future, result: verifier.PermError, err: verifier.ErrFuture, detail: nil},
		{name: "no key", msg: relaxed, txt: map[string][]string{}, result: verifier.PermError, err: verifier.ErrNoKey, detail: verifier.ErrNoKey},
		{name: "rsa-sha1", msg: sha1, result: verifier.Policy, err: dkim.ErrSHA1},
		{name: "rsa-sha1, footer", msg: sha1 + footer, result: verifier.Fail, err: verifier.ErrBodyHash, probe: ProbeFooter, lines: 4, verif: true},
		{name: "rsa-sha1, trailing space added, simple", msg: strings.Replace(sha1Simple, "Hello Bob,", "Hello Bob,  ", 1), result: verifier.Fail, err: verifier.ErrBodyHash, probe: ProbeSpaceAdded, lines: 1, verif: true},
		{name: "rsa-sha1, c= says simple, bh= is relaxed", msg: strings.Replace(sha1, "c=relaxed/relaxed", "c=relaxed/simple", 1), result: verifier.Fail, err: verifier.ErrBodyHash, probe: ProbeCanonicalization},
		{name: "rsa-sha1, signed with LF line ends", msg: replaceBH(t, sha1, lfBH1), result: verifier.Fail, err: verifier.ErrBodyHash, probe: ProbeLineEnds, text: "bare LF"},
		{name: "rsa-sha1, Subject altered", msg: strings.Replace(sha1, "Quarterly", "Annual", 1), result: verifier.Fail, err: verifier.ErrSignature,
			text: "is the one that made this signature (the signature opens with it to a sha1 digest)", not: "not the one"},
		{name: "rsa-sha1, Subject tagged, simple", msg: strings.Replace(sha1Simple, "Subject: ", "Subject: [SPAM] ", 1), result: verifier.Fail, err: verifier.ErrSignature, text: `"[SPAM] " is removed`},
		{name: "rsa-sha1, expired, otherwise verifies", msg: sha1Expired, result: verifier.PermError, err: verifier.ErrExpired, detail: dkim.ErrSHA1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &dns.Fake{TXT: txt}
			if tc.txt != nil {
				r.TXT = tc.txt
			}
			opts := verifier.Options{Resolver: r, Now: func() time.Time { return now }}
			rep, err := Explain(context.Background(), opts, []byte(tc.msg))
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Signatures) != 1 {
				t.Fatalf("%d signatures", len(rep.Signatures))
			}
			e := rep.Signatures[0]
			if e.Verification.Result != tc.result || !errors.Is(e.Verification.Err, tc.err) && tc.err != nil {
				t.Fatalf("result %s (%v), want %s (%v)", e.Verification.Result, e.Verification.Err, tc.result, tc.err)
			}
			// Explain's results are the verifier's own.
			m := verifier.New(opts).Begin(context.Background(), rep.Header)
			m.Write(rep.Body)
			if got := m.Finish(); got[0].Result != e.Verification.Result {
				t.Errorf("Explain says %s, the verifier %s", e.Verification.Result, got[0].Result)
			}
			if errors.Is(tc.err, verifier.ErrExpired) || errors.Is(tc.err, verifier.ErrFuture) {
				if e.Clock == nil {
					t.Fatal("no clock check")
				}
				if !errors.Is(e.Detail.Err, tc.detail) || (tc.detail == nil) != (e.Detail.Result == verifier.Pass) {
					t.Errorf("otherwise %s (%v), want %v", e.Detail.Result, e.Detail.Err, tc.detail)
				}
				if e.Clock.Expired != errors.Is(tc.err, verifier.ErrExpired) {
					t.Errorf("Clock.Expired = %v", e.Clock.Expired)
				}
			}
			if Verified(e.Verification) && !bytes.Equal(e.BodyHashes.Computed(), e.BodyHashes.Signed) {
				t.Errorf("verified, but the computed body hash %x is not bh= %x", e.BodyHashes.Computed(), e.BodyHashes.Signed)
			}
			checkProbe(t, e, tc.probe, tc.text, tc.lines, tc.verif)
			if hints := strings.Join(e.HeaderHints, "\n"); tc.not != "" && strings.Contains(hints, tc.not) {
				t.Errorf("header hints say %q:\n%s", tc.not, hints)
			}
		})
	}
}

func checkProbe(t *testing.T, e *Explanation, kind, text string, lines int, verifies bool) {
	t.Helper()
	if kind == "" {
		if e.Probe != nil {
			t.Errorf("unexpected probe %+v", e.Probe)
		}
		if text != "" && !strings.Contains(strings.Join(e.HeaderHints, "\n"), text) {
			t.Errorf("header hints %q, want %q", e.HeaderHints, text)
		}
		if errors.Is(e.Detail.Err, verifier.ErrSignature) && len(e.SignedHeaders) == 0 {
			t.Error("no signed header block")
		}
		return
	}
	p := e.Probe
	if p == nil {
		t.Fatal("no probe")
	}
	if p.Kind != kind || !strings.Contains(p.Text, text) {
		t.Errorf("probe %s %q, want %s with %q", p.Kind, p.Text, kind, text)
	}
	if lines > 0 && len(p.Lines) != lines {
		t.Errorf("probe lines %q, want %d", p.Lines, lines)
	}
	if p.Verifies != verifies {
		t.Errorf("Verifies = %v", p.Verifies)
	}
}

// replaceBH swaps the bh= value of the top signature.
func replaceBH(t *testing.T, msg, bh string) string {
	t.Helper()
	i := strings.Index(msg, "bh=")
	j := strings.Index(msg[i:], ";")
	return msg[:i] + "bh=" + bh + msg[i+j:]
}

func TestExplainDetails(t *testing.T) {
	key := testkit.RSAKey(2048)
	signed := testkit.Sign(t, explainMsg, "v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=sel; t=1795000000; h=from:to:subject", key)
	r := &dns.Fake{TXT: map[string][]string{"sel._domainkey.example.com": {"v=spf1 -all", testkit.KeyRecord(key, "t=y; ")}}, AD: true}
	opts := verifier.Options{Resolver: r, Now: func() time.Time { return now }}

	rep, err := Explain(context.Background(), opts, []byte(strings.Replace(signed, "Quarterly", "Annual", 1)))
	if err != nil {
		t.Fatal(err)
	}
	e := rep.Signatures[0]
	if a := e.DNS; a == nil || a.Name != "sel._domainkey.example.com" || len(a.Records) != 2 || !a.Authenticated || a.Outcome() != "2 TXT records" {
		t.Errorf("DNS answer %+v", e.DNS)
	}
	if d := e.Detail; d.KeyType != "rsa" || d.KeyBits != 2048 || !d.Testing {
		t.Errorf("key %s %d testing=%v", d.KeyType, d.KeyBits, d.Testing)
	}
	want := []string{"from:Alice <alice@example.com>", "to:list@lists.example.org", "subject:Annual numbers"}
	if len(e.SignedHeaders) != 4 || fmt.Sprint(e.SignedHeaders[:3]) != fmt.Sprint(want) || !strings.HasPrefix(e.SignedHeaders[3], "dkim-signature:v=1;") || !strings.HasSuffix(e.SignedHeaders[3], "b=") {
		t.Errorf("signed headers %q", e.SignedHeaders)
	}
	if b := e.BodyHashes; b == nil || string(b.Computed()) != string(b.Signed) || b.OtherMatches() {
		t.Errorf("body hashes %+v", b)
	}
	if rep.AuthorDomain != "example.com" || e.Alignment == nil || !e.Alignment.Strict || !e.Alignment.Relaxed {
		t.Errorf("alignment %+v", e.Alignment)
	}

	// NXDOMAIN is shown as such, with its name.
	nx := opts
	nx.Resolver = &dns.Fake{}
	rep, _ = Explain(context.Background(), nx, []byte(signed))
	if a := rep.Signatures[0].DNS; a == nil || !strings.HasPrefix(a.Outcome(), "NXDOMAIN") {
		t.Errorf("NXDOMAIN answer %+v", a)
	}

	// Unsigned, LF, a note about it.
	rep, _ = Explain(context.Background(), opts, []byte(explainMsg))
	if len(rep.Verifications) != 0 || len(rep.Notes) != 1 || !strings.Contains(rep.Notes[0], "LF") {
		t.Errorf("unsigned: %d results, notes %q", len(rep.Verifications), rep.Notes)
	}
	if _, err := Explain(context.Background(), opts, []byte("\n\nno header")); err == nil {
		t.Error("no header fields: no error")
	}
}

// The what-if runs replay the first run's DNS answers: one query per name.
func TestExplainReplaysDNS(t *testing.T) {
	key := testkit.RSAKey(2048)
	signed := testkit.Sign(t, explainMsg, "v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=sel; h=from:to:subject", key)
	cr := &dns.Fake{TXT: map[string][]string{"sel._domainkey.example.com": {testkit.KeyRecord(key, "")}}}
	opts := verifier.Options{Resolver: cr, Now: func() time.Time { return now }}
	rep, err := Explain(context.Background(), opts, []byte(strings.Replace(signed, "Subject: ", "Subject: [list] ", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Signatures[0].HeaderHints) == 0 {
		t.Fatal("no hint")
	}
	if n := cr.Lookups("sel._domainkey.example.com"); n != 1 {
		t.Errorf("%d key queries, want 1", n)
	}
}

func TestSubjectTags(t *testing.T) {
	tests := []struct{ in, tag, out string }{
		{" [list] Hello", "[list] ", " Hello"},
		{" Re: [list] Hello", "[list] ", " Re: Hello"},
		{" Hello [External]", " [External]", " Hello"},
		{" ***SPAM*** Hello", "***SPAM*** ", " Hello"},
	}
	for _, tc := range tests {
		got := subjectTags(tc.in)
		found := false
		for _, g := range got {
			if g.tag == tc.tag && g.value == tc.out {
				found = true
			}
		}
		if !found {
			t.Errorf("subjectTags(%q) = %+v, want %q -> %q", tc.in, got, tc.tag, tc.out)
		}
	}
	if got := subjectTags(" Hello"); len(got) != 0 {
		t.Errorf("no tag: %+v", got)
	}
}

var now = time.Unix(1795000000, 0)
