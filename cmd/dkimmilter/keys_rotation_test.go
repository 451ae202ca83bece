package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/dnsupdate"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
	"github.com/dkimmilter/dkimmilter/keystore"
	"github.com/dkimmilter/dkimmilter/keystore/rotation"
	"github.com/dkimmilter/dkimmilter/milter"
)

// rotNow is the clock of the rotation tests: the states are dated from it.
var rotNow = time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)

// rotatedKeys is rotationFixture's keys.rot after a rotation, as the
// engine leaves it: s2 (made by rotation) signs since 8 days, the
// configured s1 retires (its record is revoked in a day), s0 was revoked
// 2 days ago. Its records are served as rotation published them. Each
// test changes the state (mutate) before it is written with rotation's
// own writer, and the DNS.
type rotatedKeys struct {
	*fixture
	st                    *rotation.State
	s0, s1, s2, s3        string // the selectors' records
	s0Revoked             string
	s2File, s3File, state string
}

const (
	rotName0 = "s0._domainkey.example.net"
	rotName1 = "s1._domainkey.example.net"
	rotName2 = "s2._domainkey.example.net"
	rotName3 = "s3._domainkey.example.net"
)

func newRotatedKeys(t *testing.T) *rotatedKeys {
	t.Helper()
	f := rotationFixture(t, "30d", "")
	state := filepath.Join(f.dir, "state")
	rk := &rotatedKeys{fixture: f, state: state}
	rk.s2File = testkit.WriteKey(state, "keys/example.net/s2.pem", testkit.RSAKey(2064), false)
	rk.s3File = testkit.WriteKey(state, "keys/example.net/s3.pem", testkit.RSAKey(2072), false)
	configured, err := keystore.ReadPrivateKey(filepath.Join(f.dir, "keys/rsa.pem"))
	if err != nil {
		t.Fatal(err)
	}
	rk.s0 = testkit.KeyRecord(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32)), "")
	rk.s0Revoked = keystore.RevokedRecord("ed25519")
	rk.s1 = keystore.Record(configured)
	rk.s2 = testkit.KeyRecord(testkit.RSAKey(2064), "")
	rk.s3 = testkit.KeyRecord(testkit.RSAKey(2072), "")
	switched := rotNow.Add(-8 * 24 * time.Hour)
	rk.st = &rotation.State{Key: "rot", Domain: "example.net",
		Active: rotation.KeyState{Selector: "s2", File: rk.s2File, Made: true, Record: rk.s2, Created: switched.Add(-time.Hour), Since: switched},
		Retiring: []rotation.KeyState{{Selector: "s1", File: filepath.Join(f.dir, "keys/rsa.pem"), Record: rk.s1, Created: switched.Add(-30 * 24 * time.Hour),
			SwitchedAt: switched, RevokeAt: switched.Add(9 * 24 * time.Hour)}},
		Revoked: []rotation.KeyState{{Selector: "s0", File: filepath.Join(state, "keys/example.net/s0.pem"), Made: true, Record: rk.s0,
			RevokedRecord: rk.s0Revoked, RevokedAt: rotNow.Add(-2 * 24 * time.Hour), DeleteAt: rotNow.Add(5 * 24 * time.Hour)}},
	}
	f.dns.SetTXT(rotName0, rk.s0Revoked)
	f.dns.SetTXT(rotName1, rk.s1)
	f.dns.SetTXT(rotName2, rk.s2)
	return rk
}

// write writes the state as the engine does.
func (rk *rotatedKeys) write(t *testing.T) {
	t.Helper()
	if err := rotation.WriteState(rk.state, rk.st); err != nil {
		t.Fatal(err)
	}
}

// withPending adds s3, published 5 minutes ago, to the state.
func (rk *rotatedKeys) withPending() {
	rk.st.Pending = &rotation.KeyState{Selector: "s3", File: rk.s3File, Made: true, Record: rk.s3, Created: rotNow.Add(-6 * time.Minute),
		PublishedAt: rotNow.Add(-5 * time.Minute)}
}

// paused is the state after someone replaced s2's record by hand.
func (rk *rotatedKeys) paused() {
	rk.st.Paused = &rotation.Paused{Name: rotName2, Selector: "s2", Step: "check", Expected: []string{rk.s2},
		Found: "v=DKIM1; p=HAND", Server: "ns1.example.net (127.0.0.1)", Since: rotNow.Add(-time.Hour)}
}

// failing is the state after three failed attempts to publish s3.
func (rk *rotatedKeys) failing() {
	rk.withPending()
	rk.st.Pending.PublishedAt = time.Time{}
	rk.st.Failures, rk.st.RetryAt = 3, rotNow.Add(4*time.Minute)
	rk.st.LastError = "add s3._domainkey.example.net with [publish.bind]: server said REFUSED"
}

