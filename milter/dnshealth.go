package milter

import (
	"log/slog"
	"strings"
	"time"

	"github.com/dkimmilter/dkimmilter/internal/dns"
)

// A resolver outage stamps dkim=temperror on every signed message (or a
// stale key, see dns.max_stale) and would otherwise show only in the
// per-message lines. watchResolver says it once: one WARN when the
// resolver starts failing (internal/dns/health.go tells a failing
// resolver from one broken zone), a reminder every five minutes while it
// lasts, and one INFO when it answers again, with how long it lasted and
// how many lookups failed.
func watchResolver(c *dns.Client, log *slog.Logger) *dns.Health {
	if log == nil {
		return nil
	}
	resolvers := strings.Join(c.Servers(), ", ")
	return dns.NewHealth(c, dns.HealthHooks{
		OnOutage: func(o dns.Outage) {
			log.Warn("dns: key lookups are failing at the resolver; signed mail gets dkim=temperror unless a stale key record is at hand (dns.max_stale)",
				"resolver", resolvers, "kind", o.Kind, "failed", o.Failed, "domains", o.Domains, "err", o.Err)
		},
		OnStill: func(o dns.Outage) {
			log.Warn("dns: key lookups still failing",
				"resolver", resolvers, "kind", o.Kind, "since", o.Since.UTC().Format("2006-01-02T15:04:05Z"), "lasted", o.Lasted.Round(time.Millisecond), "failed", o.Failed, "err", o.Err)
		},
		OnRecover: func(o dns.Outage) {
			log.Info("dns: key lookups answered again",
				"resolver", resolvers, "outage", o.Lasted.Round(time.Millisecond), "failed", o.Failed)
		},
	})
}
