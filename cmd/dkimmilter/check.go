package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/dns"
	"github.com/dkimmilter/dkimmilter/keystore"
)

const checkHelp = `
Validate the configuration, load every key (also each file a "%" key name
matches), resolve every reference, and print what would run. Exit 0 when all
is well, 78 (EX_CONFIG) with every problem listed otherwise. With -dns, a
valid configuration's keys are then looked up in DNS as 'dkimmilter keys
check' does, and its exit status is that of keys check: 1 when a key fails,
2 when one could not be checked.`

func runCheck(args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("check", flag.ContinueOnError)
	fl.SetOutput(stderr)
	cfgPath := fl.String("config", "", "configuration file (default "+config.DefaultPath+")")
	withDNS := fl.Bool("dns", false, "also look every key up in DNS and check it (see 'dkimmilter keys check -h')")
	if code, ok := parseFlags(fl, args, false, stderr); !ok {
		return code
	}
	cfg, defaulted, err := loadConfig(*cfgPath)
	if err != nil {
		printErrors(stderr, err)
		return exitConfig
	}
	if defaulted {
		fmt.Fprintf(stdout, "no configuration file at %s: dkimmilter serve would verify only, on %s, and sign nothing\n", config.DefaultPath, cfg.Listen)
		return exitOK
	}
	var errs []error
	_, warnings, err := keystore.Load(cfg)
	if err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, checkPercentKeys(cfg)...)
	if _, err := dns.NewClient(cfg.DNS.Nameservers, cfg.DNS.Timeout); err != nil {
		errs = append(errs, fmt.Errorf("%s: dns: %w", cfg.Where(0), err))
	}
	for _, w := range warnings {
		fmt.Fprintln(stderr, "warning:", w)
	}
	if len(errs) > 0 {
		printErrors(stderr, errors.Join(errs...))
		fmt.Fprintf(stderr, "%s: FAILED\n", cfg.File)
		return exitConfig
	}
	printSummary(stdout, cfg)
	if *withDNS && len(cfg.Keys) > 0 {
		if code := checkKeysDNS(context.Background(), cfg, cfg.KeyNames(), keysCheckOptions{}, stdout, stderr); code != exitOK {
			fmt.Fprintf(stderr, "%s: configuration OK, DNS check FAILED\n", cfg.File)
			return code
		}
	}
	fmt.Fprintf(stdout, "%s: OK\n", cfg.File)
	return exitOK
}

// checkPercentKeys loads every existing file that a key name with '%'
// matches, so that a bad key is found now and not by the first message.
func checkPercentKeys(cfg *config.Config) []error {
	var errs []error
	for _, name := range cfg.KeyNames() {
		k := cfg.Keys[name]
		if !strings.Contains(k.File, "%") {
			continue
		}
		for _, m := range percentMatches(k.File, fixedKeyFiles(cfg)) {
			if _, err := keystore.ReadPrivateKey(m.path); err != nil {
				errs = append(errs, fmt.Errorf("%s: keys.%s: %w", cfg.Where(k.Line), name, err))
			}
		}
	}
	return errs
}

// printErrors prints each problem err holds on a line of its own.
func printErrors(w io.Writer, err error) {
	eachProblem(err, func(e error) { fmt.Fprintln(w, e) })
}

// eachProblem calls f with each problem err holds: the errors that
// errors.Join and config.Errors put together (every one of a config file's
// problems, every unusable key), one by one, however they are nested.
func eachProblem(err error, f func(error)) {
	if multi, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range multi.Unwrap() {
			eachProblem(e, f)
		}
		return
	}
	f(err)
}

func printSummary(w io.Writer, cfg *config.Config) {
	fmt.Fprintf(w, "listen %s, mode %s\n", cfg.Listen, cfg.Mode)
	for _, name := range cfg.KeyNames() {
		k := cfg.Keys[name]
		if strings.Contains(k.File, "%") {
			n := len(percentMatches(k.File, fixedKeyFiles(cfg)))
			fmt.Fprintf(w, "key %s: d=%s s=%s, %s (per From domain; %d key files found)\n", name, k.Domain, k.Selector, k.File, n)
			continue
		}
		pk, err := keystore.ReadPrivateKey(k.File)
		if err != nil {
			continue
		}
		fmt.Fprintf(w, "key %s: d=%s s=%s, %s %d bits, %s\n", name, k.Domain, k.Selector, pk.KeyType, pk.Bits, k.File)
	}
	for i, r := range cfg.Signing {
		// 1-based, as config errors count rules.
		fmt.Fprintf(w, "signing[%d]: %s -> %s\n", i+1, r.From, strings.Join(r.Keys, ", "))
	}
}