// denied makes the state unreadable, as it is for a user other than the
// daemon's and root (the test runs as root, which reads anything).
func denied(t *testing.T) {
	old := readRotationState
	readRotationState = func(dir, name string) (*rotation.State, error) {
		return nil, fmt.Errorf("reading the rotation state of keys.%s: open %s: %w", name, rotation.StatePath(dir, name), fs.ErrPermission)
	}
	t.Cleanup(func() { readRotationState = old })
}

func (rk *rotatedKeys) dir(l []string) []string {
	out := make([]string, len(l))
	for i, s := range l {
		out[i] = strings.ReplaceAll(s, "DIR", rk.fixture.dir)
	}
	return out
}

// keys list shows the key that signs now in the table, and each rotating
// key's rotation below it.
func TestKeysListRotation(t *testing.T) {
	for _, tt := range []struct {
		name  string
		setup func(t *testing.T, rk *rotatedKeys)
		want  []string
		not   string
	}{
		{"no state yet: the configured key", func(t *testing.T, rk *rotatedKeys) {},
			[]string{"rot   example.net  s1        rsa   2048  DIR/keys/rsa.pem",
				"keys.rot (example.net) rotates every 30 days; state DIR/state/rot.json\n",
				"  no state yet: the configured key signs (selector s1, DIR/keys/rsa.pem)\n",
				"  next: make the next key and publish its record (the configured key's age counts from its file's modification time) at "}, "s2"},
		{"after a rotation: the active key, the old ones, the next step", func(t *testing.T, rk *rotatedKeys) { rk.write(t) },
			[]string{"rot   example.net  s2        rsa   2064  DIR/state/keys/example.net/s2.pem",
				"keys.rot (example.net) rotates every 30 days; state DIR/state/rot.json\n",
				"  active    s2  DIR/state/keys/example.net/s2.pem  signs since 2026-11-29 09:00:00 UTC\n",
				"  retiring  s1  DIR/keys/rsa.pem                   signed until 2026-11-29 09:00:00 UTC; record kept until its revocation at 2026-12-08 09:00:00 UTC\n",
				"  revoked   s0  DIR/state/keys/example.net/s0.pem  revoked 2026-12-05 09:00:00 UTC; record deleted at 2026-12-12 09:00:00 UTC\n",
				"  configured: selector s1, DIR/keys/rsa.pem (where the rotation started; the active key signs)\n",
				"  next: revoke the record of s1 (p= empty) at 2026-12-08 09:00:00 UTC\n"}, "PAUSED"},
		{"a pending key", func(t *testing.T, rk *rotatedKeys) { rk.withPending(); rk.write(t) },
			[]string{"  pending   s3  DIR/state/keys/example.net/s3.pem  published 2026-12-07 08:55:00 UTC, not yet served by every authoritative server\n",
				"  next: switch to s3 once every authoritative server of the zone serves its record (checked every 1m)"}, ""},
		{"paused: what was expected and found", func(t *testing.T, rk *rotatedKeys) { rk.paused(); rk.write(t) },
			[]string{"  PAUSED since 2026-12-07 08:00:00 UTC: s2._domainkey.example.net (s2's record, at step check): rotation expects \"v=DKIM1; k=rsa; p=",
				"\"; ns1.example.net (127.0.0.1) served \"v=DKIM1; p=HAND\"\n",
				"  next: nothing until s2._domainkey.example.net holds what rotation expects again: then it resumes by itself\n"}, "hint"},
		{"failing: the last error and the next try", func(t *testing.T, rk *rotatedKeys) { rk.failing(); rk.write(t) },
			[]string{"  pending   s3  DIR/state/keys/example.net/s3.pem  made 2026-12-07 08:54:00 UTC, not published yet\n",
				"  FAILING: 3 failed attempts in a row; last error: add s3._domainkey.example.net with [publish.bind]: server said REFUSED\n",
				"  next try at 2026-12-07 09:04:00 UTC; the active key signs meanwhile\n",
				"  next: publish the record of s3 at s3._domainkey.example.net, tried again at 2026-12-07 09:04:00 UTC\n"}, ""},
		{"an overdue step", func(t *testing.T, rk *rotatedKeys) { rk.st.Retiring[0].RevokeAt = rotNow.Add(-time.Hour); rk.write(t) },
			[]string{"record kept until its revocation at 2026-12-07 08:00:00 UTC (due now)\n",
				"  next: revoke the record of s1 (p= empty) at 2026-12-07 08:00:00 UTC (due now)\n"}, ""},
		{"the state's domain changed: the configured key signs", func(t *testing.T, rk *rotatedKeys) { rk.st.Domain = "example.org"; rk.write(t) },
			[]string{"rot   example.net  s1        rsa   2048  DIR/keys/rsa.pem",
				"  active    s2  DIR/state/keys/example.net/s2.pem  does NOT sign: the state is for domain example.org and keys.rot signs for example.net"}, ""},
		{"the state cannot be read by this user", func(t *testing.T, rk *rotatedKeys) { rk.write(t); denied(t) },
			[]string{"keys.rot (example.net) rotates every 30 days; state DIR/state/rot.json\n",
				"  cannot read the state: reading the rotation state of keys.rot: open DIR/state/rot.json: permission denied: the rotation states in DIR/state are readable only by the daemon's user: run this command as root, or as that user (sudo -u "}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rk := newRotatedKeys(t)
			tt.setup(t, rk)
			var out, errb bytes.Buffer
			code := keysList([]string{"-config", rk.cfg}, &out, &errb, rotNow)
			if code != exitOK {
				t.Errorf("exit %d\n%s%s", code, out.String(), errb.String())
			}
			wantOutput(t, out.String(), rk.dir(tt.want)...)
			if tt.not != "" && strings.Contains(out.String(), tt.not) {
				t.Errorf("output mentions %q:\n%s", tt.not, out.String())
			}
		})
	}
}

