// Package testkit holds what the tests of several packages share: real
// messages and keys (the RFC 8463 Appendix A vector among them), a message
// splitter, and a milter client that drives a milter exactly as Postfix
// does. It is not used by the daemon.
package testkit

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	_ "crypto/sha1" // a=rsa-sha1: crypto.SHA1.New
	_ "crypto/sha256"
	"crypto/x509"
	"embed"
	"encoding/base64"
	"encoding/pem"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/dkimmilter/dkimmilter/internal/dkim"
)

//go:embed testdata
var files embed.FS

// File returns a file of testdata/.
func File(name string) []byte {
	b, err := files.ReadFile("testdata/" + name)
	if err != nil {
		panic(err)
	}
	return b
}

// CRLF converts bare LF line ends to CRLF, as a message is on the wire.
func CRLF(b []byte) []byte {
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
}

// Split splits a raw message (CRLF or LF) into its header fields and body.
func Split(msg []byte) (dkim.Header, []byte) {
	h, body, _ := dkim.SplitMessage(msg)
	return h, body
}

// Join rebuilds a message from fields and body.
func Join(h dkim.Header, body []byte) []byte {
	var b bytes.Buffer
	for _, f := range h {
		b.WriteString(f.Raw)
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}

// DNSRecords parses a testdata .dns file: "name record…" per line.
func DNSRecords(name string) map[string]string {
	out := map[string]string{}
	for _, l := range strings.Split(string(File(name)), "\n") {
		n, rec, ok := strings.Cut(strings.TrimSpace(l), " ")
		if ok {
			out[n] = rec
		}
	}
	return out
}

var (
	rsaMu   sync.Mutex
	rsaKeys = map[int]*rsa.PrivateKey{}
)

// RSAKey returns an RSA key of the given size, generated once per process
// (2048-bit generation is slow enough to matter across many tests).
func RSAKey(bits int) *rsa.PrivateKey {
	rsaMu.Lock()
	defer rsaMu.Unlock()
	if k, ok := rsaKeys[bits]; ok {
		return k
	}
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		panic(err)
	}
	rsaKeys[bits] = k
	return k
}

// WriteKey writes key as PEM (PKCS#8, or PKCS#1 for pkcs1) at dir/name with
// mode 0600 and returns the path.
func WriteKey(dir, name string, key any, pkcs1 bool) string {
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		panic(err)
	}
	if err := os.WriteFile(path, KeyPEM(key, pkcs1), 0o600); err != nil {
		panic(err)
	}
	return path
}

// KeyPEM returns key as PEM: PKCS#8, or PKCS#1 for an RSA key with pkcs1.
func KeyPEM(key any, pkcs1 bool) []byte {
	var block *pem.Block
	if k, ok := key.(*rsa.PrivateKey); ok && pkcs1 {
		block = &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}
	} else {
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			panic(err)
		}
		block = &pem.Block{Type: "PRIVATE KEY", Bytes: der}
	}
	return pem.EncodeToMemory(block)
}

// Sign is SignRaw for tests: msg is text with LF or CRLF line ends, and a
// failure fails the test.
func Sign(t interface {
	Helper()
	Fatal(...any)
}, msg, tags string, key crypto.Signer) string {
	t.Helper()
	out, err := SignRaw(CRLF([]byte(msg)), tags, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// SignRaw puts a DKIM-Signature with exactly the given tags (bh= and b=
// are computed and appended) on top of msg, signed with key. It makes the
// signatures a real signer would never produce (l=, odd or broken tags,
// a=rsa-sha1), and stands in for "another implementation" in tests.
func SignRaw(msg []byte, tags string, key crypto.Signer) ([]byte, error) {
	h, body := Split(msg)
	tl, err := dkim.ParseTagList(tags)
	if err != nil {
		return nil, err
	}
	c, _ := tl.Get("c")
	hc, bc, _ := dkim.ParseCanon(c)
	limit := int64(-1)
	if l, ok := tl.Get("l"); ok {
		if limit, err = strconv.ParseInt(l, 10, 64); err != nil {
			return nil, err
		}
	}
	// a=rsa-sha1 hashes with SHA-1, which no signer should use any more
	// (RFC 8301) and verifiers still meet; anything else with SHA-256.
	hash := crypto.SHA256
	if a, _ := tl.Get("a"); strings.EqualFold(a, "rsa-sha1") {
		hash = crypto.SHA1
	}
	bh := dkim.NewBodyHasher(bc, hash.New(), limit)
	bh.Write(body)
	prefix := " " + tags + "; bh=" + base64.StdEncoding.EncodeToString(bh.Sum()) + "; b="
	hl, _ := tl.Get("h")
	data := h.AppendSignedHeaders(nil, hc, dkim.SplitColonList(hl))
	data = dkim.AppendSignatureField(data, hc, "DKIM-Signature:"+prefix)
	h2 := hash.New()
	h2.Write(data)
	sum := h2.Sum(nil)
	opts := crypto.SignerOpts(hash)
	if _, ok := key.(ed25519.PrivateKey); ok {
		opts = crypto.Hash(0)
	}
	sig, err := key.Sign(rand.Reader, sum, opts)
	if err != nil {
		return nil, err
	}
	field := dkim.NewField("DKIM-Signature", prefix+base64.StdEncoding.EncodeToString(sig))
	return Join(append(dkim.Header{field}, h...), body), nil
}

// KeyRecord returns the DNS key record for a key, with extra tags (each
// followed by "; ") before p=.
func KeyRecord(key crypto.Signer, extra string) string {
	kt, p, err := dkim.EncodePublicKey(key.Public())
	if err != nil {
		panic(err)
	}
	return "v=DKIM1; k=" + kt + "; " + extra + "p=" + p
}

// RFC8463Keys returns the two private keys of RFC 8463 Appendix A, which
// sign deterministically: seeds for fuzz corpora that must not change
// from run to run.
func RFC8463Keys() (*rsa.PrivateKey, ed25519.PrivateKey) {
	block, _ := pem.Decode(File("rfc8463-rsa.key"))
	rk, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	if err != nil {
		panic(err)
	}
	seed, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(File("rfc8463-ed25519.key"))))
	if err != nil {
		panic(err)
	}
	return rk, ed25519.NewKeyFromSeed(seed)
}
