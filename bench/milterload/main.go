// Command milterload drives a milter (dkimmilter, OpenDKIM, any other) the
// way Postfix does, from many connections at once, and reports messages
// per second, latency percentiles and the milter's CPU time and peak
// memory. See bench/README.md.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/dkimmilter/dkimmilter/internal/loadgen"
)

func main() {
	os.Exit(run())
}

func run() int {
	fl := flag.NewFlagSet("milterload", flag.ContinueOnError)
	addr := fl.String("addr", "", "the milter: unix:/path or inet:host:port")
	mode := fl.String("mode", "sign", "sign: an authenticated client on 127.0.0.1 sends mail from -from; verify: an external client sends the signed message -msg")
	msgFile := fl.String("msg", "", "verify: the signed message file (LF or CRLF)")
	from := fl.String("from", "alice@example.com", "sign: the From address (in the milter's signing domain)")
	to := fl.String("to", "bob@example.net", "sign: the recipient")
	conc := fl.Int("c", 1, "concurrent milter connections")
	count := fl.Int("n", 0, "messages to send (0: run for -d)")
	dur := fl.Duration("d", 10*time.Second, "how long to run when -n is 0")
	size := fl.Int("size", 2048, "sign: message size in bytes (the body is padded with text lines)")
	reuse := fl.Int("reuse", 1, "messages per connection (Postfix sends several per SMTP session)")
	warmup := fl.Int("warmup", 20, "messages sent first, on one connection, and not measured")
	pid := fl.Int("pid", 0, "the milter's process id, to measure its CPU time and peak RSS")
	expect := fl.String("expect", "", "verify: the dkim= result every message must get (e.g. pass)")
	timeout := fl.Duration("timeout", 60*time.Second, "bound on one message")
	jsonOut := fl.Bool("json", false, "print the report as JSON")
	label := fl.String("label", "", "name of this figure in the report")
	milter := fl.String("milter", "", "name of the milter in the report")
	save := fl.String("save", "", "write the first message, with the milter's changes applied, to this file")
	table := fl.String("table", "", "print the comparison table of the JSON reports in this directory and exit")
	tableAB := fl.String("compare", "dkimmilter/opendkim", "with -table: the two milter names, A/B; ratios are A/B")
	targets := fl.Bool("targets", false, "with -table: check the figures against the performance targets (bench/README.md) instead")
	rsaNs := fl.Float64("rsa-sign-ns", 0, "with -targets: ns per Go RSA-2048 signature (BenchmarkRSASignPKCS1v15)")
	fl.Usage = func() {
		fmt.Fprintf(fl.Output(), "usage: milterload -addr unix:/path|inet:host:port [flags]\n       milterload -table DIR [-compare A/B] [-targets -rsa-sign-ns N]\n")
		fl.PrintDefaults()
	}
	if err := fl.Parse(os.Args[1:]); err != nil {
		return 64
	}
	if *table != "" {
		reps, err := loadgen.ReadReports(*table)
		if err != nil {
			fmt.Fprintln(os.Stderr, "milterload:", err)
			return 1
		}
		a, b, _ := strings.Cut(*tableAB, "/")
		if *targets {
			loadgen.WriteTargets(os.Stdout, reps, a, b, *rsaNs)
		} else {
			loadgen.WriteTable(os.Stdout, reps, a, b)
		}
		return 0
	}
	if *addr == "" {
		fl.Usage()
		return 64
	}

	cfg := loadgen.Config{
		Addr: *addr, Mode: loadgen.Mode(*mode), Concurrency: *conc, Count: *count, Duration: *dur,
		Reuse: *reuse, Warmup: *warmup, Timeout: *timeout, Expect: *expect, PID: *pid,
		Label: *label, Milter: *milter,
	}
	switch cfg.Mode {
	case loadgen.Sign:
		cfg.Message = loadgen.GenerateMessage(*size, *from, *to)
	case loadgen.Verify:
		if *msgFile == "" {
			fmt.Fprintln(os.Stderr, "milterload: -mode verify needs -msg FILE (a signed message)")
			return 64
		}
		m, err := loadgen.ReadMessageFile(*msgFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "milterload:", err)
			return 1
		}
		cfg.Message = m
	default:
		fmt.Fprintf(os.Stderr, "milterload: -mode %q: want sign or verify\n", *mode)
		return 64
	}
	if cfg.Label == "" {
		cfg.Label = fmt.Sprintf("%s c=%d", cfg.Mode, cfg.Concurrency)
	}
	var saveErr error
	if *save != "" {
		cfg.Save = func(b []byte) { saveErr = os.WriteFile(*save, b, 0o644) }
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := loadgen.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "milterload:", err)
		return 1
	}
	if saveErr != nil {
		fmt.Fprintln(os.Stderr, "milterload:", saveErr)
		return 1
	}
	if *jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
	} else {
		rep.WriteText(os.Stdout)
	}
	if rep.Failed > 0 {
		return 2
	}
	return 0
}