// keys rotation: each rotating key's state with what to do, and an exit
// status for scripts and alerts.
func TestKeysRotation(t *testing.T) {
	for _, tt := range []struct {
		name  string
		setup func(t *testing.T, rk *rotatedKeys)
		args  []string
		code  int
		want  []string
		errs  []string
	}{
		{"going on", func(t *testing.T, rk *rotatedKeys) { rk.write(t) }, nil, exitOK,
			[]string{"keys.rot (example.net) rotates every 30 days; state DIR/state/rot.json\n", "  active    s2  ",
				"  next: revoke the record of s1 (p= empty) at 2026-12-08 09:00:00 UTC\n"}, nil},
		{"paused: the hint puts the record back", func(t *testing.T, rk *rotatedKeys) { rk.paused(); rk.write(t) }, []string{"rot"}, exitFailure,
			[]string{"  PAUSED since ", "     hint: put the record back: s2._domainkey.example.net. TXT \"v=DKIM1; k=rsa; p=",
				"\" (in strings of at most 255 bytes); 'dkimmilter keys publish -config DIR/dkimmilter.toml rot' does it when the name has no record; rotation resumes by itself once every server serves it. To start over from the configured key instead, move DIR/state/rot.json away and reload the daemon\n"}, nil},
		{"paused on a record that must go", func(t *testing.T, rk *rotatedKeys) {
			rk.paused()
			rk.st.Paused.Name, rk.st.Paused.Selector, rk.st.Paused.Step, rk.st.Paused.Expected = rotName3, "s3", "add", []string{"", rk.s3}
			rk.write(t)
		}, nil, exitFailure,
			[]string{"rotation expects no TXT record or \"v=DKIM1; k=rsa; p=", "     hint: remove the record at s3._domainkey.example.net; rotation resumes by itself"}, nil},
		{"failing", func(t *testing.T, rk *rotatedKeys) { rk.failing(); rk.write(t) }, nil, exitFailure,
			[]string{"  FAILING: 3 failed attempts in a row; last error: ", "     hint: fix what the error names"}, nil},
		{"no state yet", func(t *testing.T, rk *rotatedKeys) {}, nil, exitOK, []string{"  no state yet: the configured key signs (selector s1, DIR/keys/rsa.pem)\n"}, nil},
		{"a key that does not rotate", func(t *testing.T, rk *rotatedKeys) {}, []string{"rsa"}, exitUsage, nil,
			[]string{"dkimmilter keys rotation: keys.rsa does not rotate (DIR/dkimmilter.toml:6): set rotate and publish on it"}},
		{"unreadable: exit 77 with the fix", func(t *testing.T, rk *rotatedKeys) { rk.write(t); denied(t) }, nil, exitNoPerm,
			[]string{"  cannot read the state: ", "permission denied: ", "run this command as root, or as that user (sudo -u "}, nil},
		{"a damaged state: exit 78", func(t *testing.T, rk *rotatedKeys) { writeFile(t, filepath.Join(rk.state, "rot.json"), "{") }, nil, exitConfig,
			[]string{"  cannot read the state: DIR/state/rot.json: not a rotation state file"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rk := newRotatedKeys(t)
			tt.setup(t, rk)
			var out, errb bytes.Buffer
			code := keysRotation(append([]string{"-config", rk.cfg}, tt.args...), &out, &errb, rotNow)
			if code != tt.code {
				t.Errorf("exit %d, want %d\n%s%s", code, tt.code, out.String(), errb.String())
			}
			wantOutput(t, out.String(), rk.dir(tt.want)...)
			wantOutput(t, errb.String(), rk.dir(tt.errs)...)
		})
	}
}

