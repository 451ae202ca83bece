package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	stdlog "log"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/cloudflare/tableflip"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/dnsupdate"
	"github.com/dkimmilter/dkimmilter/keystore"
	"github.com/dkimmilter/dkimmilter/keystore/rotation"
	"github.com/dkimmilter/dkimmilter/milter"
)

const serveHelp = `
Run the milter. Without -config and with no file at ` + config.DefaultPath + `,
it verifies only, on ` + defaultInet + `, and logs how to enable signing.
-listen (unix:/path or inet:host:port) replaces the configuration's listen:
beside OpenDKIM, which often holds port 8891, -listen inet:127.0.0.1:8893.
A socket passed by systemd (dkimmilter.socket) is served instead of listen.
SIGHUP reloads the configuration; SIGUSR2 starts the binary again (an
upgrade), hands it the socket, and this process finishes its sessions and
exits; -pidfile names the file that holds the serving process's PID.`

func runServe(args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("serve", flag.ContinueOnError)
	fl.SetOutput(stderr)
	cfgPath := fl.String("config", "", "configuration file (default "+config.DefaultPath+")")
	listen := fl.String("listen", "", "milter socket, unix:/path or inet:host:port, instead of the configuration's listen (default "+defaultInet+")")
	logFormat := fl.String("log-format", "text", "log format: text or json")
	logLevel := fl.String("log-level", "info", "log level: debug, info, warn or error")
	pidfile := fl.String("pidfile", "", "write the PID of the serving process to this file (replaced atomically, by the new process after an upgrade)")
	if code, ok := parseFlags(fl, args, false, stderr); !ok {
		return code
	}
	log, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		fmt.Fprintln(stderr, "dkimmilter:", err)
		return exitUsage
	}
	// go-milter logs through the standard log package: its lines go to
	// the same handler, each at the level it deserves.
	slog.SetDefault(log)
	stdlog.SetFlags(0)
	stdlog.SetOutput(milter.LibraryLog(log))

	if *listen != "" {
		if err := config.CheckListen(*listen); err != nil {
			fmt.Fprintln(stderr, "dkimmilter serve: -listen:", err)
			return exitUsage
		}
	}
	d := &daemon{log: log, path: *cfgPath, listen: *listen, metrics: milter.NewMetrics(), rotated: &keystore.Rotated{}}
	cfg, defaulted, err := d.loadConfig()
	if err != nil {
		logConfigError(log, err)
		return exitConfig
	}
	d.running = fixedOf(cfg)
	if defaulted {
		log.Warn("no configuration file: verifying only, signing is off",
			"missing", config.DefaultPath, "listen", cfg.Listen,
			"hint", "to sign, run 'dkimmilter keys gen -d example.com' (with your domain), put the [keys.NAME] and [[signing]] lines it prints in "+config.DefaultPath+", then run 'dkimmilter check'")
	}
	// The keys rotation put in place sign from the first message on:
	// the configured key may be revoked by now.
	d.rotation = rotation.New(cfg, rotation.Options{Rotated: d.rotated, Publisher: rotationPublisher,
		Metrics: d.metrics, Log: log, AuthPort: rotationAuthPort})
	rt, warnings, err := milter.LoadRuntime(cfg, d.metrics, d.log, d.rotated)
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
		// (fixedSettings).
		Limits: milter.Limits{
			MaxSessions:    cfg.Limits.MaxSessions,
			IdleTimeout:    cfg.Limits.IdleTimeout,
			MessageTimeout: cfg.Limits.MessageTimeout,
		},
	})

	// The upgrader hands the sockets to the process SIGUSR2 starts, and
	// takes them over from the previous one when this process is that
	// new one.
	upg, err := tableflip.New(tableflip.Options{PIDFile: *pidfile})
	if err != nil {
		log.Error("cannot prepare for upgrades", "err", err)
		return exitFailure
	}
	defer upg.Stop()
	sock, err := openSocket(upg, cfg.Listen, cfg.SocketMode, log)
	if err != nil {
		log.Error("cannot listen", "listen", cfg.Listen, "err", err)
		return exitFailure
	}
	ln := sock.ln
	d.running.listen = sock.addr
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if cfg.MetricsListen != "" {
		mln, err := upg.Listen("tcp", cfg.MetricsListen)
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
	defer d.stopRotation()
	// Stop and reload signals have their own channels: signal.Notify
	// drops a signal when the channel is full, and a SIGTERM must not be
	// lost behind a queued SIGHUP while a reload runs. They are caught
	// before the ready line: a SIGHUP sent as soon as it shows must
	// reload, not kill the process.
	stop := make(chan os.Signal, 2)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	defer signal.Stop(stop)
	defer signal.Stop(hup)
	defer signal.Stop(usr2)
	logEffective(log, rt, d.running)

	served := make(chan error, 1)
	go func() { served <- d.srv.Serve(ln) }()
	status := "READY=1\nSTATUS=serving on " + sock.addr
	if upg.HasParent() {
		// The new main process of the service: systemd follows it
		// (NotifyAccess=all lets it say so) before the old one exits,
		// or the old one's exit would stop the service. Sent before
		// the old process learns that this one is ready.
		status = fmt.Sprintf("MAINPID=%d\n%s", os.Getpid(), status)
	}
	sdNotify(status)
	if err := upg.Ready(); err != nil {
		// The previous process goes on serving: give systemd its PID
		// back.
		log.Error("upgrade failed: cannot tell the previous process that this one is ready", "err", err)
		if upg.HasParent() {
			sdNotify(fmt.Sprintf("MAINPID=%d\nREADY=1", os.Getppid()))
		}
		return exitFailure
	}
	// Once ready: the previous process of an upgrade stopped its own
	// rotation before starting this one, and the state directory's lock
	// makes sure of it.
	d.startRotation()
	handedOver := false
	defer func() {
		if !handedOver {
			sock.removeSocket()
			removePidfile(*pidfile)
		}
	}()
	upgraded := make(chan error, 1)
	upgrading := false
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
		case <-usr2:
			if upgrading {
				log.Warn("SIGUSR2 ignored: an upgrade is already running")
				continue
			}
			exe, _ := os.Executable()
			log.Info("upgrading: starting the binary again", "binary", exe)
			upgrading = true
			// The new process rotates the keys: this one stops
			// first, so that one state is never stepped by two.
			d.stopRotation()
			go func() { upgraded <- upg.Upgrade() }()
		case err := <-upgraded:
			upgrading = false
			if err != nil {
				log.Error("upgrade failed: this process goes on serving", "err", err,
					"hint", "the new process's own lines above say why; 'dkimmilter check' checks the configuration it reads")
				// In case the new process told systemd it was the main
				// one before it failed.
				sdNotify(fmt.Sprintf("MAINPID=%d\nREADY=1", os.Getpid()))
				d.startRotation()
				continue
			}
			handedOver = true
			cancel() // metrics: the new process answers now
			return d.handOver(stop, served)
		case sig := <-stop:
			d.stopRotation()
			// The upgrader holds a copy of each socket for the next
			// process: closed first, or the socket would go on
			// queueing connections nobody accepts.
			upg.Stop()
			<-upg.Exit()
			return d.stop(sig, stop, served)
		}
	}
}

