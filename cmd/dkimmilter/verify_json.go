package main

import (
	"encoding/json"
	"io"
	"strings"
	"time"

	"github.com/dkimmilter/dkimmilter/internal/dmarc"
	"github.com/dkimmilter/dkimmilter/internal/explain"
)

// The -json output. Field names are part of the interface (documented in
// verifyJSONHelp): add fields, never rename them.
type jsonVerify struct {
	File                  string          `json:"file"`
	AuthservID            string          `json:"authserv_id"`
	AuthenticationResults string          `json:"authentication_results"`
	Notes                 []string        `json:"notes,omitempty"`
	FromDomain            string          `json:"from_domain,omitempty"`
	FromError             string          `json:"from_error,omitempty"`
	ExitCode              int             `json:"exit_code"`
	Signatures            []jsonSignature `json:"signatures"`
}

type jsonSignature struct {
	Index   int    `json:"index"`
	Result  string `json:"result"`
	Reason  string `json:"reason,omitempty"`
	Comment string `json:"comment,omitempty"`

	D       string     `json:"d,omitempty"`
	I       string     `json:"i,omitempty"`
	S       string     `json:"s,omitempty"`
	A       string     `json:"a,omitempty"`
	C       string     `json:"c,omitempty"`
	H       []string   `json:"h,omitempty"`
	T       *time.Time `json:"t,omitempty"`
	X       *time.Time `json:"x,omitempty"`
	L       *int64     `json:"l,omitempty"`
	DNS     *jsonDNS   `json:"dns,omitempty"`
	Key     *jsonKey   `json:"key,omitempty"`
	Body    *jsonBody  `json:"body_hash,omitempty"`
	Clock   *jsonClock `json:"clock,omitempty"`
	Diag    *jsonDiag  `json:"diagnosis,omitempty"`
	Headers []string   `json:"signed_headers,omitempty"`
	Hints   []string   `json:"header_hints,omitempty"`
	Align   *jsonAlign `json:"alignment,omitempty"`
}

type jsonDNS struct {
	Name          string   `json:"name"`
	Outcome       string   `json:"outcome"`
	Records       []string `json:"records,omitempty"`
	Error         string   `json:"error,omitempty"`
	Authenticated bool     `json:"authenticated"`
}

type jsonKey struct {
	Type    string `json:"type"`
	Bits    int    `json:"bits"`
	Testing bool   `json:"testing"`
}

type jsonBody struct {
	Canonicalization string `json:"canonicalization"`
	Signed           []byte `json:"signed"`
	Relaxed          []byte `json:"relaxed"`
	Simple           []byte `json:"simple"`
}

type jsonClock struct {
	Expired         bool      `json:"expired"`
	At              time.Time `json:"at"`
	VerifiedAt      time.Time `json:"verified_at"`
	OtherwiseResult string    `json:"otherwise_result"`
	OtherwiseReason string    `json:"otherwise_reason,omitempty"`
}

type jsonDiag struct {
	Kind     string   `json:"kind"`
	Text     string   `json:"text"`
	Lines    []string `json:"lines,omitempty"`
	Verifies bool     `json:"verifies"`
}

type jsonAlign struct {
	FromDomain string   `json:"from_domain"`
	D          string   `json:"d"`
	Strict     bool     `json:"strict"`
	Relaxed    bool     `json:"relaxed"`
	Method     string   `json:"method,omitempty"`
	FromOrg    *jsonOrg `json:"from_org,omitempty"`
	DOrg       *jsonOrg `json:"d_org,omitempty"`
}

type jsonOrg struct {
	Domain  string      `json:"domain"`
	Org     string      `json:"org"`
	Why     string      `json:"why"`
	Queries []jsonQuery `json:"queries,omitempty"`
}

type jsonQuery struct {
	Name   string `json:"name"`
	Answer string `json:"answer"`
}

func writeVerifyJSON(w io.Writer, name, authservID, ar string, code int, rep *explain.Report) error {
	out := jsonVerify{
		File:                  name,
		AuthservID:            authservID,
		AuthenticationResults: strings.TrimSpace(strings.ReplaceAll(ar, "\r\n\t", " ")),
		Notes:                 rep.Notes,
		FromDomain:            rep.AuthorDomain,
		ExitCode:              code,
		Signatures:            []jsonSignature{},
	}
	if rep.AuthorErr != nil {
		out.FromError = rep.AuthorErr.Error()
	}
	for i, e := range rep.Signatures {
		out.Signatures = append(out.Signatures, jsonSignatureOf(i+1, e))
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func jsonSignatureOf(index int, e *explain.Explanation) jsonSignature {
	v, s := e.Verification, e.Verification.Signature
	j := jsonSignature{Index: index, Result: string(v.Result), Reason: v.Reason(), Comment: v.Comment()}
	if s == nil {
		return j
	}
	j.D, j.I, j.S, j.A, j.C, j.H = s.Domain, s.Identity, s.Selector, s.Algorithm, s.Canonicalization, s.Headers
	if s.HasTime {
		t := s.Time.UTC()
		j.T = &t
	}
	if s.HasExpire {
		x := s.Expire.UTC()
		j.X = &x
	}
	if s.Length >= 0 {
		l := s.Length
		j.L = &l
	}
	if a := e.DNS; a != nil {
		j.DNS = &jsonDNS{Name: a.Name, Outcome: a.Outcome(), Records: a.Records, Authenticated: a.Authenticated}
		if a.Err != nil {
			j.DNS.Error = a.Err.Error()
		}
	}
	if d := e.Detail; d.KeyType != "" {
		j.Key = &jsonKey{Type: d.KeyType, Bits: d.KeyBits, Testing: d.Testing}
	}
	if b := e.BodyHashes; b != nil {
		j.Body = &jsonBody{Canonicalization: b.Canon.String(), Signed: b.Signed, Relaxed: b.Relaxed, Simple: b.Simple}
	}
	if c := e.Clock; c != nil {
		j.Clock = &jsonClock{Expired: c.Expired, At: c.At.UTC(), VerifiedAt: c.RunAt.UTC(),
			OtherwiseResult: string(c.Otherwise.Result), OtherwiseReason: c.Otherwise.Reason()}
	}
	if p := e.Probe; p != nil {
		j.Diag = &jsonDiag{Kind: p.Kind, Text: p.Text, Lines: p.Lines, Verifies: p.Verifies}
	}
	j.Headers, j.Hints = e.SignedHeaders, e.HeaderHints
	if a := e.Alignment; a != nil {
		j.Align = &jsonAlign{FromDomain: a.AuthorDomain, D: a.SigningDomain, Strict: a.Strict, Relaxed: a.Relaxed,
			Method: string(a.Method()), FromOrg: jsonOrgOf(a.Author), DOrg: jsonOrgOf(a.Signing)}
	}
	return j
}

func jsonOrgOf(o *dmarc.OrgDomain) *jsonOrg {
	if o == nil {
		return nil
	}
	j := &jsonOrg{Domain: o.Domain, Org: o.Org, Why: o.Why}
	for _, q := range o.Queries {
		j.Queries = append(j.Queries, jsonQuery{Name: q.Name, Answer: q.Answer})
	}
	return j
}