// keys check checks the key the rotation state says signs, and reports on
// the other keys of the rotation without failing for what rotation is
// doing (a pending key not yet visible), but failing for what breaks
// mail (a retiring key's record gone) or stops the rotation (a pause).
func TestKeysCheckRotation(t *testing.T) {
	const active = "ok   rot s2._domainkey.example.net: rsa 2064-bit key published and matching"
	for _, tt := range []struct {
		name  string
		setup func(t *testing.T, rk *rotatedKeys)
		code  int
		want  []string
	}{
		{"no state yet: the configured key", func(t *testing.T, rk *rotatedKeys) { rk.dns.SetTXT(rotName1, rk.s1) }, exitOK,
			[]string{"ok   rot s1._domainkey.example.net: rsa 2048-bit key published and matching", "1 key checked: 1 ok"}},
		{"after a rotation: the active key, the old ones as expected", func(t *testing.T, rk *rotatedKeys) { rk.write(t) }, exitOK,
			[]string{active, "\n     rotation: s2 signs since 2026-11-29 09:00:00 UTC (state DIR/state/rot.json)\n",
				"     retiring s1: s1._domainkey.example.net still published, as needed until its revocation at 2026-12-08 09:00:00 UTC",
				"     revoked  s0: s0._domainkey.example.net revoked (p= empty), as expected; deleted at 2026-12-12 09:00:00 UTC",
				"1 key checked: 1 ok, 0 with warnings, 0 failing"}},
		{"a pending key not yet visible does not fail", func(t *testing.T, rk *rotatedKeys) { rk.withPending(); rk.write(t) }, exitOK,
			[]string{active, "     pending  s3: not yet visible at " + "127.0.0.1:", " (published 2026-12-07 08:55:00 UTC); the daemon switches to it once every authoritative server serves it\n", "1 ok"}},
		{"a pending key visible", func(t *testing.T, rk *rotatedKeys) { rk.withPending(); rk.write(t); rk.dns.SetTXT(rotName3, rk.s3) }, exitOK,
			[]string{active, "     pending  s3: s3._domainkey.example.net served by every server asked; the daemon switches to it once every authoritative server serves it\n"}},
		{"a pending key not yet published", func(t *testing.T, rk *rotatedKeys) { rk.failing(); rk.write(t) }, exitOK,
			[]string{"WARN rot s2._domainkey.example.net", "     pending  s3: made 2026-12-07 08:54:00 UTC, its record not published yet\n",
				"  warn: rotation's last step failed (3 in a row): add s3._domainkey.example.net with [publish.bind]: server said REFUSED; next try at 2026-12-07 09:04:00 UTC\n",
				"     hint: fix what the error names; the daemon retries by itself ('dkimmilter keys rotation -config DIR/dkimmilter.toml rot' shows the state)\n",
				"1 with warnings"}},
		{"a retiring key's record gone fails", func(t *testing.T, rk *rotatedKeys) { rk.write(t); rk.dns.Remove(rotName1) }, exitKeysFail,
			[]string{"FAIL rot s2._domainkey.example.net: rsa 2064-bit key published and matching",
				"  fail: retiring s1: 127.0.0.1:", " does not serve its record at s1._domainkey.example.net: mail signed with s1 until the switch (2026-11-29 09:00:00 UTC) fails (\"no key for signature\") until 2026-12-08 09:00:00 UTC, when rotation revokes it\n",
				"     hint: put it back: s1._domainkey.example.net. TXT \"v=DKIM1; k=rsa; p=", "1 failing"}},
		{"a revoked record not yet revoked everywhere", func(t *testing.T, rk *rotatedKeys) { rk.write(t); rk.dns.SetTXT(rotName0, rk.s0) }, exitOK,
			[]string{"     revoked  s0: 127.0.0.1:", " still serves the record as it was before the revocation at s0._domainkey.example.net (a server that lags)\n"}},
		{"a revoked record deleted", func(t *testing.T, rk *rotatedKeys) { rk.write(t); rk.dns.Remove(rotName0) }, exitOK,
			[]string{"     revoked  s0: s0._domainkey.example.net has no record any more: deleted, as rotation does at 2026-12-12 09:00:00 UTC\n"}},
		{"another record where the revoked one should be", func(t *testing.T, rk *rotatedKeys) { rk.write(t); rk.dns.SetTXT(rotName0, rk.s3) }, exitOK,
			[]string{"WARN rot ", "  warn: revoked s0: 127.0.0.1:", " serves another record at s0._domainkey.example.net than the revoked one (\"v=DKIM1; k=rsa; p="}},
		{"paused: FAIL with the hint to put the record back", func(t *testing.T, rk *rotatedKeys) { rk.paused(); rk.write(t) }, exitKeysFail,
			[]string{"FAIL rot s2._domainkey.example.net: rsa 2064-bit key published and matching",
				"  fail: rotation paused since 2026-12-07 08:00:00 UTC: s2._domainkey.example.net (s2's record) is not what rotation published: it expects \"v=DKIM1; k=rsa; p=",
				"\", ns1.example.net (127.0.0.1) served \"v=DKIM1; p=HAND\"; the daemon changes none of keys.rot's records until it is\n",
				"     hint: put the record back: s2._domainkey.example.net. TXT \"v=DKIM1; k=rsa; p=", "1 failing"}},
		{"the state cannot be read: not checked, with the fix", func(t *testing.T, rk *rotatedKeys) { rk.write(t); denied(t) }, exitKeysTemp,
			[]string{"TEMP rot: not checked: its rotation state says which key signs, and reading the rotation state of keys.rot: open DIR/state/rot.json: permission denied: the rotation states in DIR/state are readable only by the daemon's user: run this command as root, or as that user (sudo -u ",
				"1 key checked: 0 ok, 0 with warnings, 0 failing, 1 not checked\n"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rk := newRotatedKeys(t)
			tt.setup(t, rk)
			code, out, errs := runCmd("keys", "check", "-config", rk.cfg, "rot")
			if code != tt.code {
				t.Errorf("exit %d, want %d\n%s%s", code, tt.code, out, errs)
			}
			wantOutput(t, out, rk.dir(tt.want)...)
		})
	}
}