// handOver ends this process after an upgrade: the new one serves on the
// same socket, this one stops accepting and finishes its sessions as a
// stop does (limits.shutdown_timeout), without telling systemd it stops:
// the service goes on, in the new process.
func (d *daemon) handOver(again <-chan os.Signal, served <-chan error) int {
	d.log.Info("upgraded: the new process serves; this one finishes its sessions and exits", "sessions", d.srv.Sessions(), "shutdown_timeout", d.srv.Runtime().Config.Limits.ShutdownTimeout)
	return d.drain(again, served, "stop signal: cutting the sessions left",
		"old process exited with messages in flight: Postfix applies milter_default_action to them", "old process exited after the upgrade")
}

// drain serves the open sessions as Shutdown does, within
// limits.shutdown_timeout or until a signal on again, waits for the
// server to end, and logs how it ended: the end of a stop and of an
// upgraded process alike.
func (d *daemon) drain(again <-chan os.Signal, served <-chan error, cutting, cutMsg, doneMsg string) int {
	ctx, cancel := context.WithTimeout(context.Background(), d.srv.Runtime().Config.Limits.ShutdownTimeout)
	defer cancel()
	go func() {
		select {
		case sig := <-again:
			d.log.Warn(cutting, "signal", sig.String())
			cancel()
		case <-ctx.Done():
		}
	}()
	cut := d.srv.Shutdown(ctx)
	<-served
	if cut > 0 {
		d.log.Warn(cutMsg, "cut", cut)
	} else {
		d.log.Info(doneMsg)
	}
	return exitOK
}

