package loadgen

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// ReadReports reads every *.json report in dir, in file name order.
func ReadReports(dir string) ([]*Report, error) {
	names, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	var out []*Report
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			return nil, err
		}
		r := &Report{}
		if err := json.Unmarshal(b, r); err != nil {
			return nil, fmt.Errorf("%s: %w", n, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// figure is the runs of one label for one milter.
type figure struct {
	runs []*Report
}

func (f *figure) median(get func(*Report) float64) float64 {
	if f == nil || len(f.runs) == 0 {
		return 0
	}
	v := make([]float64, len(f.runs))
	for i, r := range f.runs {
		v[i] = get(r)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func (f *figure) spread(get func(*Report) float64) (lo, hi float64) {
	for i, r := range f.runs {
		v := get(r)
		if i == 0 || v < lo {
			lo = v
		}
		if i == 0 || v > hi {
			hi = v
		}
	}
	return lo, hi
}

func (f *figure) failed() int {
	n := 0
	if f != nil {
		for _, r := range f.runs {
			n += r.Failed
		}
	}
	return n
}

// WriteTable prints a Markdown table that sets milter a beside milter b
// for every label, with medians over the repetitions and the ratio a/b of
// each figure: above 1 is better for a in msgs/s, below 1 is better for a
// in latency, CPU and memory.
func WriteTable(w io.Writer, reports []*Report, a, b string) {
	var labels []string
	figs := map[string]map[string]*figure{}
	for _, r := range reports {
		if figs[r.Label] == nil {
			figs[r.Label] = map[string]*figure{}
			labels = append(labels, r.Label)
		}
		f := figs[r.Label][r.Milter]
		if f == nil {
			f = &figure{}
			figs[r.Label][r.Milter] = f
		}
		f.runs = append(f.runs, r)
	}
	fmt.Fprintf(w, "| figure | %s msgs/s | %s msgs/s | ratio | p50 ms | p99 ms | CPU s / 1000 msgs | peak RSS MB | failed |\n", a, b)
	fmt.Fprintf(w, "|---|---:|---:|---:|---|---|---|---|---|\n")
	rate := func(r *Report) float64 { return r.MsgsPerSec }
	p50 := func(r *Report) float64 { return r.LatencyMS.P50 }
	p99 := func(r *Report) float64 { return r.LatencyMS.P99 }
	cpu := func(r *Report) float64 { return r.MilterCPUPer1000 }
	rss := func(r *Report) float64 { return float64(r.PeakRSSKB) / 1024 }
	for _, l := range labels {
		fa, fb := figs[l][a], figs[l][b]
		n := 0
		if fa != nil {
			n = len(fa.runs)
		}
		fmt.Fprintf(w, "| %s (%d runs) | %s | %s | %s | %s | %s | %s | %s | %d / %d |\n", l, n,
			rateCell(fa, rate), rateCell(fb, rate), ratio(fa.median(rate), fb.median(rate)),
			pair(fa, fb, p50, "%.2f"), pair(fa, fb, p99, "%.2f"), pair(fa, fb, cpu, "%.3f"),
			pair(fa, fb, rss, "%.1f"), fa.failed(), fb.failed())
	}
}

func rateCell(f *figure, get func(*Report) float64) string {
	if f == nil {
		return "—"
	}
	lo, hi := f.spread(get)
	if len(f.runs) == 1 {
		return fmt.Sprintf("%.0f", f.median(get))
	}
	return fmt.Sprintf("%.0f (%.0f–%.0f)", f.median(get), lo, hi)
}

func ratio(x, y float64) string {
	if x == 0 || y == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", x/y)
}

// pair prints "a / b (a/b)".
func pair(fa, fb *figure, get func(*Report) float64, format string) string {
	x, y := fa.median(get), fb.median(get)
	if x == 0 && y == 0 {
		return "—"
	}
	s := []string{fmt.Sprintf(format, x), fmt.Sprintf(format, y)}
	return strings.Join(s, " / ") + " (" + ratio(x, y) + ")"
}

// The labels bench/compare.sh gives its figures, which WriteTargets
// reads.
const (
	LabelSignC8    = "sign c=8 unix 2KB"
	LabelSignC64   = "sign c=64 unix 2KB"
	LabelVerifyC8  = "verify c=8 unix 2KB"
	LabelVerifyC64 = "verify c=64 unix 2KB"
	LabelTCP       = "sign c=1 tcp 2KB"
	LabelEd25519   = "ed25519 sign c=8 unix 2KB"
	LabelBig       = "sign c=64 unix 10MB"
)

// WriteTargets checks the figures against the performance targets
// (bench/README.md) and prints one line each: what was measured, the
// goal, and whether it is met. rsaSignNs is the cost of one Go RSA-2048 signature
// (BenchmarkRSASignPKCS1v15), 0 if unknown. a is dkimmilter, b OpenDKIM.
func WriteTargets(w io.Writer, reports []*Report, a, b string, rsaSignNs float64) {
	figs := map[string]map[string]*figure{}
	for _, r := range reports {
		if figs[r.Label] == nil {
			figs[r.Label] = map[string]*figure{}
		}
		if figs[r.Label][r.Milter] == nil {
			figs[r.Label][r.Milter] = &figure{}
		}
		figs[r.Label][r.Milter].runs = append(figs[r.Label][r.Milter].runs, r)
	}
	med := func(label, milter string, get func(*Report) float64) float64 {
		return figs[label][milter].median(get)
	}
	rate := func(r *Report) float64 { return r.MsgsPerSec }
	line := func(what, measured, goal string, ok, known bool) {
		verdict := "no"
		switch {
		case !known:
			verdict = "not measured"
		case ok:
			verdict = "yes"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", what, measured, goal, verdict)
	}
	vs := func(label, goal string, min float64) {
		x, y := med(label, a, rate), med(label, b, rate)
		line(label+": "+a+"/"+b+" msgs/s", fmt.Sprintf("%.0f / %.0f = %s", x, y, ratio(x, y)), goal, y > 0 && x/y >= min, x > 0 && y > 0)
	}
	scale := func(hi, lo, goal string, min float64) {
		x, y := med(hi, a, rate), med(lo, a, rate)
		line(a+" "+hi+" vs "+lo, fmt.Sprintf("%.0f vs %.0f msgs/s = %s", x, y, ratio(x, y)), goal, y > 0 && x/y >= min, x > 0 && y > 0)
	}
	fmt.Fprintf(w, "| performance target | measured | goal | met |\n|---|---|---|---|\n")
	vs(LabelSignC8, "≥ 2.0×", 2.0)
	scale(LabelSignC64, LabelSignC8, "≥ 1.0× (c=64 ≥ c=8)", 1.0)
	vs(LabelVerifyC8, "≥ 3.0×", 3.0)
	scale(LabelVerifyC64, LabelVerifyC8, "no collapse (read as ≥ 0.9×)", 0.9)
	p50 := med(LabelTCP, a, func(r *Report) float64 { return r.LatencyMS.P50 })
	line(a+" "+LabelTCP+": p50 latency", fmt.Sprintf("%.2f ms (%s: %.2f ms)", p50, b, med(LabelTCP, b, func(r *Report) float64 { return r.LatencyMS.P50 })),
		"≤ 2 ms", p50 <= 2, p50 > 0)
	cpu := med(LabelSignC8, a, func(r *Report) float64 { return r.MilterCPUPer1000 }) // s per 1000 = ms per message
	rsaMs := rsaSignNs / 1e6
	line(a+" CPU per signed 2 KB message ("+LabelSignC8+") / one Go RSA-2048 signature",
		fmt.Sprintf("%.3f ms / %.3f ms = %s", cpu, rsaMs, ratio(cpu, rsaMs)), "≤ 1.2×", rsaMs > 0 && cpu/rsaMs <= 1.2, cpu > 0 && rsaMs > 0)
	vs(LabelEd25519, "≥ 3.0×", 3.0)
	rss := med(LabelBig, a, func(r *Report) float64 { return float64(r.PeakRSSKB) / 1024 })
	line(a+" "+LabelBig+": peak RSS", fmt.Sprintf("%.1f MB (%s: %.1f MB)", rss, b, med(LabelBig, b, func(r *Report) float64 { return float64(r.PeakRSSKB) / 1024 })),
		"≤ 64 MB", rss <= 64, rss > 0)
	vs(LabelBig, "≥ 1.0×", 1.0)
}