// -authoritative asks the zone's own servers for every key of the
// rotation, and check -dns checks as keys check does.
func TestKeysCheckRotationAuthoritative(t *testing.T) {
	rk := newRotatedKeys(t)
	rk.withPending()
	rk.write(t)
	rk.dns.SetZone("example.net", "ns1.example.net")
	rk.dns.SetAddrs("ns1.example.net", "127.0.0.1")
	port, _ := strconv.Atoi(rk.dns.Addr[strings.LastIndexByte(rk.dns.Addr, ':')+1:])
	cfg, err := config.Load(rk.cfg)
	if err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := checkKeysDNS(context.Background(), cfg, []string{"rot"}, keysCheckOptions{authoritative: true, authPort: port}, &out, &errb)
	if code != exitOK {
		t.Errorf("exit %d\n%s%s", code, out.String(), errb.String())
	}
	wantOutput(t, out.String(), active2064("rot"), "     pending  s3: not yet visible at ns1.example.net", "     retiring s1: s1._domainkey.example.net still published")

	code, o, e := runCmd("check", "-config", rk.cfg, "-user", me, "-dns")
	if code != exitOK {
		t.Errorf("check -dns: exit %d\n%s%s", code, o, e)
	}
	wantOutput(t, o, "key rot: d=example.net s=s1, ", "  signs with s2 ("+rk.s2File+") since 2026-11-29 09:00:00 UTC, as its rotation state says", active2064("rot"), "     pending  s3: not yet visible")
}

func active2064(name string) string {
	return "ok   " + name + " s2._domainkey.example.net: rsa 2064-bit key published and matching"
}

// keys dns prints the record of the key that signs now, and the pending
// key's while there is one.
func TestKeysDNSRotation(t *testing.T) {
	for _, tt := range []struct {
		name       string
		setup      func(t *testing.T, rk *rotatedKeys)
		code       int
		want, errs []string
		not        string
	}{
		{"no state yet: the configured key", func(t *testing.T, rk *rotatedKeys) {}, exitOK,
			[]string{"; keys.rot: rsa 2048 bits, DIR/keys/rsa.pem\ns1._domainkey.example.net. IN TXT ("}, nil, "signs now"},
		{"after a rotation: the active key", func(t *testing.T, rk *rotatedKeys) { rk.write(t) }, exitOK,
			[]string{"; keys.rot: rsa 2064 bits, DIR/state/keys/example.net/s2.pem\n",
				"; the key that signs now (since 2026-11-29 09:00:00 UTC), as the rotation state DIR/state/rot.json says\n",
				"s2._domainkey.example.net. IN TXT (", "RECORD2\n"}, nil, "pending"},
		{"with a pending key", func(t *testing.T, rk *rotatedKeys) { rk.withPending(); rk.write(t) }, exitOK,
			[]string{"s2._domainkey.example.net. IN TXT (", "RECORD2\n",
				"\n; keys.rot: the next key, pending (published 2026-12-07 08:55:00 UTC), DIR/state/keys/example.net/s3.pem\n",
				"; the daemon publishes it and signs with it once every authoritative server serves it\n",
				"s3._domainkey.example.net. IN TXT (", "; the value, on one line:\nRECORD3\n"}, nil, ""},
		{"the state cannot be read", func(t *testing.T, rk *rotatedKeys) { rk.write(t); denied(t) }, exitNoPerm, nil,
			[]string{"dkimmilter keys dns: keys.rot: no record printed: its rotation state says which key signs, and reading the rotation state of keys.rot: ", "permission denied: ", "run this command as root, or as that user"}, "IN TXT"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rk := newRotatedKeys(t)
			tt.setup(t, rk)
			code, out, errs := runCmd("keys", "dns", "-config", rk.cfg, "rot")
			if code != tt.code {
				t.Errorf("exit %d, want %d\n%s%s", code, tt.code, out, errs)
			}
			repl := strings.NewReplacer("RECORD2", rk.s2, "RECORD3", rk.s3)
			want := rk.dir(tt.want)
			for i := range want {
				want[i] = repl.Replace(want[i])
			}
			wantOutput(t, out, want...)
			wantOutput(t, errs, rk.dir(tt.errs)...)
			if tt.not != "" && strings.Contains(out, tt.not) {
				t.Errorf("output mentions %q:\n%s", tt.not, out)
			}
		})
	}
}