// daemon is the running server with what reload and stop need.
type daemon struct {
	log     *slog.Logger
	path    string // -config, or "" for the default path
	listen  string // -listen, or "" for the configuration's
	srv     *milter.Server
	metrics *milter.Metrics
	running fixedSettings // the restart-only settings in force
	mu      sync.Mutex    // serialises reloads

	// rotated holds the keys rotation put in place, for every Runtime;
	// rotation runs in the daemon, where the switch is one pointer
	// store in the process that signs (doc/rotation.md).
	rotated     *keystore.Rotated
	rotation    *rotation.Engine
	rotationEnd func() // stops the running engine and waits; nil when stopped
}

// rotationAuthPort is the port rotation asks the zones' authoritative
// servers on (0: 53); tests whose servers listen elsewhere set it.
var rotationAuthPort = 0

// rotationPublisher makes the publisher of a [publish.NAME] table for
// rotation; a failure is a publishing error, logged and retried.
func rotationPublisher(cfg *config.Config, name string) (dnsupdate.Publisher, error) {
	p := cfg.Publishers[name]
	if p == nil {
		return nil, fmt.Errorf("no [publish.%s] table in %s", name, configName(cfg.File))
	}
	return dnsupdate.New(p, cfg.DNS.Nameservers, cfg.DNS.Timeout)
}

// startRotation runs the rotation engine until stopRotation.
func (d *daemon) startRotation() {
	if d.rotationEnd != nil || d.rotation == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.rotation.Run(ctx)
	}()
	d.rotationEnd = func() {
		cancel()
		<-done
	}
}

