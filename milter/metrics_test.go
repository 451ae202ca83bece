package milter

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/dkimmilter/dkimmilter/internal/dns"
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

// A key removed by a reload stops being reported; a key whose domain is
// "%" has one series per domain.
func TestKeepKeys(t *testing.T) {
	m := NewMetrics()
	old := KeyLabel{"old", "example.com"}
	a, b := KeyLabel{"hosted", "a.example"}, KeyLabel{"hosted", "b.example"}
	for _, k := range []KeyLabel{old, a, b} {
		m.KeyGauge("dkimmilter_key_matches", k, 1)
	}
	m.KeepKeys(map[KeyLabel]bool{a: true, b: true})
	var buf bytes.Buffer
	m.WritePrometheus(&buf)
	out := buf.String()
	if strings.Contains(out, `key="old"`) {
		t.Errorf("the removed key is still reported:\n%s", out)
	}
	for _, want := range []string{
		`dkimmilter_key_matches{key="hosted",domain="a.example"} 1`,
		`dkimmilter_key_matches{key="hosted",domain="b.example"} 1`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("scrape lacks %q:\n%s", want, out)
		}
	}
}

// The whole scrape, read by Prometheus's own text-format parser, before
// any message: every family has its HELP and TYPE, and every series the
// README documents exists at zero, so that increase() sees the first
// event after a start.
func TestExposition(t *testing.T) {
	m := NewMetrics()
	NewServer(ServerOptions{Metrics: m, Runtime: &Runtime{}})
	m.KeyGauge("dkimmilter_key_matches", KeyLabel{"hosted", "a.example"}, 1)
	var buf bytes.Buffer
	m.WritePrometheus(&buf)
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatalf("the scrape is not Prometheus text format: %v\n%s", err, buf.String())
	}
	for _, f := range metricFamilies {
		mf := fams[f.name]
		if f.perKey && f.name != "dkimmilter_key_matches" {
			if mf != nil {
				t.Errorf("%s exported before its key was checked", f.name)
			}
			continue
		}
		if mf == nil {
			t.Errorf("%s is not exported before its first event", f.name)
			continue
		}
		if got := strings.ToLower(mf.GetType().String()); got != f.typ {
			t.Errorf("%s: TYPE %s, want %s", f.name, got, f.typ)
		}
		if mf.GetHelp() != f.help {
			t.Errorf("%s: HELP %q, want %q", f.name, mf.GetHelp(), f.help)
		}
		want := []string{""}
		if f.series != nil {
			want = f.series()
		}
		if f.perKey {
			want = []string{`key="hosted",domain="a.example"`}
		}
		got := map[string]bool{}
		for _, s := range mf.GetMetric() {
			var labels []string
			for _, l := range s.GetLabel() {
				labels = append(labels, l.GetName()+`="`+l.GetValue()+`"`)
			}
			got[strings.Join(labels, ",")] = true
			v := s.GetCounter().GetValue() + s.GetGauge().GetValue() + float64(s.GetHistogram().GetSampleCount())
			if v != 0 && !f.perKey {
				t.Errorf("%s{%s} = %v before any event", f.name, strings.Join(labels, ","), v)
			}
		}
		for _, w := range want {
			if !got[w] {
				t.Errorf("%s{%s} is not exported", f.name, w)
			}
		}
		if len(got) != len(want) {
			t.Errorf("%s: %d series, want %d: %v", f.name, len(got), len(want), got)
		}
	}
	for _, name := range []string{"process_resident_memory_bytes", "go_goroutines"} {
		if fams[name] == nil {
			t.Errorf("%s is missing", name)
		}
	}
}

