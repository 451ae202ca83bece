package config

import (
	"strings"
	"testing"
)

func TestParseDuration(t *testing.T) {
	const day = 24 * 60 * 60 * 1e9
	tests := []struct {
		in   string
		want float64 // nanoseconds
		bad  bool
	}{
		{"14d", 14 * day, false},
		{"1d12h", 1.5 * day, false},
		{"1d", day, false},
		{"0d", 0, false},
		{"1d30m", day + 30*60*1e9, false},
		{"-1d", -day, false},
		{"168h", 7 * day, false},
		{"5s", 5e9, false},
		{"0", 0, false},
		{"1.5d", 0, true},
		{"d", 0, true},
		{"1dd", 0, true},
		{"1d-1h", 0, true},
		{"1d+1h", 0, true},
		{"1d 12h", 0, true},
		{"200000000d", 0, true},
		{"106751d23h47m16.854775807s", 9223372036854775807, false},
		{"106751d23h47m17s", 0, true},
		{"days", 0, true},
	}
	for _, tt := range tests {
		got, err := parseDuration(tt.in)
		switch {
		case tt.bad && err == nil:
			t.Errorf("parseDuration(%q) = %v, want an error", tt.in, got)
		case !tt.bad && (err != nil || float64(got) != tt.want):
			t.Errorf("parseDuration(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

// Every duration setting takes days, and example.toml says so where it
// used to say there was no day unit.
func TestDurationsTakeDays(t *testing.T) {
	cfg, err := Parse("", []byte("[sign]\nexpire = \"14d\"\n[limits]\nidle_timeout = \"1d\"\nmessage_timeout = \"1d\"\nshutdown_timeout = \"0d30m\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Sign.Expire.Hours() != 14*24 || cfg.Limits.IdleTimeout.Hours() != 24 || cfg.Limits.ShutdownTimeout.Minutes() != 30 {
		t.Errorf("expire %v, idle_timeout %v, shutdown_timeout %v", cfg.Sign.Expire, cfg.Limits.IdleTimeout, cfg.Limits.ShutdownTimeout)
	}
	for in, want := range map[string]float64{`"3d"`: 3 * 24, `"0s"`: 0, `"7d"`: 7 * 24} {
		cfg, err := Parse("", []byte("[dns]\nmax_stale = "+in+"\n"))
		if err != nil || cfg.DNS.MaxStale.Hours() != want {
			t.Errorf("dns.max_stale = %s: %v, %v; want %vh", in, cfg, err, want)
		}
	}
	if _, err := Parse("", []byte("[dns]\ntimeout = \"1d\"\n")); err == nil || !strings.Contains(err.Error(), `"1d" is out of range`) {
		t.Errorf("dns.timeout = 1d: %v", err)
	}
}
