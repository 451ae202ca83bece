package keystore

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/dkimmilter/dkimmilter/config"
)

// bindingConfig parses a configuration with keys for a.example and
// b.example (or only a.example, one), the [sign] lines given, and rules
// for both; key files are not read.
func bindingConfig(t *testing.T, sign string, domains ...string) *config.Config {
	t.Helper()
	doc := "[sign]\n" + sign + "\n"
	for i, d := range domains {
		name := fmt.Sprintf("k%d", i)
		from := "*@" + d
		if d == "%" {
			from = "*"
		}
		doc += "[keys." + name + "]\ndomain = \"" + d + "\"\nselector = \"s\"\nfile = \"/nonexistent/" + name + ".pem\"\n"
		doc += "[[signing]]\nfrom = \"" + from + "\"\nkeys = [\"" + name + "\"]\n"
	}
	cfg, err := config.Parse("b.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestBindingCheck(t *testing.T) {
	two := []string{"a.example", "b.example"}
	const mapping = `[sign.senders]
"alice@a.example" = ["sales@b.example", "c.example"]
"Bob" = ["bob@b.example"]
"gateway@a.example" = ["*"]
"carol@xn--bcher-kva.example" = ["xn--bcher-kva.example"]
`
	for _, tt := range []struct {
		name        string
		sign        string
		domains     []string
		login, from string
		want        string // "" allowed, else the Mismatch's label
	}{
		{"own domain", "", two, "alice@a.example", "alice@a.example", ""},
		{"another address of the own domain", "", two, "alice@a.example", "ceo@a.example", ""},
		{"a subdomain", "", two, "alice@a.example", "news@x.a.example", ""},
		{"case of the domains", "", two, "alice@A.Example", "Alice@NEWS.A.EXAMPLE", ""},
		{"a trailing dot", "", two, "alice@a.example.", "alice@a.example.", ""},
		{"another tenant", "", two, "alice@a.example", "ceo@b.example", ReasonNotAllowed},
		{"a parent domain", "", two, "alice@x.a.example", "ceo@a.example", ReasonNotAllowed},
		{"a suffix that is no subdomain", "", two, "alice@a.example", "ceo@evila.example", ReasonNotAllowed},
		{"a domain that ends like it", "", two, "alice@a.example", "ceo@a.example.evil", ReasonNotAllowed},
		{"mapped address", mapping, two, "alice@a.example", "Sales@B.example", ""},
		{"mapped address, another local part", mapping, two, "alice@a.example", "ceo@b.example", ReasonNotAllowed},
		{"mapped domain", mapping, two, "alice@a.example", "x@c.example", ""},
		{"mapped domain covers subdomains", mapping, two, "alice@a.example", "x@y.c.example", ""},
		{"mapping keeps the own domain", mapping, two, "alice@a.example", "x@a.example", ""},
		{"login matched without case", mapping, two, "ALICE@a.example", "sales@b.example", ""},
		{"star", mapping, two, "gateway@a.example", "anyone@b.example", ""},
		{"bare login, one signing domain", "", []string{"a.example"}, "alice", "ceo@b.example", ""},
		{"bare login, several signing domains", "", two, "alice", "alice@a.example", ReasonLoginWithoutDomain},
		{"bare login, a '%' key", "", []string{"%"}, "alice", "alice@a.example", ReasonLoginWithoutDomain},
		{"empty login, several signing domains", "", two, "", "alice@a.example", ReasonLoginWithoutDomain},
		{"bare login mapped", mapping, two, "bob", "bob@b.example", ""},
		{"bare login mapped, something else", mapping, two, "bob", "ceo@b.example", ReasonNotAllowed},
		{"U-label From, A-label login", mapping, two, "carol@xn--bcher-kva.example", "carol@bücher.example", ""},
		{"U-label login, A-label From", "", two, "dave@bücher.example", "dave@xn--bcher-kva.example", ""},
		{"U-label From, A-label mapping", mapping, two, "carol@xn--bcher-kva.example", "x@sub.BÜCHER.example", ""},
		{"off", `sender_binding = "off"`, two, "alice@a.example", "ceo@b.example", ""},
		{"off, bare login", `sender_binding = "off"`, two, "alice", "ceo@b.example", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sign := tt.sign
			mapping := ""
			if i := strings.Index(sign, "[sign.senders]"); i >= 0 {
				sign, mapping = sign[:i], sign[i:]
			}
			cfg := bindingConfig(t, sign, tt.domains...)
			if mapping != "" {
				c2, err := config.Parse("b.toml", []byte(mapping))
				if err != nil {
					t.Fatal(err)
				}
				cfg.Sign.Senders = c2.Sign.Senders
			}
			m, err := NewBinding(cfg).Check(context.Background(), tt.login, tt.from)
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if m != nil {
				got = m.Label()
			}
			if got != tt.want {
				t.Fatalf("Check(%q, %q) = %+v, want %q", tt.login, tt.from, m, tt.want)
			}
			if m != nil && (m.Login != tt.login || m.From != tt.from || !strings.Contains(m.Reason, tt.from)) {
				t.Errorf("mismatch %+v does not name the login and the From", m)
			}
		})
	}
}

