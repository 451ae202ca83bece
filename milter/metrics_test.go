package milter

import (
	"bytes"
	"context"
	"errors"
	"github.com/dkimmilter/dkimmilter/internal/dns"
	"net"
	"strings"
	"testing"
)

// After a signed, a verified (pass and fail) and an unsigned message, the
// scrape shows each count with its labels.
func TestMetrics(t *testing.T) {
	e := newEnv(t, "")
	m := e.metrics
	e.send("127.0.0.1", aliceEnv, outbound, 0)
	e.send(remote, daveEnv, inbound, 0)
	e.send(remote, daveEnv, "Authentication-Results: mx.example.com; dkim=pass\n"+inbound, 0)

	var b bytes.Buffer
	m.WritePrometheus(&b)
	out := b.String()
	for _, want := range []string{
		`dkimmilter_messages_total{decision="signed"} 1`,
		`dkimmilter_messages_total{decision="verified"} 2`,
		`dkimmilter_dkim_results_total{result="none",reason=""} 2`,
		`dkimmilter_forged_authentication_results_removed_total 1`,
		`dkimmilter_connections_total 3`,
		`dkimmilter_sessions `,
		`dkimmilter_message_duration_seconds_bucket{decision="signed",le=`,
		`process_resident_memory_bytes `,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(out)
	}
}

func TestObserveResolver(t *testing.T) {
	m := NewMetrics()
	r := m.ObserveResolver(&dns.Fake{
		TXT: map[string][]string{"a.example": {"v=DKIM1; p="}},
		Err: map[string]error{
			"b.example": &net.DNSError{Err: "NXDOMAIN", IsNotFound: true},
			"c.example": &net.DNSError{Err: "timeout", IsTimeout: true, IsTemporary: true},
			"d.example": errors.New("boom"),
		},
	})
	for _, n := range []string{"a.example", "b.example", "c.example", "d.example"} {
		r.LookupTXT(context.Background(), n)
	}
	var b bytes.Buffer
	m.WritePrometheus(&b)
	for _, o := range []string{"ok", "not_found", "timeout", "error"} {
		if !strings.Contains(b.String(), `dkimmilter_dns_lookups_total{outcome="`+o+`"} 1`) {
			t.Errorf("no %s lookup counted:\n%s", o, b.String())
		}
	}
}

func TestMetricLabel(t *testing.T) {
	if got := metricLabel(`a"b}\n` + "\n"); strings.ContainsAny(got, "\"}\\\n") {
		t.Errorf("metricLabel let through %q", got)
	}
}

// A key removed by a reload stops being reported.
func TestKeepKeys(t *testing.T) {
	m := NewMetrics()
	m.KeyGauge("dkimmilter_key_matches", "old", 1)
	m.KeyGauge("dkimmilter_key_matches", "new", 1)
	m.KeepKeys(map[string]bool{"new": true})
	var b bytes.Buffer
	m.WritePrometheus(&b)
	if strings.Contains(b.String(), `key="old"`) || !strings.Contains(b.String(), `dkimmilter_key_matches{key="new"} 1`) {
		t.Errorf("scrape:\n%s", b.String())
	}
}
