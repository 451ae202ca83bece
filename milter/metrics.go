package milter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/dns"
	"github.com/dkimmilter/dkimmilter/verifier"
)

// Metrics counts what the milter does, for Prometheus. Every metric is
// in metricFamilies, with its HELP text, and in the README with its
// meaning. A nil *Metrics records nothing, so tests and tools that do not
// care pass nil.
//
// VictoriaMetrics/metrics writes the Prometheus text format with three
// small dependencies, against client_golang's protobuf stack. It writes
// "# HELP name" with no text (it has no place for one): WritePrometheus
// fills in ours.
type Metrics struct {
	set      *metrics.Set
	sessions atomic.Pointer[func() int]

	mu       sync.Mutex
	keyNames map[KeyLabel]map[string]bool // key -> metric names set for it
	// rotNames: per rotating key, per selector ("" for the key's own
	// series), the rotation series set for it.
	rotNames map[KeyLabel]map[string][]string
}

// NewMetrics returns the metric set, with every series known in advance
// at zero: an alert on increase() sees the first event after a start
// only if the series existed before it.
func NewMetrics() *Metrics {
	// Global in the library; we are its only user in the process.
	metrics.ExposeMetadata(true)
	m := &Metrics{set: metrics.NewSet()}
	for _, f := range metricFamilies {
		if f.perKey {
			continue
		}
		if f.name == "dkimmilter_sessions" {
			m.set.NewGauge(f.name, func() float64 {
				if n := m.sessions.Load(); n != nil {
					return float64((*n)())
				}
				return 0
			})
			continue
		}
		series := []string{""}
		if f.series != nil {
			series = f.series()
		}
		for _, labels := range series {
			name := f.name
			if labels != "" {
				name += "{" + labels + "}"
			}
			switch f.typ {
			case "counter":
				m.set.GetOrCreateCounter(name)
			case "gauge":
				m.set.GetOrCreateGauge(name, nil)
			case "histogram":
				m.set.GetOrCreatePrometheusHistogram(name)
			default:
				panic("milter: metric " + f.name + " has unknown type " + f.typ)
			}
		}
	}
	return m
}

// sessionsGauge reports sessions() as dkimmilter_sessions when scraped.
func (m *Metrics) sessionsGauge(sessions func() int) {
	if m != nil {
		m.sessions.Store(&sessions)
	}
}

// WritePrometheus writes every metric, with the process_* and go_* ones,
// each family after its HELP and TYPE lines.
func (m *Metrics) WritePrometheus(w io.Writer) {
	var b bytes.Buffer
	m.set.WritePrometheus(&b)
	metrics.WriteProcessMetrics(&b)
	var out bytes.Buffer
	for l := range bytes.Lines(b.Bytes()) {
		name, ok := bytes.CutPrefix(l, []byte("# HELP "))
		name = bytes.TrimSuffix(name, []byte("\n"))
		if help := metricHelp[string(name)]; ok && help != "" {
			fmt.Fprintf(&out, "# HELP %s %s\n", name, help)
			continue
		}
		out.Write(l)
	}
	w.Write(out.Bytes())
}

// metricHelp maps a family name to its HELP text.
var metricHelp = func() map[string]string {
	h := map[string]string{}
	for _, f := range metricFamilies {
		h[f.name] = f.help
	}
	return h
}()

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		m.WritePrometheus(w)
	})
	return mux
}

// Serve serves /metrics on ln until ctx ends.
func (m *Metrics) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: m.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (m *Metrics) counter(name string) *metrics.Counter {
	return m.set.GetOrCreateCounter(name)
}

// connection counts a new milter connection.
func (m *Metrics) connection() {
	if m != nil {
		m.counter("dkimmilter_connections_total").Inc()
	}
}

// message counts one message by decision, and its DKIM results by result
// and reason class (a bounded set, unlike reason texts).
func (m *Metrics) message(dec decision, results []*verifier.Verification, d time.Duration) {
	if m == nil {
		return
	}
	m.counter(`dkimmilter_messages_total{decision="` + dec.label() + `"}`).Inc()
	m.set.GetOrCreatePrometheusHistogram(`dkimmilter_message_duration_seconds{decision="` + dec.label() + `"}`).Update(d.Seconds())
	if dec != verified {
		return
	}
	if len(results) == 0 {
		m.counter(`dkimmilter_dkim_results_total{result="none",reason=""}`).Inc()
	}
	for _, v := range results {
		m.counter(`dkimmilter_dkim_results_total{result="` + string(v.Result) + `",reason="` + verifier.ReasonClass(v.Err) + `"}`).Inc()
		if v.Stale {
			m.counter("dkimmilter_dkim_stale_keys_total").Inc()
		}
	}
}