// The reasons say what the login may use and where to allow more.
func TestBindingReasons(t *testing.T) {
	cfg := bindingConfig(t, "", "a.example", "b.example")
	cfg.Sign.Senders = map[string][]string{"bob": {"bob@b.example"}, "alice@a.example": {"sales@b.example"}}
	for _, tt := range []struct{ login, want string }{
		{"carol@a.example", "login carol@a.example may have mail signed for a.example and its subdomains only, not for From ceo@b.example; [sign.senders] can allow more"},
		{"alice@a.example", "login alice@a.example may have mail signed for a.example, its subdomains and what [sign.senders] lists for it, not for From ceo@b.example"},
		{"bob", `login "bob" may have mail signed only for what [sign.senders] lists for it, not for From ceo@b.example`},
		{"carol", `login "carol" has no domain part and nothing in [sign.senders] maps it, while the signing rules sign for several domains (a.example, b.example): not signing From ceo@b.example; map the login in [sign.senders] to the addresses or domains it may use`},
	} {
		m, err := NewBinding(cfg).Check(context.Background(), tt.login, "ceo@b.example")
		if err != nil || m == nil {
			t.Fatalf("%s: %v, %v", tt.login, m, err)
		}
		if m.Reason != tt.want {
			t.Errorf("%s:\n got %s\nwant %s", tt.login, m.Reason, tt.want)
		}
	}
	m, _ := NewBinding(bindingConfig(t, "", "%")).Check(context.Background(), "carol", "ceo@b.example")
	if m == nil || !strings.Contains(m.Reason, "a domain per From domain ('%' keys)") {
		t.Errorf("'%%' keys: %+v", m)
	}
}

// fakeSource is a second source of bindings, as a database would be.
type fakeSource struct {
	allowed map[string][]string
	err     error
	calls   []string
}

func (f *fakeSource) Senders(ctx context.Context, login string) ([]string, bool, error) {
	f.calls = append(f.calls, login)
	if f.err != nil {
		return nil, false, f.err
	}
	a, ok := f.allowed[login]
	return a, ok, nil
}

func (f *fakeSource) String() string { return "the database" }

// A second source is asked only when the login's own domain and
// [sign.senders] do not allow the From; what it allows counts; when it
// fails, Check fails (the milter applies actions.sign_error), and does
// not fall back to signing or to a refusal.
func TestBindingSources(t *testing.T) {
	cfg := bindingConfig(t, "", "a.example", "b.example")
	cfg.Sign.Senders = map[string][]string{"alice@a.example": {"sales@b.example"}}
	db := &fakeSource{allowed: map[string][]string{"alice@a.example": {"b.example"}}}
	b := NewBinding(cfg, db)
	ctx := context.Background()
	for _, from := range []string{"alice@a.example", "sales@b.example"} {
		if m, err := b.Check(ctx, "alice@a.example", from); m != nil || err != nil {
			t.Fatalf("%s: %+v, %v", from, m, err)
		}
	}
	if len(db.calls) != 0 {
		t.Errorf("the database was asked %q, though the TOML answered", db.calls)
	}
	if m, err := b.Check(ctx, "alice@a.example", "ceo@b.example"); m != nil || err != nil {
		t.Fatalf("the database's mapping: %+v, %v", m, err)
	}
	if !reflect.DeepEqual(db.calls, []string{"alice@a.example"}) {
		t.Errorf("database calls %q", db.calls)
	}
	m, err := b.Check(ctx, "bob@a.example", "ceo@b.example")
	if err != nil || m == nil || !strings.Contains(m.Reason, "[sign.senders] or the database can allow more") {
		t.Errorf("not mapped anywhere: %+v, %v", m, err)
	}

	down := errors.New("connection refused")
	b = NewBinding(cfg, &fakeSource{err: down})
	if m, err := b.Check(ctx, "alice@a.example", "alice@a.example"); m != nil || err != nil {
		t.Errorf("the own domain needs no source: %+v, %v", m, err)
	}
	m, err = b.Check(ctx, "alice@a.example", "ceo@b.example")
	if m != nil || !errors.Is(err, down) || !strings.Contains(err.Error(), `the database could not say which From domains login "alice@a.example" may use`) {
		t.Errorf("a failing source: %+v, %v", m, err)
	}
}

func TestSigningDomains(t *testing.T) {
	for _, tt := range []struct {
		domains []string
		want    []string
		perFrom bool
	}{
		{nil, nil, false},
		{[]string{"b.example", "a.example"}, []string{"a.example", "b.example"}, false},
		{[]string{"a.example", "%"}, []string{"a.example"}, true},
	} {
		cfg := bindingConfig(t, "", tt.domains...)
		if len(cfg.Signing) > 0 {
			// A second rule with the same key: its domain counts once.
			cfg.Signing = append(cfg.Signing, &config.SigningRule{From: "x@y.example", Keys: []string{"k0"}})
		}
		got, perFrom := SigningDomains(cfg)
		if !reflect.DeepEqual(got, tt.want) || perFrom != tt.perFrom {
			t.Errorf("%q: %q %v, want %q %v", tt.domains, got, perFrom, tt.want, tt.perFrom)
		}
	}
}

// The common case, a login's own domain, asks no source and costs a
// few comparisons; a mapped address one map lookup more.
func BenchmarkBindingCheck(b *testing.B) {
	cfg, err := config.Parse("b.toml", []byte(`[sign.senders]
"alice@a.example" = ["sales@b.example"]
[keys.a]
domain = "a.example"
selector = "s"
file = "/nonexistent/a.pem"
[keys.b]
domain = "b.example"
selector = "s"
file = "/nonexistent/b.pem"
[[signing]]
from = "*@a.example"
keys = ["a"]
[[signing]]
from = "*@b.example"
keys = ["b"]
`))
	if err != nil {
		b.Fatal(err)
	}
	bd := NewBinding(cfg)
	ctx := context.Background()
	for _, from := range []string{"alice@a.example", "sales@b.example"} {
		b.Run(from, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if m, err := bd.Check(ctx, "alice@a.example", from); m != nil || err != nil {
					b.Fatal(m, err)
				}
			}
		})
	}
}
