package keystore

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"

	"github.com/dkimmilter/dkimmilter/config"
)

// The sender binding (sign.sender_binding): a client trusted only because
// it authenticated may have mail signed only for the From domains its
// login may use. Without it, any user of a host that signs for several
// domains (or anyone holding one user's password) gets any of those
// domains signed, and that domain's DMARC policy stops protecting it.

// SenderSource tells which From addresses and domains a login may use
// besides its own domain: [sign.senders] (SenderMap) is one, a database
// can be another. allowed holds lower-case entries in the forms
// [sign.senders] takes: "user@example.com" (one address), "example.com"
// (the domain and its subdomains) or "*" (any From). found is false when
// the source does not know the login. An error means the source could not
// answer: the message is then not signed, and the milter applies
// actions.sign_error (a source that is down must not let mail go out
// signed for anyone, nor unsigned by accident).
//
// A source that is also a fmt.Stringer names itself in the log's reasons.
type SenderSource interface {
	Senders(ctx context.Context, login string) (allowed []string, found bool, err error)
}

// SenderMap is [sign.senders]: lower-case logins to their entries, as
// config.Sign.Senders holds them.
type SenderMap map[string][]string

// Senders looks the login up without regard to case.
func (m SenderMap) Senders(_ context.Context, login string) ([]string, bool, error) {
	allowed, ok := m[strings.ToLower(login)]
	return allowed, ok, nil
}

func (m SenderMap) String() string { return "[sign.senders]" }

// Binding decides whether a login may have mail signed for a From
// address. It is immutable and safe for concurrent use (as long as its
// sources are).
type Binding struct {
	off     bool
	single  bool     // the signing rules sign with one d= domain only
	domains []string // their d= domains, for the reasons
	perFrom bool     // a key's d= is '%': one per From domain
	sources []SenderSource
}

// NewBinding is cfg's sender binding: [sign.senders] first, then the
// sources in more, in order.
func NewBinding(cfg *config.Config, more ...SenderSource) *Binding {
	b := &Binding{off: cfg.Sign.SenderBinding == config.BindOff}
	b.domains, b.perFrom = SigningDomains(cfg)
	b.single = !b.perFrom && len(b.domains) == 1
	if len(cfg.Sign.Senders) > 0 {
		b.sources = append(b.sources, SenderMap(cfg.Sign.Senders))
	}
	b.sources = append(b.sources, more...)
	return b
}

// SigningDomains lists the d= domains the [[signing]] rules sign with,
// sorted; perFrom is true when one of their keys has '%' in its domain,
// which signs as each From domain it is used for. A login without a
// domain part may use any From only when there is one domain and no
// '%': then every user of the host is a user of that domain.
func SigningDomains(cfg *config.Config) (domains []string, perFrom bool) {
	for _, r := range cfg.Signing {
		for _, name := range r.Keys {
			k := cfg.Keys[name]
			switch {
			case k == nil:
			case strings.Contains(k.Domain, "%"):
				perFrom = true
			case !slices.Contains(domains, k.Domain):
				domains = append(domains, k.Domain)
			}
		}
	}
	slices.Sort(domains)
	return domains, perFrom
}

// Mismatch is a From address a login may not have signed.
type Mismatch struct {
	Login  string // as the client authenticated ({auth_authen})
	From   string // the address of the first From field
	Domain string // its domain, lower-case
	// BareLogin: the login has no domain part, nothing maps it, and the
	// host signs for several domains. Otherwise the From is outside what
	// the login may use.
	BareLogin bool
	Reason    string // what the log says, with what to change
}

// Mismatch reasons, as the metric labels them.
const (
	ReasonNotAllowed         = "not_allowed"
	ReasonLoginWithoutDomain = "login_without_domain"
)

// Label is the reason as a metric label: ReasonNotAllowed or
// ReasonLoginWithoutDomain.
func (m *Mismatch) Label() string {
	if m.BareLogin {
		return ReasonLoginWithoutDomain
	}
	return ReasonNotAllowed
}