// keys publish and keys revoke change the record of the key that signs
// now: putting back the active key's record resumes a paused rotation.
func TestKeysPublishRotation(t *testing.T) {
	for _, tt := range []struct {
		name    string
		setup   func(t *testing.T, rk *rotatedKeys)
		action  dnsupdate.Action
		args    []string
		code    int
		out     []string
		errs    []string
		changes []dnsupdate.Change // RECORD2 for s2's record, REVOKED for the revoked one
	}{
		{"no state yet: the configured key", func(t *testing.T, rk *rotatedKeys) {}, dnsupdate.Add, nil, exitOK,
			[]string{"keys.rot: published s1._domainkey.example.net (selector s1) through [publish.bind]"}, nil,
			[]dnsupdate.Change{{Action: dnsupdate.Add, Name: rotName1, Value: "RECORD1"}}},
		{"publish puts the active key's record back", func(t *testing.T, rk *rotatedKeys) { rk.paused(); rk.write(t) }, dnsupdate.Add, nil, exitOK,
			[]string{"keys.rot: published s2._domainkey.example.net (selector s2, the key that signs now as the rotation state DIR/state/rot.json says) through [publish.bind]"}, nil,
			[]dnsupdate.Change{{Action: dnsupdate.Add, Name: rotName2, Value: "RECORD2"}}},
		{"-n says which key", func(t *testing.T, rk *rotatedKeys) { rk.write(t) }, dnsupdate.Add, []string{"-n"}, exitOK,
			[]string{"; keys.rot: would publish s2._domainkey.example.net (selector s2, the key that signs now as the rotation state DIR/state/rot.json says) through [publish.bind]",
				"fake: add s2._domainkey.example.net"}, nil, []dnsupdate.Change{}},
		{"revoke of the active key in use is refused", func(t *testing.T, rk *rotatedKeys) {
			rk.write(t)
			appendFile(t, rk.cfg, "[[signing]]\nfrom = \"*@example.net\"\nkeys = [\"rot\"]\n")
		}, dnsupdate.Revoke, nil, exitUsage, nil,
			[]string{"dkimmilter keys revoke: keys.rot (selector s2, the key that signs now as the rotation state DIR/state/rot.json says) is used by signing[2] *@example.net: ", "or give -force"},
			[]dnsupdate.Change{}},
		{"revoke -force: the active key's record", func(t *testing.T, rk *rotatedKeys) {
			rk.write(t)
			appendFile(t, rk.cfg, "[[signing]]\nfrom = \"*@example.net\"\nkeys = [\"rot\"]\n")
		}, dnsupdate.Revoke, []string{"-force"}, exitOK,
			[]string{"keys.rot: revoked s2._domainkey.example.net (selector s2, "}, nil,
			[]dnsupdate.Change{{Action: dnsupdate.Revoke, Name: rotName2, Value: "REVOKED"}}},
		{"the state cannot be read: nothing sent", func(t *testing.T, rk *rotatedKeys) { rk.write(t); denied(t) }, dnsupdate.Add, nil, exitNoPerm, nil,
			[]string{"dkimmilter keys publish: keys.rot: nothing sent: its rotation state says which key signs, and ", "permission denied: ", "run this command as root, or as that user"},
			[]dnsupdate.Change{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rk := newRotatedKeys(t)
			tt.setup(t, rk)
			zone := &fakeZone{dns: rk.dns, txt: map[string]string{}}
			old := newPublisher
			newPublisher = func(*config.Config, *config.Publisher) (dnsupdate.Publisher, error) { return zone, nil }
			t.Cleanup(func() { newPublisher = old })
			if tt.action == dnsupdate.Add {
				rk.dns.Remove(rotName1)
				rk.dns.Remove(rotName2)
			} else {
				zone.txt[rotName2] = rk.s2
			}
			var out, errb bytes.Buffer
			code := keysPublish(append(append([]string{"-config", rk.cfg}, tt.args...), "rot"), tt.action, publishOptions{}, &out, &errb)
			if code != tt.code {
				t.Errorf("exit %d, want %d\n%s%s", code, tt.code, out.String(), errb.String())
			}
			wantOutput(t, out.String(), rk.dir(tt.out)...)
			wantOutput(t, errb.String(), rk.dir(tt.errs)...)
			repl := strings.NewReplacer("RECORD1", rk.s1, "RECORD2", rk.s2, "REVOKED", keystore.RevokedRecord("rsa"))
			var got []dnsupdate.Change
			for _, c := range zone.changes {
				c.Expect = ""
				got = append(got, c)
			}
			var want []dnsupdate.Change
			for _, c := range tt.changes {
				c.Value = repl.Replace(c.Value)
				want = append(want, c)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("changes %v\nwant %v", got, want)
			}
		})
	}
}

