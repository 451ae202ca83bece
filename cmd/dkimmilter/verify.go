package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/authres"
	"github.com/dkimmilter/dkimmilter/internal/dns"
	"github.com/dkimmilter/dkimmilter/internal/explain"
	"github.com/dkimmilter/dkimmilter/verifier"
)

const verifyHelp = `
Verify a saved message (FILE, or standard input for - or no FILE) as the
milter would, and explain every signature: the result and reason it would
stamp, the Authentication-Results it would add, the tags, the DNS answer,
the key, and for a failure why: a footer or white space added to the body,
a Subject tag, an expired signature that is otherwise valid. LF or CRLF
line ends; as sent or as delivered (our Received and A-R fields are fine).
-dns HOST:PORT (repeatable) replaces [dns] nameservers; -json prints JSON.
Exit codes: 0 a signature passes; 1 signatures, none passes (fail,
permerror, policy, neutral); 2 not signed; 3 none passes and a DNS
temperror could change that; 64 usage; 66 FILE unreadable or not a
message; 78 config error.`

// verifyJSONHelp documents the -json output; its field names are stable.
const verifyJSONHelp = `
JSON output (-json): one object.
  file, authserv_id, authentication_results (the value, unfolded),
  notes[] (how the file was read), from_domain or from_error, exit_code,
  signatures[]: one per DKIM-Signature, top first, each with
    index (1-based), result, reason, comment,
    d, i, s, a, c, h[], t, x (RFC 3339), l (absent: whole body),
    dns {name, outcome, records[], error, authenticated (AD bit)},
    key {type, bits, testing},
    body_hash {canonicalization, signed, relaxed, simple} (base64),
    clock {expired, at, verified_at, otherwise_result, otherwise_reason},
    diagnosis {kind, text, lines[], verifies}; kind is one of
      canonicalization, footer, mime-footer, trailing-space-added,
      trailing-space-removed, line-ends, mbox-from-quoting, none,
    signed_headers[] (exactly what was hashed), header_hints[],
    alignment {from_domain, d, strict, relaxed, method,
      from_org {domain, org, why, queries[] {name, answer}}, d_org {…}}.
  Absent or empty fields were not computed or do not apply.
`

// Exit codes of the verify command, beside exitOK, exitFailure (none
// passes), exitUsage and exitConfig.
const (
	exitVerifyUnsigned = 2
	exitVerifyTemp     = 3
	exitVerifyNoInput  = 66 // EX_NOINPUT
)

// stringsFlag collects a repeatable flag.
type stringsFlag []string

func (s *stringsFlag) String() string     { return fmt.Sprint(*s) }
func (s *stringsFlag) Set(v string) error { *s = append(*s, v); return nil }

func runVerify(args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("verify", flag.ContinueOnError)
	fl.SetOutput(stderr)
	cfgPath := fl.String("config", "", "configuration file for [verify], [dns] and authserv_id (default "+config.DefaultPath+", built-in defaults if missing)")
	var servers stringsFlag
	fl.Var(&servers, "dns", "DNS server `HOST:PORT` to query instead of [dns] nameservers (repeatable)")
	asJSON := fl.Bool("json", false, "print JSON instead of text")
	fl.Usage = func() {
		fmt.Fprintf(stderr, "usage: dkimmilter verify [-config FILE] [-dns HOST:PORT]... [-json] [FILE|-]\n%s\n\n", verifyHelp[1:])
		fl.PrintDefaults()
		fmt.Fprint(stderr, verifyJSONHelp)
	}
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fl.NArg() > 1 {
		fmt.Fprintln(stderr, "dkimmilter verify: one message at a time")
		fl.Usage()
		return exitUsage
	}
	name := fl.Arg(0)
	raw, err := readMessage(name)
	if err != nil {
		fmt.Fprintf(stderr, "dkimmilter verify: %v\n", err)
		return exitVerifyNoInput
	}
	if name == "" || name == "-" {
		name = "(standard input)"
	}

	cfg, _, err := loadConfig(*cfgPath)
	if err != nil {
		printErrors(stderr, err)
		return exitConfig
	}
	nameservers := cfg.DNS.Nameservers
	if len(servers) > 0 {
		nameservers = servers
	}
	res, err := dns.NewClient(nameservers, cfg.DNS.Timeout)
	if err != nil {
		fmt.Fprintf(stderr, "dkimmilter verify: dns: %v\n", err)
		if len(servers) > 0 {
			return exitUsage
		}
		return exitConfig
	}
	// The milter's own verifier settings, so the milter's own results.
	authservID := cfg.AuthservID
	if authservID == "" {
		authservID, _ = os.Hostname()
	}
	rep, err := explain.Explain(context.Background(), verifier.ConfigOptions(cfg, res), raw)
	if err != nil {
		fmt.Fprintf(stderr, "dkimmilter verify: %s: %v\n", name, err)
		return exitVerifyNoInput
	}
	code := verifyExitCode(rep.Verifications)
	ar := authres.Format(authservID, verifier.AuthResults(rep.Verifications))
	if *asJSON {
		if err := writeVerifyJSON(stdout, name, authservID, ar, code, rep); err != nil {
			fmt.Fprintf(stderr, "dkimmilter verify: %v\n", err)
			return exitFailure
		}
		return code
	}
	writeVerifyText(stdout, name, ar, cfg.Mode.Verifies(), rep)
	return code
}

func readMessage(name string) ([]byte, error) {
	if name == "" || name == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(name)
}

// verifyExitCode: 0 when a signature passes; 3 when none does but a
// temperror might have (a retry could pass); 1 when every result is
// definite; 2 when there is nothing to verify.
func verifyExitCode(vs []*verifier.Verification) int {
	if len(vs) == 0 {
		return exitVerifyUnsigned
	}
	temp := false
	for _, v := range vs {
		switch v.Result {
		case verifier.Pass:
			return exitOK
		case verifier.TempError:
			temp = true
		}
	}
	if temp {
		return exitVerifyTemp
	}
	return exitFailure
}