// The README's metric table lists exactly the exported families, with
// their types and every label value known in advance.
func TestREADMEMetricTable(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string][]string{}
	for l := range strings.Lines(string(readme)) {
		if !strings.HasPrefix(l, "| `dkimmilter_") {
			continue
		}
		cells := strings.Split(l, "|")
		rows[strings.Trim(strings.TrimSpace(cells[1]), "`")] = cells[2:]
	}
	for _, f := range metricFamilies {
		row, ok := rows[f.name]
		if !ok {
			t.Errorf("README's metric table lacks %s", f.name)
			continue
		}
		delete(rows, f.name)
		if got := strings.TrimSpace(row[0]); got != f.typ {
			t.Errorf("README: %s is a %s, the exposition says %s", f.name, got, f.typ)
		}
		labels := row[1]
		if f.perKey && !(strings.Contains(labels, "`key`") && strings.Contains(labels, "`domain`")) {
			t.Errorf("README: %s does not name its key and domain labels: %s", f.name, labels)
		}
		if f.series == nil {
			continue
		}
		for _, s := range f.series() {
			for _, kv := range strings.Split(s, ",") {
				k, v, _ := strings.Cut(kv, "=")
				v = strings.Trim(v, `"`)
				if !strings.Contains(labels, "`"+k+"`") || v != "" && !regexp.MustCompile(`\b`+regexp.QuoteMeta(v)+`\b`).MatchString(labels) {
					t.Errorf("README: %s does not list label %s=%q", f.name, k, v)
				}
			}
		}
	}
	for name := range rows {
		t.Errorf("README lists %s, which is not exported", name)
	}
}

// The rotation series: one state per selector (a change of state drops
// the old series), the publishing error counter at 0 from the first
// report, and nothing left of a selector or key that is gone.
func TestRotationMetrics(t *testing.T) {
	m := NewMetrics()
	scrape := func() string {
		var b bytes.Buffer
		m.WritePrometheus(&b)
		return b.String()
	}
	l := `key="main",domain="example.com",selector="s1"`
	m.RotationKey("main", "example.com", "s1", "pending", time.Minute, time.Second)
	m.RotationPaused("main", "example.com", false)
	m.RotationKey("main", "example.com", "s1", "active", 2*time.Minute, time.Hour)
	m.RotationKey("main", "example.com", "s0", "retiring", time.Hour, 5*time.Hour)
	got := scrape()
	for _, want := range []string{
		`dkimmilter_rotation_state{` + l + `,state="active"} 1`,
		`dkimmilter_rotation_key_age_seconds{` + l + `} 120`,
		`dkimmilter_rotation_next_step_seconds{` + l + `} 3600`,
		`dkimmilter_rotation_state{key="main",domain="example.com",selector="s0",state="retiring"} 1`,
		`dkimmilter_rotation_paused{key="main",domain="example.com"} 0`,
		`dkimmilter_rotation_publish_errors_total{key="main",domain="example.com"} 0`,
	} {
		if !strings.Contains(got, want+"\n") {
			t.Errorf("scrape lacks %s:\n%s", want, got)
		}
	}
	if strings.Contains(got, `state="pending"`) {
		t.Errorf("the old state's series is still exported:\n%s", got)
	}
	m.RotationPublishError("main", "example.com")
	m.RotationPaused("main", "example.com", true)
	got = scrape()
	for _, want := range []string{
		`dkimmilter_rotation_paused{key="main",domain="example.com"} 1`,
		`dkimmilter_rotation_publish_errors_total{key="main",domain="example.com"} 1`,
	} {
		if !strings.Contains(got, want+"\n") {
			t.Errorf("scrape lacks %s:\n%s", want, got)
		}
	}
	m.RotationForget("main", "example.com", []string{"s1"})
	if got := scrape(); strings.Contains(got, `selector="s0"`) || !strings.Contains(got, `selector="s1"`) || !strings.Contains(got, "dkimmilter_rotation_paused{") {
		t.Errorf("after forgetting s0:\n%s", got)
	}
	m.RotationForget("main", "example.com", nil)
	if got := scrape(); strings.Contains(got, `key="main"`) {
		t.Errorf("after forgetting the key:\n%s", got)
	}
	var nilm *Metrics
	nilm.RotationKey("a", "b", "c", "active", 0, 0)
	nilm.RotationPaused("a", "b", true)
	nilm.RotationPublishError("a", "b")
	nilm.RotationForget("a", "b", nil)
}
