package milter

import (
	"bytes"
	"strings"
	"testing"

	gomilter "github.com/emersion/go-milter"

	"github.com/dkimmilter/dkimmilter/internal/testkit"
)

// Who is signed: sign.internal_hosts by address, host name, ".suffix" and
// "!" exclusion, as OpenDKIM's InternalHosts; sign.daemon_names by the
// Postfix service the mail came in through, as OpenDKIM's MTA.
func TestWhoIsSigned(t *testing.T) {
	cfg := strings.Replace(baseConfig, `internal_hosts = ["127.0.0.1", "::1", "10.0.0.0/8", "2001:db8:1::/48"]`, `internal_hosts = [
  "127.0.0.1", "10.0.0.0/8", "!10.6.6.6",
  "submit.example.com", ".lan.example.com", "!guest.lan.example.com",
]
daemon_names = ["ORIGINATING"]`, 1)
	if cfg == baseConfig {
		t.Fatal("baseConfig has no internal_hosts line to replace")
	}
	e := newEnv(t, cfg)
	tests := []struct {
		name, host, ip, daemon string
		signed                 bool
		why                    string
	}{
		{"internal network", "client.example.net", "10.1.2.3", "smtpd", true, "internal host (sign.internal_hosts: 10.0.0.0/8)"},
		{"excluded address", "client.example.net", "10.6.6.6", "smtpd", false, "is neither internal nor authenticated"},
		{"host name", "submit.example.com", remote, "smtpd", true, "internal host (sign.internal_hosts: submit.example.com)"},
		{"host name, other case", "SUBMIT.Example.COM", remote, "smtpd", true, "internal host (sign.internal_hosts: submit.example.com)"},
		{"under a suffix", "pc7.lan.example.com", remote, "smtpd", true, "internal host (sign.internal_hosts: .lan.example.com)"},
		{"the suffix's apex", "lan.example.com", remote, "smtpd", false, "is neither internal nor authenticated"},
		{"excluded under the suffix", "guest.lan.example.com", remote, "smtpd", false, "is neither internal nor authenticated"},
		// Postfix's names for a client without a verified name.
		{"unknown", "unknown", remote, "smtpd", false, "is neither internal nor authenticated"},
		{"bracketed address", "[" + remote + "]", remote, "smtpd", false, "is neither internal nor authenticated"},
		{"listed service", "client.example.net", remote, "ORIGINATING", true, "received through Postfix service ORIGINATING (sign.daemon_names)"},
		{"service, other case", "client.example.net", remote, "originating", false, "is neither internal nor authenticated"},
		{"other service", "client.example.net", remote, "submission", false, "is neither internal nor authenticated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := e.on(t)
			c, err := testkit.Dial("tcp", e.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.DaemonName = tt.daemon
			if err := c.Connect(tt.host, tt.ip); err != nil {
				t.Fatal(err)
			}
			r, out := e.sendOn(c, aliceEnv, outbound, 0)
			if r.Action.Code != gomilter.ActContinue {
				t.Fatalf("answer %c", r.Action.Code)
			}
			sigs := testkit.Fields(out, "DKIM-Signature")
			ars := testkit.Fields(out, "Authentication-Results")
			log := e.lastLog()
			if tt.signed {
				if len(sigs) != 1 || len(ars) != 0 || !strings.Contains(log, "decision=signed") {
					t.Errorf("want signed: %d signatures, %d A-R; log %s", len(sigs), len(ars), log)
				}
			} else if len(sigs) != 0 || len(ars) != 1 || !strings.Contains(log, "decision=verified") {
				t.Errorf("want verified: %d signatures, %d A-R; log %s", len(sigs), len(ars), log)
			}
			if !strings.Contains(log, tt.why) {
				t.Errorf("log lacks %q: %s", tt.why, log)
			}
		})
	}
}

// Peers (OpenDKIM's PeerList): their mail passes untouched, whatever it
// is: not signed even from an internal host, not verified, no
// Authentication-Results, forged ones left alone; counted and logged as
// skipped, with the reason.
func TestPeersUntouched(t *testing.T) {
	cfg := strings.Replace(baseConfig, "[sign]", `peers = ["127.0.0.1", ".relay.example.net", "!bad.relay.example.net"]
[sign]`, 1)
	e := newEnv(t, cfg)
	forged := "Authentication-Results: mx.example.com; dkim=pass header.d=example.com\n"
	tests := []struct {
		name, host, ip string
		env            testkit.Envelope
		msg            string
		peer           string // the entry that decided, "" for not a peer
	}{
		{"internal host listed as peer", "localhost", "127.0.0.1", aliceEnv, outbound, "127.0.0.1"},
		{"peer by name, forged A-R kept", "mx1.relay.example.net", remote, daveEnv, forged + inbound, ".relay.example.net"},
		{"authenticated on a peer", "mx1.relay.example.net", remote, testkit.Envelope{From: "alice@example.com", AuthType: "PLAIN", AuthAuthen: "alice"}, outbound, ".relay.example.net"},
		{"excluded from the peers", "bad.relay.example.net", remote, daveEnv, forged + inbound, ""},
		{"unknown name", "unknown", remote, daveEnv, inbound, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := e.on(t)
			c, err := testkit.Dial("tcp", e.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Connect(tt.host, tt.ip); err != nil {
				t.Fatal(err)
			}
			r, _ := e.sendOn(c, tt.env, tt.msg, 0)
			log := e.lastLog()
			if tt.peer == "" {
				if len(r.Mods) == 0 || strings.Contains(log, "decision=skipped") {
					t.Errorf("not a peer, but untouched: %+v; log %s", r.Mods, log)
				}
				return
			}
			if r.Action.Code != gomilter.ActContinue || len(r.Mods) != 0 {
				t.Errorf("a peer's message was changed: %c %+v", r.Action.Code, r.Mods)
			}
			if want := `decision=skipped why="peer (peers: ` + tt.peer + `): passed through untouched"`; !strings.Contains(log, want) {
				t.Errorf("log lacks %q: %s", want, log)
			}
		})
	}
	var b bytes.Buffer
	e.metrics.WritePrometheus(&b)
	for _, want := range []string{
		`dkimmilter_messages_total{decision="skipped"} 3`,
		`dkimmilter_messages_total{decision="verified"} 2`,
		`dkimmilter_messages_total{decision="signed"} 0`,
		`dkimmilter_dkim_results_total{result="none",reason=""} 2`,
		`dkimmilter_forged_authentication_results_removed_total 1`,
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
}