// signError counts a message that could not be signed.
func (m *Metrics) signError() {
	if m != nil {
		m.counter("dkimmilter_sign_errors_total").Inc()
	}
}

// senderMismatch counts a message whose From its login may not use, by
// the reason's label (keystore.Mismatch.Label).
func (m *Metrics) senderMismatch(reason string) {
	if m != nil {
		m.counter(`dkimmilter_sender_mismatches_total{reason="` + reason + `"}`).Inc()
	}
}

// forgedAR counts forged Authentication-Results fields removed.
func (m *Metrics) forgedAR(n int) {
	if m != nil && n > 0 {
		m.counter("dkimmilter_forged_authentication_results_removed_total").Add(n)
	}
}

// limit counts a [limits] setting that was hit, by its name.
func (m *Metrics) limit(name string) {
	if m != nil {
		m.counter(`dkimmilter_limits_hit_total{limit="` + metricLabel(name) + `"}`).Inc()
	}
}

// messageCut counts a message cut in the middle, by cause.
func (m *Metrics) messageCut(cause cutCause) {
	if m != nil {
		m.counter(`dkimmilter_messages_cut_total{cause="` + cause.String() + `"}`).Inc()
	}
}

// action counts an [actions] answer other than accept.
func (m *Metrics) action(a config.Action) {
	if m != nil && a != config.Accept {
		m.counter(`dkimmilter_actions_total{action="` + a.String() + `"}`).Inc()
	}
}

// Reload counts a configuration reload and its outcome.
func (m *Metrics) Reload(ok bool) {
	if m == nil {
		return
	}
	result := "error"
	if ok {
		result = "ok"
		m.set.GetOrCreateGauge("dkimmilter_config_last_reload_success_timestamp_seconds", nil).Set(float64(time.Now().Unix()))
	}
	m.counter(`dkimmilter_config_reloads_total{result="` + result + `"}`).Inc()
}

// KeyLabel names a key in the per-key gauges: the key's name in the
// config and the domain it signs for, so that a key whose domain is "%"
// has one series per domain it was checked for.
type KeyLabel struct{ Key, Domain string }

// KeyGauge sets a per-key gauge (key age, key health).
func (m *Metrics) KeyGauge(name string, key KeyLabel, v float64) {
	if m == nil {
		return
	}
	full := name + `{key="` + metricLabel(key.Key) + `",domain="` + metricLabel(key.Domain) + `"}`
	m.set.GetOrCreateGauge(full, nil).Set(v)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.keyNames == nil {
		m.keyNames = map[KeyLabel]map[string]bool{}
	}
	if m.keyNames[key] == nil {
		m.keyNames[key] = map[string]bool{}
	}
	m.keyNames[key][full] = true
}

// KeepKeys drops the per-key gauges of keys not in keep, so that a key
// removed by a reload stops being reported (and alerted on).
func (m *Metrics) KeepKeys(keep map[KeyLabel]bool) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for key, names := range m.keyNames {
		if keep[key] {
			continue
		}
		for n := range names {
			m.set.UnregisterMetric(n)
		}
		delete(m.keyNames, key)
	}
}

// DBCache counts a database lookup (query: keystore.DBKeys or
// DBSenders) by its cache result (keystore.DBObserver).
func (m *Metrics) DBCache(query, result string) {
	if m != nil {
		m.counter(`dkimmilter_database_cache_total{query="` + query + `",result="` + result + `"}`).Inc()
	}
}

// DBQuery counts and times a query sent to the database
// (keystore.DBObserver).
func (m *Metrics) DBQuery(query, outcome string, d time.Duration) {
	if m != nil {
		m.counter(`dkimmilter_database_queries_total{query="` + query + `",outcome="` + outcome + `"}`).Inc()
		m.set.GetOrCreatePrometheusHistogram(`dkimmilter_database_query_duration_seconds{query="` + query + `"}`).Update(d.Seconds())
	}
}

// ObserveResolver wraps a resolver so that each upstream lookup is counted
// by outcome and timed. It goes under the cache: cache hits are not
// lookups.
func (m *Metrics) ObserveResolver(next dns.Resolver) dns.Resolver {
	if m == nil {
		return next
	}
	return &observedResolver{next: next, m: m}
}

type observedResolver struct {
	next dns.Resolver
	m    *Metrics
}

