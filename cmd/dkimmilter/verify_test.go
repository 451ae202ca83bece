package main

import (
	"crypto"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/dkimmilter/dkimmilter/internal/dnstest"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
)

const verifyMsg = `From: Alice <alice@example.com>
To: list@lists.example.org
Subject: Quarterly numbers
Date: Mon, 23 Nov 2026 10:00:00 +0000
Message-ID: <q4@example.com>

Hello Bob,

the numbers are at https://example.com/q4 as promised.

-- 
Alice
`

type verifyFixture struct {
	dir, cfg string
	dns      *dnstest.Server
	key      crypto.Signer
}

// newVerifyFixture publishes a key at sel._domainkey.example.com and
// writes a config whose own nameserver is dead, so that every test also
// shows that -dns replaces it.
func newVerifyFixture(t *testing.T) *verifyFixture {
	t.Helper()
	f := &verifyFixture{dir: t.TempDir(), dns: dnstest.New(t), key: testkit.RSAKey(2048)}
	f.dns.SetTXT("sel._domainkey.example.com", testkit.KeyRecord(f.key, ""))
	f.dns.SetTXT("sel._domainkey.mail.example.com", testkit.KeyRecord(f.key, ""))
	f.dns.SetTXT("_dmarc.example.com", "v=DMARC1; p=reject")
	f.cfg = filepath.Join(f.dir, "dkimmilter.toml")
	cfg := "authserv_id = \"mx.example.com\"\n[dns]\nnameservers = [\"127.0.0.1:1\"]\ntimeout = \"2s\"\n"
	if err := os.WriteFile(f.cfg, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *verifyFixture) sign(t *testing.T, msg, tags string) string {
	t.Helper()
	out, err := testkit.SignRaw(testkit.CRLF([]byte(msg)), tags, f.key)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func (f *verifyFixture) file(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(f.dir, fmt.Sprintf("msg%d.eml", time.Now().UnixNano()))
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestVerifyCommand(t *testing.T) {
	f := newVerifyFixture(t)
	f.dns.SetTXT("_dmarc.mail.example.org", "v=DMARC1; p=none")
	f.dns.SetRcode("sel._domainkey.broken.example.com", dns.RcodeServerFailure)
	now := time.Now()
	std := "v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=sel; h=from:to:subject:date:message-id"
	signed := f.sign(t, verifyMsg, std)
	simple := f.sign(t, verifyMsg, strings.Replace(std, "relaxed/relaxed", "simple/simple", 1))
	expired := f.sign(t, verifyMsg, fmt.Sprintf("%s; t=%d; x=%d", std, now.Add(-10*24*time.Hour).Unix(), now.Add(-3*24*time.Hour-time.Hour).Unix()))
	footer := "\r\n--\r\nlist mailing list\r\nhttps://lists.example.org/unsubscribe\r\n"
	sha1Std := strings.Replace(std, "rsa-sha256", "rsa-sha1", 1)
	sha1 := f.sign(t, verifyMsg, sha1Std)
	sha1Expired := f.sign(t, verifyMsg, fmt.Sprintf("%s; t=%d; x=%d", sha1Std, now.Add(-10*24*time.Hour).Unix(), now.Add(-3*24*time.Hour-time.Hour).Unix()))

	tests := []struct {
		name string
		msg  string
		code int
		want []string // in stdout, in order
	}{
		{"pass", signed, 0, []string{"Authentication-Results: mx.example.com;\n\tdkim=pass (2048-bit rsa key)", "signature 1 of 1: pass (2048-bit rsa key)",
			"key: sel._domainkey.example.com TXT: 1 TXT record", "rsa, 2048 bits; testing: no", "DNSSEC: not validated",
			"strict: aligned, relaxed: aligned"}},
		{"LF line ends", strings.ReplaceAll(signed, "\r\n", "\n"), 0, []string{"note: the file has LF line ends", "signature 1 of 1: pass"}},
		{"as delivered", "Authentication-Results: mx.example.com;\r\n\tdkim=pass header.d=example.com\r\nReceived: from a by b\r\n" + signed, 0, []string{"signature 1 of 1: pass"}},
		{"footer", signed + footer, 1, []string{`dkim=fail reason="body hash did not verify"`, "signature 1 of 1: fail: body hash did not verify",
			"bh= (signed)", "computed, relaxed", "computed, simple",
			"diagnosis: the body matches the signed hash without its last 4 lines: something appended a footer after signing (a mailing list or a gateway); the removed lines were:",
			"    | \n    | --\n    | list mailing list\n    | https://lists.example.org/unsubscribe\n", "with that undone, the signature verifies"}},
		{"link rewritten", strings.Replace(signed, "https://example.com/q4", "https://safe.example.net/?u=https%3A%2F%2Fexample.com%2Fq4", 1), 1, []string{
			"body hash did not verify", "diagnosis: no common modification explains it: the body was changed after signing"}},
		{"subject altered", strings.Replace(signed, "Quarterly", "Annual", 1), 1, []string{"signature 1 of 1: fail: signature did not verify",
			"signed header block (relaxed canonicalization; exactly what was hashed):",
			"    | from:Alice <alice@example.com>\n    | to:list@lists.example.org\n    | subject:Annual numbers\n", "    | dkim-signature:v=1; a=rsa-sha256;",
			"hint: the key published at sel._domainkey.example.com is the one that made this signature (the signature opens with it to a sha256 digest), so the signed header changed after signing"}},
		{"subject tagged", strings.Replace(signed, "Subject: ", "Subject: [list] ", 1), 1, []string{"signature did not verify", "| subject:[list] Quarterly numbers",
			`hint: the signature verifies once "[list] " is removed from Subject: a mailing list or a filter tagged the Subject after signing`}},
		{"expired", expired, 1, []string{`dkim=permerror reason="signature expired"`, "signature 1 of 1: permerror: signature expired",
			"(expired 3 days ago)", "clock: verified again as of", ": pass: expired, otherwise valid"}},
		{"expired and broken", expired + footer, 1, []string{"signature expired", "fail (body hash did not verify): expired, and broken as well",
			"without its last 4 lines"}},
		{"no key", strings.Replace(signed, "s=sel", "s=nokey", 1), 1, []string{`reason="no key for signature"`,
			"key: nokey._domainkey.example.com TXT: NXDOMAIN (no such name) from " + f.dns.Addr}},
		{"white space stripped", strings.Replace(simple, "-- \r\n", "--\r\n", 1), 1, []string{"body hash did not verify",
			`the signature separator "--" gets back its trailing space`, "    | --\n", "with that undone, the signature verifies"}},
		{"relaxed alignment by tree walk", f.sign(t, verifyMsg, strings.Replace(std, "d=example.com", "d=mail.example.com", 1)), 0, []string{
			"DMARC alignment of d=mail.example.com with From domain example.com:", "strict: not aligned, relaxed: aligned",
			"organizational domain by RFC 9989 DNS tree walk:", "mail.example.com -> example.com: the DMARC record with the fewest labels is at _dmarc.example.com"}},
		{"temperror", f.sign(t, verifyMsg, strings.Replace(std, "d=example.com", "d=broken.example.com", 1)), 3, []string{
			`dkim=temperror reason="DNS server failure"`, "TXT: SERVFAIL from"}},
		{"unsigned", verifyMsg, 2, []string{"dkim=none", "no DKIM-Signature: the message is not signed"}},
		{"rsa-sha1", sha1, 1, []string{`dkim=policy reason="rsa-sha1 is not accepted (RFC 8301)"`, "signature 1 of 1: policy: rsa-sha1 is not accepted (RFC 8301) (2048-bit rsa key)",
			"algorithm: rsa-sha1: the signature verifies, but RFC 8301 §3.1 forbids", "key: sel._domainkey.example.com TXT: 1 TXT record",
			"(DMARC counts a signature only when it passes)"}},
		{"rsa-sha1, footer", sha1 + footer, 1, []string{`dkim=fail reason="body hash did not verify"`, "signature 1 of 1: fail: body hash did not verify",
			"algorithm: rsa-sha1, verified with SHA-1", "diagnosis: the body matches the signed hash without its last 4 lines",
			"with that undone, the signature verifies (rsa-sha1: policy, not pass)"}},
		{"rsa-sha1, subject altered", strings.Replace(sha1, "Quarterly", "Annual", 1), 1, []string{`dkim=fail reason="signature did not verify"`,
			"hint: the key published at sel._domainkey.example.com is the one that made this signature (the signature opens with it to a sha1 digest)"}},
		{"rsa-sha1, expired", sha1Expired, 1, []string{"signature 1 of 1: permerror: signature expired",
			"clock: verified again as of", ": policy (rsa-sha1 is not accepted (RFC 8301)): expired, otherwise it verifies (rsa-sha1: policy at best)"}},
		{"two signatures, one passes", f.sign(t, signed, strings.Replace(std, "s=sel", "s=nokey", 1)), 0, []string{
			"signature 1 of 2: permerror: no key for signature", "signature 2 of 2: pass"}},
		{"unusable signature field", "DKIM-Signature: v=1; d=example.com; s=sel\r\n" + verifyMsg, 1, []string{
			"signature 1 of 1: permerror: signature missing required tag a=", "the signature field itself is unusable"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCmd("verify", "-config", f.cfg, "-dns", f.dns.Addr, f.file(t, tc.msg))
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr: %s", code, tc.code, errOut)
			}
			rest := out
			for _, w := range tc.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Errorf("output lacks (or has out of order) %q", w)
					continue
				}
				rest = rest[i+len(w):]
			}
			if t.Failed() {
				t.Logf("output:\n%s", out)
			}
		})
	}
}

