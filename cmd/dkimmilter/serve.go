package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/keystore"
	"github.com/dkimmilter/dkimmilter/milter"
	"github.com/dkimmilter/dkimmilter/verifier"
)

const serveHelp = `
Run the milter. Without -config and with no file at ` + config.DefaultPath + `,
it verifies only, on ` + defaultInet + `, and logs how to enable signing.`

func runServe(args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("serve", flag.ContinueOnError)
	fl.SetOutput(stderr)
	cfgPath := fl.String("config", "", "configuration file (default "+config.DefaultPath+")")
	logFormat := fl.String("log-format", "text", "log format: text or json")
	logLevel := fl.String("log-level", "info", "log level: debug, info, warn or error")
	if err := fl.Parse(args); err != nil {
		return exitUsage
	}
	log, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		fmt.Fprintln(stderr, "dkimmilter:", err)
		return exitUsage
	}
	// go-milter logs through the standard log package; this sends it to
	// the same handler.
	slog.SetDefault(log)

	cfg, defaulted, err := loadConfig(*cfgPath)
	if err != nil {
		logConfigError(log, err)
		return exitConfig
	}
	if defaulted {
		log.Warn("no configuration file: verifying only, signing is off",
			"missing", config.DefaultPath, "listen", cfg.Listen,
			"hint", "to sign, run 'dkimmilter keys gen -d example.com' (with your domain), put the [keys.NAME] and [[signing]] lines it prints in "+config.DefaultPath+", then run 'dkimmilter check'")
	}
	rt, warnings, err := loadRuntime(cfg)
	for _, w := range warnings {
		log.Warn(w)
	}
	if err != nil {
		logConfigError(log, err)
		return exitConfig
	}

	ln, err := milter.Listen(cfg.Listen, cfg.SocketMode)
	if err != nil {
		log.Error("cannot listen", "listen", cfg.Listen, "err", err)
		return exitFailure
	}
	srv := milter.NewServer(rt, log)
	logEffective(log, cfg)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		sig := <-sigs
		log.Info("stopping", "signal", sig.String())
		srv.Close()
	}()
	if err := srv.Serve(ln); err != nil {
		log.Error("milter server failed", "err", err)
		return exitFailure
	}
	log.Info("stopped")
	return exitOK
}

// loadConfig reads path, or the default path; a missing default file means
// the built-in verify-only defaults.
func loadConfig(path string) (cfg *config.Config, defaulted bool, err error) {
	if path != "" {
		cfg, err := config.Load(path)
		return cfg, false, err
	}
	cfg, err = config.Load(config.DefaultPath)
	if errors.Is(err, fs.ErrNotExist) {
		cfg = config.Default()
		cfg.Mode = "v"
		return cfg, true, nil
	}
	return cfg, false, err
}

// loadRuntime loads the keys and builds the resolver for cfg.
func loadRuntime(cfg *config.Config) (*milter.Runtime, []string, error) {
	keys, warnings, err := keystore.Load(cfg)
	if err != nil {
		return nil, warnings, err
	}
	dns, err := verifier.NewDNSResolver(cfg.DNS.Nameservers, cfg.DNS.Timeout)
	if err != nil {
		return nil, warnings, fmt.Errorf("%s: dns: %w", cfg.Where(0), err)
	}
	res := verifier.NewCachingResolver(dns, verifier.CacheOptions{})
	return milter.NewRuntime(cfg, keys, res), warnings, nil
}

// logConfigError logs every problem on its own line.
func logConfigError(log *slog.Logger, err error) {
	for _, line := range strings.Split(err.Error(), "\n") {
		if line != "" {
			log.Error("configuration error", "err", line)
		}
	}
}

// logEffective logs the configuration in force, as chasquid does: what an
// admin reads first when mail is not signed.
func logEffective(log *slog.Logger, cfg *config.Config) {
	var rules []string
	for _, r := range cfg.Signing {
		rules = append(rules, r.From+" -> "+strings.Join(r.Keys, "+"))
	}
	var hosts []string
	for _, p := range cfg.Sign.InternalHosts {
		hosts = append(hosts, p.String())
	}
	file := cfg.File
	if file == "" {
		file = "(built-in defaults)"
	}
	log.Info("dkimmilter ready",
		"config", file, "listen", cfg.Listen, "mode", cfg.Mode,
		"authserv_id", cfg.AuthservID, "keys", len(cfg.Keys), "signing", strings.Join(rules, ", "),
		"internal_hosts", strings.Join(hosts, ","), "sign_authenticated", cfg.Sign.SignAuthenticated)
}