func (r *observedResolver) LookupTXT(ctx context.Context, name string) (*dns.TXTResult, error) {
	start := time.Now()
	res, err := r.next.LookupTXT(ctx, name)
	outcome := "ok"
	var de *net.DNSError
	switch {
	case err == nil:
	case errors.As(err, &de) && de.IsNotFound:
		outcome = "not_found"
	case errors.As(err, &de) && de.IsTimeout:
		outcome = "timeout"
	default:
		outcome = "error"
	}
	r.m.counter(`dkimmilter_dns_lookups_total{outcome="` + outcome + `"}`).Inc()
	r.m.set.GetOrCreatePrometheusHistogram(`dkimmilter_dns_lookup_duration_seconds`).Update(time.Since(start).Seconds())
	return res, err
}

// metricLabel keeps label values to a safe alphabet: they are our own
// words, but a key name comes from the config file.
func metricLabel(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ' ') {
			b[i] = '_'
		}
	}
	return string(b)
}

// RotationKey sets the rotation series of one selector of a rotating key
// (keystore/rotation): dkimmilter_rotation_state at 1 with the key's
// state as a label (the series of its previous state dropped, so that
// one selector has one state), its age and the time until its next step.
func (m *Metrics) RotationKey(key, domain, selector, state string, age, next time.Duration) {
	if m == nil {
		return
	}
	l := `key="` + metricLabel(key) + `",domain="` + metricLabel(domain) + `",selector="` + metricLabel(selector) + `"`
	names := []string{
		`dkimmilter_rotation_state{` + l + `,state="` + metricLabel(state) + `"}`,
		`dkimmilter_rotation_key_age_seconds{` + l + `}`,
		`dkimmilter_rotation_next_step_seconds{` + l + `}`,
	}
	m.rotationNames(KeyLabel{key, domain}, selector, names)
	m.set.GetOrCreateGauge(names[0], nil).Set(1)
	m.set.GetOrCreateGauge(names[1], nil).Set(age.Seconds())
	m.set.GetOrCreateGauge(names[2], nil).Set(next.Seconds())
}

// RotationPaused sets dkimmilter_rotation_paused of a rotating key, and
// makes its publishing error counter exist (at 0 before the first
// error, for increase()).
func (m *Metrics) RotationPaused(key, domain string, paused bool) {
	if m == nil {
		return
	}
	names := rotationKeyNames(key, domain)
	m.rotationNames(KeyLabel{key, domain}, "", names)
	v := 0.0
	if paused {
		v = 1
	}
	m.set.GetOrCreateGauge(names[0], nil).Set(v)
	m.set.GetOrCreateCounter(names[1])
}

// RotationPublishError counts a failed publish, revoke or delete of a
// rotating key's record.
func (m *Metrics) RotationPublishError(key, domain string) {
	if m == nil {
		return
	}
	names := rotationKeyNames(key, domain)
	m.rotationNames(KeyLabel{key, domain}, "", names)
	m.set.GetOrCreateGauge(names[0], nil)
	m.set.GetOrCreateCounter(names[1]).Inc()
}

func rotationKeyNames(key, domain string) []string {
	l := `{key="` + metricLabel(key) + `",domain="` + metricLabel(domain) + `"}`
	return []string{"dkimmilter_rotation_paused" + l, "dkimmilter_rotation_publish_errors_total" + l}
}

// RotationForget drops the rotation series of a key's selectors not in
// keep; a nil keep drops all of the key's, its own included (a key that
// no longer rotates).
func (m *Metrics) RotationForget(key, domain string, keep []string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	k := KeyLabel{key, domain}
	for sel, names := range m.rotNames[k] {
		if keep != nil && (sel == "" || slices.Contains(keep, sel)) {
			continue
		}
		for _, n := range names {
			m.set.UnregisterMetric(n)
		}
		delete(m.rotNames[k], sel)
	}
	if keep == nil {
		delete(m.rotNames, k)
	}
}

// rotationNames records the series of a key's selector, dropping those
// it had and no longer has.
func (m *Metrics) rotationNames(k KeyLabel, selector string, names []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.rotNames == nil {
		m.rotNames = map[KeyLabel]map[string][]string{}
	}
	if m.rotNames[k] == nil {
		m.rotNames[k] = map[string][]string{}
	}
	for _, old := range m.rotNames[k][selector] {
		if !slices.Contains(names, old) {
			m.set.UnregisterMetric(old)
		}
	}
	m.rotNames[k][selector] = names
}