// With the DNS gone for DMARC, alignment falls back on the heuristic and
// says so.
func TestVerifyAlignmentHeuristic(t *testing.T) {
	f := newVerifyFixture(t)
	f.dns.SetRcode("_dmarc.mail.example.com", dns.RcodeServerFailure)
	std := "v=1; a=rsa-sha256; c=relaxed/relaxed; d=mail.example.com; s=sel; h=from:to:subject"
	code, out, _ := runCmd("verify", "-config", f.cfg, "-dns", f.dns.Addr, f.file(t, f.sign(t, verifyMsg, std)))
	if code != 0 || !strings.Contains(out, "organizational domain by heuristic: DNS unavailable") || !strings.Contains(out, "relaxed: aligned") {
		t.Errorf("exit %d, output:\n%s", code, out)
	}
}

func TestVerifyJSON(t *testing.T) {
	f := newVerifyFixture(t)
	signed := f.sign(t, verifyMsg, "v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=sel; t=1795000000; h=from:to:subject")
	footer := "\r\n--\r\nlist footer\r\n"
	code, out, errOut := runCmd("verify", "-json", "-config", f.cfg, "-dns", f.dns.Addr, f.file(t, signed+footer))
	if code != 1 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var got struct {
		File                  string `json:"file"`
		AuthservID            string `json:"authserv_id"`
		AuthenticationResults string `json:"authentication_results"`
		FromDomain            string `json:"from_domain"`
		ExitCode              int    `json:"exit_code"`
		Signatures            []struct {
			Index  int        `json:"index"`
			Result string     `json:"result"`
			Reason string     `json:"reason"`
			D      string     `json:"d"`
			S      string     `json:"s"`
			H      []string   `json:"h"`
			T      *time.Time `json:"t"`
			DNS    struct {
				Name    string   `json:"name"`
				Outcome string   `json:"outcome"`
				Records []string `json:"records"`
			} `json:"dns"`
			Key struct {
				Type string `json:"type"`
				Bits int    `json:"bits"`
			} `json:"key"`
			BodyHash struct {
				Canonicalization string `json:"canonicalization"`
				Signed, Relaxed  []byte
			} `json:"body_hash"`
			Diagnosis struct {
				Kind     string   `json:"kind"`
				Lines    []string `json:"lines"`
				Verifies bool     `json:"verifies"`
			} `json:"diagnosis"`
			Alignment struct {
				Strict  bool `json:"strict"`
				Relaxed bool `json:"relaxed"`
			} `json:"alignment"`
		} `json:"signatures"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if got.AuthservID != "mx.example.com" || got.ExitCode != 1 || got.FromDomain != "example.com" ||
		!strings.HasPrefix(got.AuthenticationResults, `mx.example.com; dkim=fail reason="body hash did not verify"`) {
		t.Errorf("top level: %+v", got)
	}
	if len(got.Signatures) != 1 {
		t.Fatalf("%d signatures", len(got.Signatures))
	}
	s := got.Signatures[0]
	if s.Index != 1 || s.Result != "fail" || s.Reason != "body hash did not verify" || s.D != "example.com" || s.S != "sel" ||
		len(s.H) != 3 || s.T == nil || !s.T.Equal(time.Unix(1795000000, 0)) {
		t.Errorf("signature: %+v", s)
	}
	if s.DNS.Name != "sel._domainkey.example.com" || len(s.DNS.Records) != 1 || s.Key.Type != "rsa" || s.Key.Bits != 2048 {
		t.Errorf("dns/key: %+v %+v", s.DNS, s.Key)
	}
	if s.BodyHash.Canonicalization != "relaxed" || len(s.BodyHash.Signed) != 32 || string(s.BodyHash.Signed) == string(s.BodyHash.Relaxed) {
		t.Errorf("body hash: %+v", s.BodyHash)
	}
	if s.Diagnosis.Kind != "footer" || len(s.Diagnosis.Lines) != 3 || !s.Diagnosis.Verifies || !s.Alignment.Strict || !s.Alignment.Relaxed {
		t.Errorf("diagnosis/alignment: %+v %+v", s.Diagnosis, s.Alignment)
	}

	// Unsigned: an empty list, not null.
	_, out, _ = runCmd("verify", "-json", "-config", f.cfg, "-dns", f.dns.Addr, f.file(t, verifyMsg))
	if !strings.Contains(out, `"signatures": []`) || !strings.Contains(out, `"exit_code": 2`) {
		t.Errorf("unsigned JSON:\n%s", out)
	}
}

func TestVerifyExitCodes(t *testing.T) {
	f := newVerifyFixture(t)
	badCfg := filepath.Join(f.dir, "bad.toml")
	os.WriteFile(badCfg, []byte("no_such_key = 1\n"), 0o644)
	msg := f.file(t, verifyMsg)
	tests := []struct {
		name string
		args []string
		code int
		err  string
	}{
		{"help", []string{"-h"}, exitOK, "JSON output (-json)"},
		{"two files", []string{msg, msg}, exitUsage, "one message at a time"},
		{"bad flag", []string{"-nope", msg}, exitUsage, "flag provided but not defined"},
		{"bad -dns", []string{"-config", f.cfg, "-dns", "dns.example.com", msg}, exitUsage, "invalid nameserver"},
		{"missing file", []string{"-config", f.cfg, filepath.Join(f.dir, "nope.eml")}, exitVerifyNoInput, "no such file"},
		{"not a message", []string{"-config", f.cfg, "-dns", f.dns.Addr, f.file(t, "\n\nbody only\n")}, exitVerifyNoInput, "not a mail message"},
		{"config error", []string{"-config", badCfg, msg}, exitConfig, "no_such_key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runCmd(append([]string{"verify"}, tc.args...)...)
			if code != tc.code || !strings.Contains(errOut, tc.err) {
				t.Errorf("exit %d, want %d; stderr %q lacks %q", code, tc.code, errOut, tc.err)
			}
		})
	}
}

// With mode = "s" the milter does not verify: the output says so.
func TestVerifyModeSign(t *testing.T) {
	f := newVerifyFixture(t)
	cfg := filepath.Join(f.dir, "sign-only.toml")
	os.WriteFile(cfg, []byte("mode = \"s\"\nauthserv_id = \"mx.example.com\"\n"), 0o644)
	code, out, errOut := runCmd("verify", "-config", cfg, "-dns", f.dns.Addr, f.file(t, verifyMsg))
	if code != exitVerifyUnsigned || !strings.Contains(out, "the milter does not verify") {
		t.Errorf("exit %d, stderr %s, output:\n%s", code, errOut, out)
	}
}