func appendFile(t *testing.T, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
}

// keys rotate on a key that rotates itself says so and shows where its
// rotation stands, rather than printing steps that would race with the
// daemon; -force makes a key by hand, from the key that signs now, under
// a selector its rotation does not hold.
func TestKeysRotateRotating(t *testing.T) {
	for _, tt := range []struct {
		name       string
		setup      func(t *testing.T, rk *rotatedKeys)
		args       []string
		code       int
		out, errs  []string
		noKeyFiles bool
	}{
		{"refused, with the state", func(t *testing.T, rk *rotatedKeys) { rk.write(t) }, nil, exitUsage, nil,
			[]string{"dkimmilter keys rotate: keys.rot rotates itself (rotate = 30 days, DIR/dkimmilter.toml:14): the daemon makes the next key, publishes it, switches once every authoritative server serves it, and retires the old one; there is nothing to do by hand. Where it stands:\n",
				"  active    s2  DIR/state/keys/example.net/s2.pem  signs since 2026-11-29 09:00:00 UTC\n",
				"  next: revoke the record of s1 (p= empty) at 2026-12-08 09:00:00 UTC\n",
				"('dkimmilter keys rotation -config DIR/dkimmilter.toml rot' shows it again; -force makes a key by hand anyway, for a key that must go now)\n"}, true},
		{"refused before the first rotation", func(t *testing.T, rk *rotatedKeys) {}, nil, exitUsage, nil,
			[]string{"keys.rot rotates itself", "  no state yet: the configured key signs (selector s1, DIR/keys/rsa.pem)\n"}, true},
		{"refused when the state cannot be read", func(t *testing.T, rk *rotatedKeys) { rk.write(t); denied(t) }, nil, exitUsage, nil,
			[]string{"keys.rot rotates itself", "  cannot read the state: ", "run this command as root, or as that user"}, true},
		{"-force: from the key that signs now", func(t *testing.T, rk *rotatedKeys) { rk.write(t) }, []string{"-force"}, exitOK,
			[]string{"  old: keys.rot, selector s2, rsa 2064 bits, DIR/state/keys/example.net/s2.pem\n",
				"Step 5 of 5", "\nkeys.rot has a rotation state, DIR/state/rot.json, and rotates itself while its table has rotate: once the switch is made and its table removed (step 5), move the state away"}, nil, false},
		{"-force: not a selector the rotation holds", func(t *testing.T, rk *rotatedKeys) { rk.write(t); rk.dns.Remove(rotName0) }, []string{"-force", "-s", "s0"}, exitUsage, nil,
			[]string{`dkimmilter keys rotate: selector "s0" is already used by a key for example.net`}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rk := newRotatedKeys(t)
			tt.setup(t, rk)
			var out, errb bytes.Buffer
			code := keysRotate(append([]string{"-config", rk.cfg, "-d", "example.net"}, tt.args...), &out, &errb, rotNow)
			if code != tt.code {
				t.Errorf("exit %d, want %d\n%s%s", code, tt.code, out.String(), errb.String())
			}
			wantOutput(t, out.String(), rk.dir(tt.out)...)
			wantOutput(t, errb.String(), rk.dir(tt.errs)...)
			made, _ := filepath.Glob(filepath.Join(rk.state, "keys/example.net/*.pem"))
			if tt.noKeyFiles && len(made) != 2 {
				t.Errorf("key files %v: a key was made", made)
			}
			if !tt.noKeyFiles && len(made) != 3 {
				t.Errorf("key files %v: no new key next to s2's", made)
			}
		})
	}
}

