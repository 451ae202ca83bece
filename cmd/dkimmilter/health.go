package main

import (
	"context"
	"strings"
	"time"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/keystore"
	"github.com/dkimmilter/dkimmilter/keystore/keycheck"
	"github.com/dkimmilter/dkimmilter/milter"
)

// keyCheckInterval is how often the daemon checks its keys' DNS records in
// the background, for the key-health metrics; also after each reload. An
// hour catches a removed or replaced record well before mail piles up,
// at a few queries per key.
const keyCheckInterval = time.Hour

// keyHealth runs `keys check` on every configured key now and then every
// keyCheckInterval, until ctx ends.
func (d *daemon) keyHealth(ctx context.Context) {
	t := time.NewTicker(keyCheckInterval)
	defer t.Stop()
	for {
		d.checkKeys(ctx, d.srv.Runtime().Config)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// checkKeys sets, per key, dkimmilter_key_published (a resolver sees a
// DKIM record at its DNS name), dkimmilter_key_matches (a resolver sees a
// usable record with this key's public key), dkimmilter_key_check_status
// (0 ok, 1 warning, 2 not checked, 3 failing) and
// dkimmilter_key_age_seconds; problems go to the log with the same hints
// as `dkimmilter keys check`.
func (d *daemon) checkKeys(ctx context.Context, cfg *config.Config) {
	if len(cfg.Keys) == 0 || d.metrics == nil {
		return
	}
	resolvers, err := keycheck.Resolvers(cfg.DNS.Nameservers, cfg.DNS.Timeout)
	if err != nil {
		d.log.Warn("key health check: no resolver", "err", err)
		return
	}
	seen := map[milter.KeyLabel]bool{}
	defer func() { d.metrics.KeepKeys(seen) }()
	var names []string
	for _, name := range cfg.KeyNames() {
		// Keys with a query are not checked in the background: their
		// domains are the database's, possibly many thousands, and
		// the daemon must not list them every hour.
		if cfg.Keys[name].Query == "" {
			names = append(names, name)
		}
	}
	for _, kf := range configuredKeyFiles(cfg, names) {
		if kf.noMatch || strings.Contains(kf.domain, "%") {
			continue
		}
		// A key whose domain is "%" is checked once per domain of the
		// signing rules: the domain label tells those series apart.
		if rk := d.rotated.Get(kf.name); rk != nil && rk.Domain == kf.domain {
			// Rotation put another key in place: its record is the
			// one verifiers need, the configured one may be revoked.
			kf.selector, kf.path, kf.status = rk.Selector, rk.File, keystore.InspectKeyFileFor(rk.File, nil)
		} else if kf.rot.signs() {
			// The state names a key the engine did not put in place
			// (it could not load it): the configured key signs.
			k := cfg.Keys[kf.name]
			kf.selector, kf.path, kf.status = k.Selector, k.File, keystore.InspectKeyFileFor(k.File, nil)
		}
		label := milter.KeyLabel{Key: kf.name, Domain: kf.domain}
		seen[label] = true
		if !kf.status.ModTime.IsZero() {
			d.metrics.KeyGauge("dkimmilter_key_age_seconds", label, time.Since(kf.status.ModTime).Seconds())
		}
		k := &keystore.Key{Name: kf.name, Domain: kf.domain, Selector: kf.selector, File: kf.path, PrivateKey: kf.status.Key}
		// Each key gets its own bound: one resolver that times out must
		// not eat the time of the keys after it.
		kctx, cancel := context.WithTimeout(ctx, 2*cfg.DNS.Timeout)
		res := keycheck.Check(kctx, k, resolvers, checkOptions(cfg, kf.name)...)
		cancel()
		// Per answer, not from the overall status: a resolver that
		// times out makes the status "not checked", but the record is
		// published and matching where it was seen.
		published, matches := 0.0, 0.0
		for _, a := range res.Answers {
			if a.KeyRecord {
				published = 1
			}
			if a.Matching {
				matches = 1
			}
		}
		d.metrics.KeyGauge("dkimmilter_key_published", label, published)
		d.metrics.KeyGauge("dkimmilter_key_matches", label, matches)
		d.metrics.KeyGauge("dkimmilter_key_check_status", label, float64(res.Status))
		if res.Status != keycheck.OK {
			var problems []string
			for _, p := range res.Problems {
				problems = append(problems, p.Text)
			}
			d.log.Warn("key health check", "key", kf.name, "domain", kf.domain, "dns", res.DNSName, "status", res.Status.String(),
				"problems", strings.Join(problems, "; "), "hint", "run 'dkimmilter keys check "+kf.name+"' for the fix")
		}
	}
}
