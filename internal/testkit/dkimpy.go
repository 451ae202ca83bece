package testkit

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
)

// dkimpyPython is the interpreter dkimpy is installed for: Debian's
// python3-dkim lives in /usr/lib/python3/dist-packages, which a python3
// found first on PATH (pyenv, a venv) does not see.
var dkimpyPython = "/usr/bin/python3"

var dkimpyOnce struct {
	sync.Once
	ok bool
}

// Dkimpy reports the interpreter that runs testdata/dkimpy.py, and whether
// it can: "import dkim" (Debian python3-dkim) and PyNaCl (python3-nacl,
// which python3-dkim recommends; ed25519 needs it) must work.
func Dkimpy() (path string, ok bool) {
	dkimpyOnce.Do(func() {
		_, err := runDkimpy(nil, "check")
		dkimpyOnce.ok = err == nil
	})
	return dkimpyPython, dkimpyOnce.ok
}

// DkimpyVerify verifies every DKIM-Signature of msg with dkimpy, top to
// bottom, with the key records given by DNS name ("sel._domainkey.dom").
// Each line is "pass" or "fail <dkimpy's reason>".
func DkimpyVerify(msg []byte, records map[string]string) ([]string, error) {
	recs := map[string]string{}
	for name, r := range records {
		recs[strings.ToLower(strings.TrimSuffix(name, "."))] = r
	}
	arg, err := json.Marshal(recs)
	if err != nil {
		return nil, err
	}
	out, err := runDkimpy(msg, "verify", string(arg))
	if err != nil {
		return nil, err
	}
	s := strings.TrimRight(string(out), "\n")
	if s == "" {
		return nil, nil
	}
	return strings.Split(s, "\n"), nil
}

// DkimpySignOptions are dkim.sign's arguments.
type DkimpySignOptions struct {
	Selector, Domain string
	Key              crypto.Signer // *rsa.PrivateKey or ed25519.PrivateKey
	Algorithm        string        // a=; the key's (rsa-sha256, ed25519-sha256) when empty, "rsa-sha1" for SHA-1
	Identity         string        // i=; dkimpy writes i=@domain when empty
	Canon            string        // "relaxed/simple" (dkimpy's default) when empty
	Headers          []string      // h=; dkimpy's default set when empty
	Length           bool          // l=
	HeaderOnly       bool          // return only the DKIM-Signature field (with its CRLF)
}

// DkimpySign signs msg with dkimpy and returns the signed message (the
// field on top of msg as given), or the field alone with HeaderOnly.
func DkimpySign(msg []byte, o DkimpySignOptions) ([]byte, error) {
	key, alg, err := DkimpyKey(o.Key)
	if err != nil {
		return nil, err
	}
	if o.Algorithm != "" {
		alg = o.Algorithm
	}
	arg, err := json.Marshal(map[string]any{
		"selector": o.Selector, "domain": o.Domain, "key": key, "algorithm": alg,
		"identity": o.Identity, "canon": o.Canon, "headers": o.Headers,
		"length": o.Length, "header_only": o.HeaderOnly,
	})
	if err != nil {
		return nil, err
	}
	return runDkimpy(msg, "sign", string(arg))
}

// DkimpyKey renders a private key the way dkimpy (and its dknewkey) wants
// it: RSA as PKCS#1 PEM, Ed25519 as the base64 of the 32-byte seed. It also
// returns the matching a= algorithm.
func DkimpyKey(k crypto.Signer) (key, alg string, err error) {
	switch k := k.(type) {
	case *rsa.PrivateKey:
		b := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
		return string(b), "rsa-sha256", nil
	case ed25519.PrivateKey:
		return base64.StdEncoding.EncodeToString(k.Seed()), "ed25519-sha256", nil
	}
	return "", "", fmt.Errorf("dkimpy: unsupported key type %T", k)
}

// runDkimpy writes the embedded script to a temporary file and runs it
// with args, msg on stdin.
func runDkimpy(msg []byte, args ...string) ([]byte, error) {
	f, err := os.CreateTemp("", "dkimpy-*.py")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(File("dkimpy.py")); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	cmd := exec.Command(dkimpyPython, append([]string{f.Name()}, args...)...)
	cmd.Stdin = bytes.NewReader(msg)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("dkimpy %s: %v: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// RequirePeer is the first call of a test that needs an outside program
// (a peer such as dkimpy, OpenDKIM or Postfix): when it is missing
// (ok false) the test is skipped with the Debian package that provides it,
// or fails when CI=true, where .ci/run installs the peers and a skip would
// hide that the test never ran.
func RequirePeer(t interface {
	Helper()
	Skipf(string, ...any)
	Fatalf(string, ...any)
}, name string, ok bool) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is missing and CI=true: install the Debian package %s (apt-get install %s)", name, name, name)
	}
	t.Skipf("%s is missing: install the Debian package %s (apt-get install %s) to run this test", name, name, name)
}

// RequireRoot is RequirePeer for a test that must run as root (a port
// under 1024, another user's files): why says what needs it.
func RequireRoot(t interface {
	Helper()
	Skipf(string, ...any)
	Fatalf(string, ...any)
}, why string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("not root and CI=true: %s", why)
	}
	t.Skipf("not root: %s", why)
}