// Check says whether login may have mail from the address from signed:
// nil when it may (or the binding is off), a Mismatch when not, an error
// when a source could not answer. Domains are compared without regard to
// case, and in their ASCII form (RFC 5890 A-labels): an SMTPUTF8 From
// domain matches the A-label form written in the configuration.
func (b *Binding) Check(ctx context.Context, login, from string) (*Mismatch, error) {
	if b == nil || b.off {
		return nil, nil
	}
	local, fromDomain, ok := splitAddress(from)
	if !ok {
		return &Mismatch{Login: login, From: from, Reason: fmt.Sprintf("From %q has no domain to bind to login %q", from, login)}, nil
	}
	fromDomain = asciiDomain(fromDomain)
	loginDomain := ""
	if i := strings.LastIndexByte(login, '@'); i >= 0 && i < len(login)-1 {
		loginDomain = asciiDomain(strings.ToLower(strings.TrimSuffix(login[i+1:], ".")))
	}
	switch {
	case loginDomain != "" && within(fromDomain, loginDomain):
		return nil, nil
	case loginDomain == "" && b.single:
		// One signing domain: every login is one of its users, as
		// before the binding.
		return nil, nil
	}
	mapped := false
	for _, src := range b.sources {
		allowed, found, err := src.Senders(ctx, login)
		if err != nil {
			return nil, fmt.Errorf("sender binding: %s could not say which From domains login %q may use: %w", sourceName(src), login, err)
		}
		if !found {
			continue
		}
		mapped = true
		for _, e := range allowed {
			if allows(e, local, fromDomain) {
				return nil, nil
			}
		}
	}
	m := &Mismatch{Login: login, From: from, Domain: fromDomain}
	lists := b.sourceNames()
	switch {
	case loginDomain != "" && mapped:
		m.Reason = fmt.Sprintf("login %s may have mail signed for %s, its subdomains and what %s lists for it, not for From %s", login, loginDomain, lists, from)
	case loginDomain != "":
		m.Reason = fmt.Sprintf("login %s may have mail signed for %s and its subdomains only, not for From %s; %s can allow more", login, loginDomain, from, lists)
	case mapped:
		m.Reason = fmt.Sprintf("login %q may have mail signed only for what %s lists for it, not for From %s", login, lists, from)
	default:
		m.BareLogin = true
		m.Reason = fmt.Sprintf("login %q has no domain part and nothing in %s maps it, while the signing rules sign for %s: not signing From %s; map the login in %s to the addresses or domains it may use", login, lists, b.domainsText(), from, lists)
	}
	return m, nil
}

// allows reports whether a sender entry covers the From address
// local@domain (domain lower-case, ASCII).
func allows(entry, local, domain string) bool {
	if entry == "*" {
		return true
	}
	if i := strings.LastIndexByte(entry, '@'); i >= 0 {
		// Local parts as the SigningTable compares them: without
		// regard to case, as every real mailbox provider does.
		return strings.EqualFold(entry[:i], local) && asciiDomain(entry[i+1:]) == domain
	}
	return within(domain, asciiDomain(entry))
}

// within reports whether d is domain or one of its subdomains.
func within(d, domain string) bool {
	return d == domain || strings.HasSuffix(d, "."+domain) && domain != ""
}

// asciiDomain is a lower-case domain in its A-label form when it has
// U-labels; left as it is when IDNA refuses it (it then matches only
// itself).
func asciiDomain(d string) string {
	for i := 0; i < len(d); i++ {
		if d[i] >= utf8.RuneSelf {
			if a, err := idna.Lookup.ToASCII(d); err == nil {
				return a
			}
			return d
		}
	}
	return d
}

func sourceName(src SenderSource) string {
	if s, ok := src.(fmt.Stringer); ok {
		return s.String()
	}
	return "the sender source"
}

// sourceNames names where mappings come from, for the reasons: always
// [sign.senders], where a mapping can be added.
func (b *Binding) sourceNames() string {
	names := []string{"[sign.senders]"}
	for _, src := range b.sources {
		if n := sourceName(src); !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	return strings.Join(names, " or ")
}

func (b *Binding) domainsText() string {
	switch {
	case b.perFrom:
		return "a domain per From domain ('%' keys)"
	case len(b.domains) == 0:
		return "no domain"
	}
	return fmt.Sprintf("several domains (%s)", strings.Join(b.domains, ", "))
}
