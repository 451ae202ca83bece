package dnsupdate

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/miekg/dns"
)

// TSIGKey is a shared secret for signing updates (RFC 8945).
// https://www.rfc-editor.org/rfc/rfc8945
type TSIGKey struct {
	Name      string // canonical: lower case, with the final dot (RFC 8945 §4.2)
	Algorithm string // miekg's name: dns.HmacSHA256, …
	Secret    string // base64, as the key file has it
	File      string // where it was read
}

// algorithms are those BIND's tsig-keygen offers and RFC 8945 §6 lists as
// mandatory or recommended. hmac-md5 is left out: it is deprecated, and
// miekg/dns no longer computes it.
// https://www.rfc-editor.org/rfc/rfc8945#section-6
var algorithms = map[string]string{
	"hmac-sha1":   dns.HmacSHA1,
	"hmac-sha224": dns.HmacSHA224,
	"hmac-sha256": dns.HmacSHA256,
	"hmac-sha384": dns.HmacSHA384,
	"hmac-sha512": dns.HmacSHA512,
}

// ReadTSIGKey reads a BIND key file, as tsig-keygen(8) writes it:
//
//	key "NAME" {
//		algorithm hmac-sha256;
//		secret "BASE64";
//	};
//
// The file must hold exactly one key statement.
func ReadTSIGKey(path string) (*TSIGKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("TSIG key file: %w", err)
	}
	k, err := ParseTSIGKey(string(data))
	if err != nil {
		return nil, fmt.Errorf("TSIG key file %s: %v", path, err)
	}
	k.File = path
	return k, nil
}

// ParseTSIGKey parses the text of a BIND key file (see ReadTSIGKey).
func ParseTSIGKey(text string) (*TSIGKey, error) {
	toks, err := tokens(text)
	if err != nil {
		return nil, err
	}
	// key NAME { algorithm ALG ; secret SECRET ; } ;
	var k *TSIGKey
	i := 0
	next := func() (token, bool) {
		if i >= len(toks) {
			return token{}, false
		}
		i++
		return toks[i-1], true
	}
	for i < len(toks) {
		t, _ := next()
		if t.quoted || t.text != "key" {
			// Only a statement's name is shown: a file that holds the
			// bare secret must not have it copied into the log.
			what := "text"
			if !t.quoted && strings.Trim(t.text, "abcdefghijklmnopqrstuvwxyz-_") == "" {
				what = strconv.Quote(t.text)
			}
			return nil, fmt.Errorf("line %d: %s where a key statement should start (key \"NAME\" { algorithm ...; secret \"...\"; };)", t.line, what)
		}
		if k != nil {
			return nil, fmt.Errorf("line %d: a second key statement; the file must hold one key", t.line)
		}
		name, ok := next()
		if !ok || name.text == "{" && !name.quoted {
			return nil, fmt.Errorf("line %d: the key statement has no name", t.line)
		}
		fqdn := dns.CanonicalName(name.text)
		if _, ok := dns.IsDomainName(fqdn); !ok || fqdn == "." {
			return nil, fmt.Errorf("line %d: key name %q is not a valid DNS name", name.line, name.text)
		}
		if open, ok := next(); !ok || open.text != "{" || open.quoted {
			return nil, fmt.Errorf("line %d: want { after the key name %q", name.line, name.text)
		}
		k = &TSIGKey{Name: fqdn}
		for {
			opt, ok := next()
			if !ok {
				return nil, fmt.Errorf("key %q: no closing }", name.text)
			}
			if opt.text == "}" && !opt.quoted {
				break
			}
			if opt.quoted {
				// Not shown: it may be the secret, its option left out.
				return nil, fmt.Errorf("line %d: a quoted string where an option should be (algorithm ...; secret \"...\";)", opt.line)
			}
			val, ok := next()
			if !ok {
				return nil, fmt.Errorf("line %d: %s has no value", opt.line, opt.text)
			}
			if semi, ok := next(); !ok || semi.text != ";" || semi.quoted {
				shown := val.text
				if opt.text == "secret" {
					shown = `"..."` // never the secret itself
				}
				return nil, fmt.Errorf("line %d: want ; after %s %s", val.line, opt.text, shown)
			}
			switch opt.text {
			case "algorithm":
				alg, ok := algorithms[strings.ToLower(val.text)]
				if !ok {
					return nil, fmt.Errorf("line %d: algorithm %q is not supported: use hmac-sha256 (tsig-keygen's default), hmac-sha384, hmac-sha512, hmac-sha224 or hmac-sha1", val.line, val.text)
				}
				k.Algorithm = alg
			case "secret":
				b, err := base64.StdEncoding.DecodeString(val.text)
				if err != nil || len(b) == 0 {
					return nil, fmt.Errorf("line %d: the secret is not base64", val.line)
				}
				k.Secret = val.text
			default:
				return nil, fmt.Errorf("line %d: unknown key option %q (want algorithm and secret)", opt.line, opt.text)
			}
		}
		if semi, ok := next(); !ok || semi.text != ";" || semi.quoted {
			return nil, fmt.Errorf("key %q: want ; after }", name.text)
		}
		if k.Algorithm == "" {
			return nil, fmt.Errorf("key %q has no algorithm", name.text)
		}
		if k.Secret == "" {
			return nil, fmt.Errorf("key %q has no secret", name.text)
		}
	}
	if k == nil {
		return nil, errors.New("no key statement (want key \"NAME\" { algorithm hmac-sha256; secret \"...\"; };, as tsig-keygen writes it)")
	}
	return k, nil
}

// AlgorithmName is the algorithm as BIND names it: "hmac-sha256".
func (k *TSIGKey) AlgorithmName() string { return strings.TrimSuffix(k.Algorithm, ".") }

// DisplayName is the key's name without the final dot.
func (k *TSIGKey) DisplayName() string { return strings.TrimSuffix(k.Name, ".") }

type token struct {
	text   string
	quoted bool
	line   int
}

// tokens splits named.conf syntax: words, "quoted strings", the
// punctuation { } ;, and comments in the three styles named.conf(5)
// allows (#, //, /* */).
func tokens(s string) ([]token, error) {
	var out []token
	line := 1
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\n':
			line++
			i++
		case c == ' ' || c == '\t' || c == '\r':
			i++
		case c == '#' || strings.HasPrefix(s[i:], "//"):
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case strings.HasPrefix(s[i:], "/*"):
			end := strings.Index(s[i+2:], "*/")
			if end < 0 {
				return nil, fmt.Errorf("line %d: comment /* never closed", line)
			}
			line += strings.Count(s[i:i+2+end], "\n")
			i += end + 4
		case c == '{' || c == '}' || c == ';':
			out = append(out, token{text: string(c), line: line})
			i++
		case c == '"':
			end := strings.IndexByte(s[i+1:], '"')
			if end < 0 {
				return nil, fmt.Errorf("line %d: quote never closed", line)
			}
			out = append(out, token{text: s[i+1 : i+1+end], quoted: true, line: line})
			line += strings.Count(s[i+1:i+1+end], "\n")
			i += end + 2
		default:
			j := i
			for j < len(s) && !strings.ContainsRune(" \t\r\n{};\"#", rune(s[j])) && !strings.HasPrefix(s[j:], "//") && !strings.HasPrefix(s[j:], "/*") {
				j++
			}
			out = append(out, token{text: s[i:j], line: line})
			i = j
		}
	}
	return out, nil
}