// stopRotation stops the engine and waits for its step to end: each
// step writes its state before it acts, so one cut short is taken up
// again by the next process.
func (d *daemon) stopRotation() {
	if d.rotationEnd != nil {
		d.rotationEnd()
		d.rotationEnd = nil
	}
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
	d.log.Info("reloading", "config", configName(d.path))
	cfg, _, err := d.loadConfig()
	var rt *milter.Runtime
	var warnings []string
	if err == nil {
		rt, warnings, err = milter.LoadRuntime(cfg, d.metrics, d.log, d.rotated)
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
	for _, c := range d.running.pending(cfg) {
		d.log.Warn("setting not in force: it changes only with a restart", "setting", c.setting,
			"running", c.running, "config", c.file, "hint", "run 'systemctl restart dkimmilter' to apply it")
	}
	d.srv.SetRuntime(rt)
	d.rotation.Reload(cfg)
	d.metrics.Reload(true)
	d.log.Info("configuration reloaded: new connections use it, sessions in flight finish on the old one", "config", configName(d.path))
	logEffective(d.log, rt, d.running)
	go d.checkKeys(context.Background(), cfg)
}

// fixedSettings are the settings read once, at start: the sockets are
// open and the connection limits are in force for the life of the
// process. The header limits and shutdown_timeout are read per message
// and at stop: a reload applies them.
type fixedSettings struct {
	listen, socketMode, metricsListen        string
	maxSessions, idleTimeout, messageTimeout string
}

func fixedOf(cfg *config.Config) fixedSettings {
	return fixedSettings{
		listen:         cfg.Listen,
		socketMode:     fmt.Sprintf("%04o", cfg.SocketMode.Perm()),
		metricsListen:  cfg.MetricsListen,
		maxSessions:    fmt.Sprint(cfg.Limits.MaxSessions),
		idleTimeout:    cfg.Limits.IdleTimeout.String(),
		messageTimeout: cfg.Limits.MessageTimeout.String(),
	}
}

// settingChange is a restart-only setting whose value in the file is not
// the one in force.
type settingChange struct{ setting, running, file string }

// pending compares the settings in force with a configuration file's,
// setting by setting. It is run against what is running (never against
// the previous reload), so a change not yet in force is named at every
// reload, and a file reverted to the running value is not.
func (running fixedSettings) pending(cfg *config.Config) []settingChange {
	f := fixedOf(cfg)
	var out []settingChange
	for _, c := range []settingChange{
		{"listen", running.listen, f.listen},
		{"socket_mode", running.socketMode, f.socketMode},
		{"metrics_listen", running.metricsListen, f.metricsListen},
		{"limits.max_sessions", running.maxSessions, f.maxSessions},
		{"limits.idle_timeout", running.idleTimeout, f.idleTimeout},
		{"limits.message_timeout", running.messageTimeout, f.messageTimeout},
	} {
		// socket_mode applies to a unix socket only, and a new listen
		// is reported as a whole.
		if c.setting == "socket_mode" && (running.listen != f.listen || !strings.HasPrefix(f.listen, "unix:")) {
			continue
		}
		if c.running != c.file {
			out = append(out, c)
		}
	}
	return out
}

// stop drains: no new connections (the listener is closed), and every
// open milter connection is served until Postfix closes it, or until a
// message ends on it and it then stays idle for milter.DefaultDrainGrace;
// limits.shutdown_timeout bounds the whole, and a second SIGTERM or SIGINT
// ends it at once. Postfix reads nothing from a milter connection between
// messages, so closing one earlier would cost its SMTP session's next
// message milter_default_action (milter.Server.Shutdown).
func (d *daemon) stop(sig os.Signal, again <-chan os.Signal, served <-chan error) int {
	sdNotify("STOPPING=1")
	d.log.Info("stopping: letting messages in flight finish", "signal", sig.String(), "sessions", d.srv.Sessions(),
		"shutdown_timeout", d.srv.Runtime().Config.Limits.ShutdownTimeout, "then", "each milter connection ends when Postfix closes it, or when idle for "+milter.DefaultDrainGrace.String()+" after a message")
	return d.drain(again, served, "second stop signal: cutting the sessions left",
		"stopped with messages in flight: Postfix applies milter_default_action to them", "stopped")
}

func configName(path string) string {
	if path == "" {
		return config.DefaultPath
	}
	return path
}

// loadConfig reads the configuration, at start and on each reload, with
// -listen in place of its listen.
func (d *daemon) loadConfig() (*config.Config, bool, error) {
	cfg, defaulted, err := loadConfig(d.path)
	if err == nil && d.listen != "" {
		cfg.Listen = d.listen
	}
	return cfg, defaulted, err
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
// admin reads first when mail is not signed. The socket is the one
// listened on, which a reload does not change.
func logEffective(log *slog.Logger, rt *milter.Runtime, running fixedSettings) {
	cfg := rt.Config
	var rules []string
	for _, r := range cfg.Signing {
		rules = append(rules, r.From+" -> "+strings.Join(r.Keys, "+"))
	}
	file := cfg.File
	if file == "" {
		file = "(built-in defaults)"
	}
	attrs := []any{"version", version(),
		"config", file, "listen", running.listen, "mode", cfg.Mode.String(),
		"authserv_id", cfg.AuthservID, "keys", len(cfg.Keys), "signing", strings.Join(rules, ", "),
		"internal_hosts", strings.Join(cfg.Sign.InternalHosts.Strings(), ","), "daemon_names", strings.Join(cfg.Sign.DaemonNames, ","),
		"sign_authenticated", cfg.Sign.SignAuthenticated, "peers", strings.Join(cfg.Peers.Strings(), ",")}
	if db := rt.Keys.DatabaseTarget(); db != "" {
		// The server of keys with a query, never the password.
		attrs = append(attrs, "database", db)
	}
	log.Info("dkimmilter ready", append(attrs, "pid", os.Getpid())...)
}
