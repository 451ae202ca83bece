package main

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/keystore"
)

// What check says about the sender binding of authenticated clients
// (sign.sender_binding, [sign.senders]): which logins may have what
// signed, and what the operator of a host with several signing domains
// must map.

// bindingApplies: the binding decides something only when authenticated
// clients are signed for at all: because they authenticated, or because
// they came in through a service in sign.daemon_names (whose logins are
// bound too).
func bindingApplies(cfg *config.Config) bool {
	return cfg.Mode.Signs() && (cfg.Sign.SignAuthenticated || len(cfg.Sign.DaemonNames) > 0) && len(cfg.Signing) > 0
}

// senderBindingWarnings warns of a binding turned off, and of mappings
// that cannot take effect.
func senderBindingWarnings(cfg *config.Config) []string {
	var w []string
	off := cfg.Sign.SenderBinding == config.BindOff
	if off && bindingApplies(cfg) {
		domains, perFrom := keystore.SigningDomains(cfg)
		many := ""
		if perFrom || len(domains) > 1 {
			many = fmt.Sprintf(" With the signing rules signing for %s, each user, or anyone with one user's password, can have mail signed as any of them, and their DMARC policies stop protecting them.", domainsText(domains, perFrom))
		}
		w = append(w, fmt.Sprintf(`%s: sign.sender_binding = "off": a client that authenticates gets mail signed for any From a [[signing]] rule matches, whatever its login.%s Remove the line to bind each login to its own domain and what [sign.senders] lists for it.`, cfg.Where(0), many))
	}
	for _, m := range []struct {
		name string
		set  bool
	}{
		{"[sign.senders]", len(cfg.Sign.Senders) > 0},
		{"database.senders_query", cfg.Database.SendersQuery != ""},
	} {
		switch {
		case !m.set:
		case off:
			w = append(w, fmt.Sprintf(`%s: %s has no effect: sign.sender_binding is "off"`, cfg.Where(0), m.name))
		case !cfg.Sign.SignAuthenticated && len(cfg.Sign.DaemonNames) == 0:
			w = append(w, fmt.Sprintf(`%s: %s has no effect: sign.sign_authenticated is false and sign.daemon_names is empty, so no authenticated client is signed for`, cfg.Where(0), m.name))
		}
	}
	return w
}

// printSenderBinding says, in check's summary, what an authenticated
// login may have signed; with several signing domains, that a login
// without a domain part needs a mapping, and how to write one.
func printSenderBinding(w io.Writer, cfg *config.Config) {
	if !bindingApplies(cfg) {
		return
	}
	if cfg.Sign.SenderBinding == config.BindOff {
		fmt.Fprintln(w, `sender binding off: an authenticated login may have mail signed for any From a [[signing]] rule matches`)
		return
	}
	var bare []string
	for l := range cfg.Sign.Senders {
		if !strings.Contains(l, "@") {
			bare = append(bare, l)
		}
	}
	slices.Sort(bare)
	listed := "none listed"
	if n := len(cfg.Sign.Senders); n > 0 {
		listed = fmt.Sprintf("%d logins listed", n)
	}
	lists, db := "[sign.senders]", ""
	if cfg.Database.SendersQuery != "" {
		lists = "[sign.senders] or database.senders_query"
		db = ", then for what database.senders_query returns for it"
	}
	fmt.Fprintf(w, "sender binding: an authenticated login may have mail signed for its own domain and its subdomains (alice@a.example: a.example, x.a.example), and for what [sign.senders] lists for it (%s)%s\n", listed, db)
	domains, perFrom := keystore.SigningDomains(cfg)
	if !perFrom && len(domains) == 1 {
		fmt.Fprintf(w, "sender binding: the signing rules sign for one domain, %s: a login without a domain part (\"alice\") may have mail signed for any From they match\n", domains[0])
		return
	}
	mapped := "none is mapped now"
	if len(bare) > 0 {
		mapped = fmt.Sprintf("mapped now: %s", strings.Join(bare, ", "))
	}
	if cfg.Database.SendersQuery != "" {
		mapped = "in [sign.senders], " + strings.Replace(mapped, " now", "", 1) + "; the database's are not listed here"
	}
	example := "a.example"
	if len(domains) > 0 {
		example = domains[0]
	}
	fmt.Fprintf(w, `sender binding: the signing rules sign for %s, so a login without a domain part ("alice", not "alice@%s") gets mail signed only for what %s lists for it (%s).
  If your SASL logins are bare user names (Postfix logs them as sasl_username=), map each one to the addresses or domains it may use:
    [sign.senders]
    "alice" = ["alice@%s"]
%s  Logins of the form user@domain need no mapping for their own domain. Without one, a bare login's mail is not signed, actions.sender_mismatch (%q) applies, and the log says "has no domain part".
`, domainsText(domains, perFrom), example, lists, mapped, example, dbMapping(cfg, example), cfg.Actions.SenderMismatch)
}

func domainsText(domains []string, perFrom bool) string {
	switch {
	case perFrom && len(domains) > 0:
		return fmt.Sprintf("%s and a domain per From domain ('%%' keys)", strings.Join(domains, ", "))
	case perFrom:
		return "a domain per From domain ('%' keys)"
	}
	return fmt.Sprintf("%d domains (%s)", len(domains), strings.Join(domains, ", "))
}

// dbMapping is the database form of check's mapping example, when
// database.senders_query is set: a row per entry, the login lower-case.
func dbMapping(cfg *config.Config, example string) string {
	if cfg.Database.SendersQuery == "" {
		return ""
	}
	return fmt.Sprintf("  or a row for database.senders_query (the login in lower case), e.g.\n    INSERT INTO dkim_senders (login, allowed) VALUES ('alice', 'alice@%s');\n", example)
}
