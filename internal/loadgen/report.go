package loadgen

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"
)

// Report is what one run measured. Latencies are in milliseconds, memory
// in kB (as /proc gives it), CPU in seconds.
type Report struct {
	Label       string `json:"label,omitempty"`
	Milter      string `json:"milter,omitempty"`
	Addr        string `json:"addr"`
	Mode        string `json:"mode"`
	Expect      string `json:"expect,omitempty"`
	Concurrency int    `json:"concurrency"`
	Reuse       int    `json:"reuse"`
	MessageSize int    `json:"message_size"`
	Protocol    string `json:"protocol"`   // milter protocol version negotiated: v6, or v2
	Negotiated  string `json:"negotiated"` // the milter's action and protocol masks
	Time        string `json:"time"`

	Messages   int            `json:"messages"` // answered as expected
	Failed     int            `json:"failed"`
	Errors     map[string]int `json:"errors"`
	FirstError string         `json:"first_error,omitempty"`
	Seconds    float64        `json:"seconds"`
	MsgsPerSec float64        `json:"msgs_per_s"`
	MBPerSec   float64        `json:"mb_per_s"`

	LatencyMS Latency `json:"latency_ms"`

	// The milter's process (only with a PID).
	MilterCPU        float64 `json:"milter_cpu_s,omitempty"`
	MilterCPUPer1000 float64 `json:"milter_cpu_s_per_1000,omitempty"`
	PeakRSSKB        uint64  `json:"peak_rss_kb,omitempty"`
	RSSEndKB         uint64  `json:"rss_end_kb,omitempty"`
	HWMReset         bool    `json:"hwm_reset,omitempty"`
	LifetimeHWMKB    uint64  `json:"lifetime_hwm_kb,omitempty"` // when the peak could not be reset
	MaxThreads       int     `json:"max_threads,omitempty"`

	DriverCPU float64 `json:"driver_cpu_s"` // this process, for the record: it shares the machine
	// OtherCPU is the CPU time the rest of the machine used during the
	// run (/proc/stat busy time less the milter's and the driver's).
	OtherCPU float64 `json:"other_cpu_s"`
}

// Latency is a latency distribution in milliseconds.
type Latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

func (r *Report) setLatency(lat []time.Duration) {
	if r.Seconds > 0 {
		r.MsgsPerSec = float64(len(lat)) / r.Seconds
		r.MBPerSec = r.MsgsPerSec * float64(r.MessageSize) / 1e6
	}
	r.LatencyMS = latency(lat)
}

func latency(lat []time.Duration) Latency {
	if len(lat) == 0 {
		return Latency{}
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return Latency{
		P50: ms(pct(s, 50)), P90: ms(pct(s, 90)), P99: ms(pct(s, 99)),
		Max: ms(s[len(s)-1]), Mean: ms(sum / time.Duration(len(s))),
	}
}

// pct is the nearest-rank percentile of sorted durations.
func pct(s []time.Duration, p int) time.Duration {
	i := (len(s)*p + 99) / 100
	return s[max(i-1, 0)]
}

// WriteText prints the report for a person.
func (r *Report) WriteText(w io.Writer) {
	name := r.Milter
	if name == "" {
		name = r.Addr
	}
	fmt.Fprintf(w, "%s: %s %s, %d connections, %d messages/connection, %d-byte message (milter protocol %s)\n",
		r.Label, name, r.Mode, r.Concurrency, r.Reuse, r.MessageSize, r.Protocol)
	fmt.Fprintf(w, "  messages   %d ok, %d failed in %.2fs: %.1f msgs/s (%.1f MB/s)\n",
		r.Messages, r.Failed, r.Seconds, r.MsgsPerSec, r.MBPerSec)
	if r.Failed > 0 {
		var kinds []string
		for k, n := range r.Errors {
			kinds = append(kinds, fmt.Sprintf("%s=%d", k, n))
		}
		sort.Strings(kinds)
		fmt.Fprintf(w, "  errors     %s\n  first      %s\n", strings.Join(kinds, " "), r.FirstError)
	}
	l := r.LatencyMS
	fmt.Fprintf(w, "  latency    p50 %.2fms  p90 %.2fms  p99 %.2fms  max %.2fms\n", l.P50, l.P90, l.P99, l.Max)
	if r.PeakRSSKB > 0 {
		fmt.Fprintf(w, "  milter     CPU %.2fs (%.3fs per 1000 messages), peak RSS %.1f MB, %d threads\n",
			r.MilterCPU, r.MilterCPUPer1000, float64(r.PeakRSSKB)/1024, r.MaxThreads)
		if !r.HWMReset {
			fmt.Fprintf(w, "             (peak sampled every 20ms: /proc/PID/clear_refs was not writable; lifetime peak %.1f MB)\n",
				float64(r.LifetimeHWMKB)/1024)
		}
	}
	fmt.Fprintf(w, "  driver     CPU %.2fs; the rest of the machine %.2fs; negotiated %s\n", r.DriverCPU, r.OtherCPU, r.Negotiated)
}
