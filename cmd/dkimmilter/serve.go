package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/milter"
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
	if code, ok := parseFlags(fl, args, false, stderr); !ok {
		return code
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
	d := &daemon{log: log, path: *cfgPath, metrics: milter.NewMetrics()}
	rt, warnings, err := milter.LoadRuntime(cfg, d.metrics)
	for _, w := range warnings {
		log.Warn(w)
	}
	if err != nil {
		logConfigError(log, err)
		return exitConfig
	}
	d.srv = milter.NewServer(milter.ServerOptions{
		Runtime: rt, Log: log, Metrics: d.metrics,
		// Fixed for the life of the process: a reload cannot apply them
		// (restartOnly).
		Limits: milter.Limits{
			MaxSessions:    cfg.Limits.MaxSessions,
			IdleTimeout:    cfg.Limits.IdleTimeout,
			MessageTimeout: cfg.Limits.MessageTimeout,
		},
	})

	ln, err := milter.Listen(cfg.Listen, cfg.SocketMode)
	if err != nil {
		log.Error("cannot listen", "listen", cfg.Listen, "err", err)
		return exitFailure
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if cfg.MetricsListen != "" {
		mln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			ln.Close()
			log.Error("cannot listen for metrics", "metrics_listen", cfg.MetricsListen, "err", err)
			return exitFailure
		}
		go func() {
			if err := d.metrics.Serve(ctx, mln); err != nil {
				log.Error("metrics server failed", "err", err)
			}
		}()
	}
	go d.keyHealth(ctx)
	logEffective(log, cfg)

	// Stop and reload signals have their own channels: signal.Notify
	// drops a signal when the channel is full, and a SIGTERM must not be
	// lost behind a queued SIGHUP while a reload runs.
	stop := make(chan os.Signal, 2)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(stop)
	defer signal.Stop(hup)
	served := make(chan error, 1)
	go func() { served <- d.srv.Serve(ln) }()
	sdNotify("READY=1\nSTATUS=serving on " + cfg.Listen)
	for {
		select {
		case err := <-served:
			if err != nil {
				log.Error("milter server failed", "err", err)
				return exitFailure
			}
			return exitOK
		case <-hup:
			d.reload()
		case sig := <-stop:
			return d.stop(sig, stop, served)
		}
	}
}

// daemon is the running server with what reload and stop need.
type daemon struct {
	log     *slog.Logger
	path    string // -config, or "" for the default path
	srv     *milter.Server
	metrics *milter.Metrics
	mu      sync.Mutex // serialises reloads
}

// reload re-reads the configuration and the keys. A new configuration
// replaces the old one only if all of it loads: otherwise every problem is
// logged and the old one stays in force. Sessions in flight keep the
// configuration they started with; new connections get the new one.
func (d *daemon) reload() {
	d.mu.Lock()
	defer d.mu.Unlock()
	sdNotify("RELOADING=1\n" + monotonicUsec())
	defer sdNotify("READY=1")
	old := d.srv.Runtime().Config
	d.log.Info("reloading", "config", configName(d.path))
	cfg, _, err := loadConfig(d.path)
	var rt *milter.Runtime
	var warnings []string
	if err == nil {
		rt, warnings, err = milter.LoadRuntime(cfg, d.metrics)
	}
	for _, w := range warnings {
		d.log.Warn(w)
	}
	if err != nil {
		logConfigError(d.log, err)
		d.log.Error("reload failed: the previous configuration stays in force", "config", configName(d.path))
		d.metrics.Reload(false)
		return
	}
	for _, c := range restartOnly(old, cfg) {
		d.log.Warn("this setting changes only with a restart", "setting", c)
	}
	d.srv.SetRuntime(rt)
	d.metrics.Reload(true)
	d.log.Info("configuration reloaded: new connections use it, sessions in flight finish on the old one", "config", configName(d.path))
	logEffective(d.log, cfg)
	go d.checkKeys(context.Background(), cfg)
}

// restartOnly names the settings that a reload cannot apply: the sockets
// are open and the connection limits are in force. The header limits and
// shutdown_timeout are read per message and at stop: a reload applies them.
func restartOnly(old, cfg *config.Config) []string {
	var out []string
	if old.Listen != cfg.Listen || old.SocketMode != cfg.SocketMode {
		out = append(out, "listen, socket_mode")
	}
	if old.MetricsListen != cfg.MetricsListen {
		out = append(out, "metrics_listen")
	}
	o, n := old.Limits, cfg.Limits
	if o.MaxSessions != n.MaxSessions || o.IdleTimeout != n.IdleTimeout || o.MessageTimeout != n.MessageTimeout {
		out = append(out, "limits.max_sessions, idle_timeout, message_timeout")
	}
	return out
}

// stop drains: no new connections, idle sessions end now, messages in
// flight get limits.shutdown_timeout to finish. A second SIGTERM or
// SIGINT cuts them at once.
func (d *daemon) stop(sig os.Signal, again <-chan os.Signal, served <-chan error) int {
	sdNotify("STOPPING=1")
	limit := d.srv.Runtime().Config.Limits.ShutdownTimeout
	d.log.Info("stopping: letting messages in flight finish", "signal", sig.String(), "sessions", d.srv.Sessions(), "shutdown_timeout", limit)
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	go func() {
		select {
		case sig := <-again:
			d.log.Warn("second stop signal: cutting the sessions left", "signal", sig.String())
			cancel()
		case <-ctx.Done():
		}
	}()
	cut := d.srv.Shutdown(ctx)
	<-served
	if cut > 0 {
		d.log.Warn("stopped with messages in flight: Postfix applies milter_default_action to them", "cut", cut)
	} else {
		d.log.Info("stopped")
	}
	return exitOK
}

func configName(path string) string {
	if path == "" {
		return config.DefaultPath
	}
	return path
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
		cfg.Mode = config.ModeVerify
		return cfg, true, nil
	}
	return cfg, false, err
}

// logConfigError logs every problem on its own line.
func logConfigError(log *slog.Logger, err error) {
	eachProblem(err, func(e error) { log.Error("configuration error", "err", e.Error()) })
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
		"config", file, "listen", cfg.Listen, "mode", cfg.Mode.String(),
		"authserv_id", cfg.AuthservID, "keys", len(cfg.Keys), "signing", strings.Join(rules, ", "),
		"internal_hosts", strings.Join(hosts, ","), "sign_authenticated", cfg.Sign.SignAuthenticated)
}