// Run by a user who may not read the state directory (as the daemon's
// user owns it, 0700), the commands say so and name the user to run as,
// the directory's owner, rather than report the configured key.
func TestKeysRotationUnreadableState(t *testing.T) {
	requireRoot(t)
	nb, err := keystore.LookupAccount("nobody")
	if err != nil {
		t.Fatal(err)
	}
	rk := newRotatedKeys(t)
	rk.write(t)
	dm, err := keystore.LookupAccount("dkimmilter")
	if err != nil {
		t.Skip("no user dkimmilter to own the state directory:", err)
	}
	if err := os.Chown(rk.state, dm.UID, dm.Groups[0]); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(rk.fixture.dir, "dkimmilter")
	copyFile(t, exe)
	os.Chmod(rk.fixture.dir, 0o755)
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"keys", "rotation", "-config", rk.cfg}, exitNoPerm, "  cannot read the state: reading the rotation state of keys.rot: open DIR/state/rot.json: permission denied: the rotation states in DIR/state are readable only by the daemon's user: run this command as root, or as that user (sudo -u dkimmilter dkimmilter keys ...), to know which key signs\n"},
		{[]string{"keys", "check", "-config", rk.cfg, "rot"}, exitKeysTemp, "TEMP rot: not checked: its rotation state says which key signs, and reading the rotation state of keys.rot: open DIR/state/rot.json: permission denied: "},
		{[]string{"keys", "dns", "-config", rk.cfg, "rot"}, exitNoPerm, "dkimmilter keys dns: keys.rot: no record printed: "},
	} {
		cmd := exec.Command(exe, tt.args...)
		cmd.Env = append(os.Environ(), "DKIMMILTER_TEST_MAIN=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(nb.UID), Gid: uint32(nb.Groups[0])}}
		out, _ := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); code != tt.code {
			t.Errorf("%s as nobody: exit %d, want %d\n%s", tt.args[:2], code, tt.code, out)
		}
		wantOutput(t, string(out), rk.dir([]string{tt.want})...)
	}
}

// The daemon's key health check follows the engine, not the state file:
// a state whose active key the engine did not put in place (it could not
// load it) leaves the configured key signing, and that key is checked.
func TestKeyHealthStateNotInPlace(t *testing.T) {
	rk := newRotatedKeys(t)
	rk.write(t)
	rk.dns.Remove(rotName2)
	cfg, err := config.Load(rk.cfg)
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{log: slog.New(slog.DiscardHandler), metrics: milter.NewMetrics(), rotated: &keystore.Rotated{}}
	d.checkKeys(context.Background(), cfg)
	var b bytes.Buffer
	d.metrics.WritePrometheus(&b)
	if want := `dkimmilter_key_matches{key="rot",domain="example.net"} 1`; !strings.Contains(b.String(), want) {
		t.Errorf("metrics lack %q (the configured s1 is published, the state's s2 is not):\n%s", want, b.String())
	}
}

// -d DOMAIN finds the key that signs for the domain as NAME does.
func TestKeysRotationByDomain(t *testing.T) {
	rk := newRotatedKeys(t)
	rk.write(t)
	code, out, errs := runCmd("keys", "check", "-config", rk.cfg, "-d", "example.net")
	if code != exitOK {
		t.Errorf("keys check -d: exit %d\n%s%s", code, out, errs)
	}
	wantOutput(t, out, active2064("rot"), "     rotation: s2 signs since ")
	code, out, errs = runCmd("keys", "dns", "-config", rk.cfg, "-d", "example.net")
	if code != exitOK {
		t.Errorf("keys dns -d: exit %d\n%s%s", code, out, errs)
	}
	wantOutput(t, out, "; the key that signs now", "s2._domainkey.example.net. IN TXT (")
}

// A user who may not read the state directory is not told about it for
// keys that neither rotate nor publish: most configurations have no
// rotation, and systemd makes the directory all the same.
func TestKeysNoRotationUnreadableState(t *testing.T) {
	rk := newRotatedKeys(t)
	denied(t)
	var out, errb bytes.Buffer
	if code := keysList([]string{"-config", rk.cfg}, &out, &errb, rotNow); code != exitOK {
		t.Errorf("exit %d\n%s%s", code, out.String(), errb.String())
	}
	// keys.rsa of the fixture neither rotates nor publishes; keys.rot does.
	if strings.Count(out.String(), "cannot read the state") != 1 || strings.Contains(out.String(), "keys.rsa ") {
		t.Errorf("keys list:\n%s", out.String())
	}
	code, o, e := runCmd("keys", "check", "-config", rk.cfg, "rsa")
	if code != exitOK || !strings.Contains(o, "ok   rsa rsa._domainkey.example.com") {
		t.Errorf("keys check rsa: exit %d\n%s%s", code, o, e)
	}
}
