package opendkim

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Disposition is what became of an OpenDKIM setting.
type Disposition uint8

const (
	Translated   Disposition = iota // written into the dkimmilter configuration
	NotNeeded                       // dkimmilter, its unit or Postfix does it; nothing to write
	NotSupported                    // dkimmilter has no equivalent
)

func (d Disposition) String() string {
	return [...]string{"translated", "not needed", "NOT SUPPORTED"}[d]
}

// Note is the disposition of one setting found in opendkim.conf.
type Note struct {
	Setting
	Disposition Disposition
	Text        string   // to what / why / what it changes
	Details     []string // per table line: what was left out and why
	// Affects is set when something left untranslated decides which mail
	// is signed, how, or what happens to inbound mail.
	Affects bool
}

// Options are the parts of the environment the translation depends on.
type Options struct {
	// Hostname answers AuthservID HOSTNAME; nil means os.Hostname.
	Hostname func() (string, error)
	// Root, when set, is the directory that stands for / when files are
	// read: opendkim.conf, what it includes and the tables it names, as
	// copied from another host. Paths written into the result (key files)
	// and shown in notes stay as OpenDKIM had them.
	Root string
}

// Result is a translated configuration.
type Result struct {
	Source string // the opendkim.conf read
	TOML   []byte
	Notes  []Note // one per setting found, in file order
}

// Unsupported returns the notes of settings whose absence changes mail.
func (r *Result) Unsupported() []Note {
	var out []Note
	for _, n := range r.Notes {
		if n.Affects {
			out = append(out, n)
		}
	}
	return out
}

// Translate reads the opendkim.conf at path and everything it names, and
// returns the dkimmilter configuration that does the same. An error means
// the OpenDKIM configuration could not be read (a missing file, an Include
// loop); settings it cannot translate are reported in the Result's notes.
func Translate(path string, opts Options) (*Result, error) {
	if opts.Hostname == nil {
		opts.Hostname = os.Hostname
	}
	abs := path
	if opts.Root == "" {
		var err error
		if abs, err = filepath.Abs(path); err != nil {
			return nil, err
		}
	} else if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("%s: with a root directory, name opendkim.conf by its absolute path on the host it comes from", path)
	}
	settings, err := readConf(opts.Root, abs)
	if err != nil {
		return nil, err
	}
	t := &translator{opts: opts, dir: filepath.Dir(abs), last: map[string]int{}, out: newOutput()}
	t.notes = make([]*Note, len(settings))
	for i, s := range settings {
		t.notes[i] = &Note{Setting: s}
		if options[s.Name].kind == handled {
			t.last[s.Name] = i
		}
	}
	t.translate()
	res := &Result{Source: abs}
	for _, n := range t.notes {
		res.Notes = append(res.Notes, *n)
	}
	res.TOML = t.out.render(abs, res.Notes)
	return res, nil
}

type translator struct {
	opts  Options
	dir   string // of opendkim.conf: relative paths are resolved against it
	notes []*Note
	last  map[string]int // handled setting name → index of its last occurrence
	out   *output
}

// get returns the setting name takes effect with (the last one), or nil.
func (t *translator) get(name string) *Note {
	i, ok := t.last[name]
	if !ok {
		return nil
	}
	return t.notes[i]
}

func (n *Note) set(d Disposition, format string, args ...any) {
	n.Disposition = d
	n.Text = fmt.Sprintf(format, args...)
}

// unsupported marks a setting not supported and changing mail.
func (n *Note) unsupported(format string, args ...any) {
	n.set(NotSupported, format, args...)
	n.Affects = true
}

// detail adds a line about one table entry; affects marks the setting.
func (n *Note) detail(affects bool, format string, args ...any) {
	n.Details = append(n.Details, fmt.Sprintf(format, args...))
	if affects {
		n.Affects = true
	}
}

func (t *translator) translate() {
	// Repeated settings: the last one counts.
	for i, n := range t.notes {
		if j, ok := t.last[n.Name]; ok && j != i {
			n.set(NotNeeded, "set again at %s, which is the one used", t.notes[j].Where())
		}
	}
	for _, n := range t.notes {
		if n.Name == "Include" {
			n.set(Translated, "read (its settings follow)")
			continue
		}
		o, known := options[n.Name]
		switch {
		case !known:
			n.unsupported("unknown to this import (OpenDKIM rejects unknown names too): check what it does; it may change how mail is handled")
		case o.kind == notNeeded:
			n.set(NotNeeded, "%s", o.why)
		case o.kind == cosmetic:
			n.set(NotSupported, "%s", o.why)
		case o.kind == affects:
			n.unsupported("%s", o.why)
		case o.kind == ifTrue:
			if on, ok := boolValue(n.Value); ok && !on {
				n.set(NotNeeded, "off, as in dkimmilter")
			} else {
				n.unsupported("%s", o.why)
			}
		}
	}
	t.mode()
	t.socket()
	t.signingSetup()
	t.hosts()
	t.signatureSettings()
	t.verifySettings()
	t.actions()
}

func (t *translator) mode() {
	o := t.out
	o.mode = "sv"
	n := t.get("Mode")
	if n == nil {
		o.modeComment = "OpenDKIM's default Mode: sign mail from internal hosts, verify the rest."
		return
	}
	m := ""
	if strings.ContainsAny(n.Value, "sS") {
		m += "s"
	}
	if strings.ContainsAny(n.Value, "vV") {
		m += "v"
	}
	if m == "" || strings.Trim(strings.ToLower(n.Value), "sv") != "" {
		n.unsupported("%q is not a mode OpenDKIM knows (s, v or sv); mode left at \"sv\"", n.Value)
		return
	}
	o.mode = m
	n.set(Translated, "mode = %q", m)
}

// otherPort is the port dkimmilter listens on beside OpenDKIM's inet
// socket (conventionally 8891), as the README's side-by-side example.
// OpenDMARC's sample configuration uses it too: the listen comment says so.
const otherPort = 8893

func (t *translator) socket() {
	o := t.out
	o.listen = "unix:/var/spool/postfix/dkimmilter/dkimmilter.sock"
	milter := "unix:dkimmilter/dkimmilter.sock"
	n := t.get("Socket")
	old := ""
	switch {
	case n == nil:
		old = "no Socket (OpenDKIM refuses to start without one)"
	case strings.HasPrefix(n.Value, "inet:") || strings.HasPrefix(n.Value, "inet6:"):
		_, spec, _ := strings.Cut(n.Value, ":")
		port, host, _ := strings.Cut(spec, "@")
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
		p := otherPort
		if port == strconv.Itoa(p) {
			p++
		}
		all := ""
		if host == "" || host == "0.0.0.0" || host == "::" {
			all = " OpenDKIM listened on every interface; dkimmilter listens on 127.0.0.1: if Postfix runs on another host, write this host's address."
			host = "127.0.0.1"
		}
		hp := host
		if strings.Contains(host, ":") {
			hp = "[" + host + "]"
		}
		o.listen = fmt.Sprintf("inet:%s:%d", hp, p)
		milter = o.listen
		old = n.Value + "." + all + fmt.Sprintf(" (OpenDMARC's sample configuration uses port %d too: if OpenDMARC listens there, pick another port.)", otherPort)
	default:
		old = n.Value
	}
	o.listenComment = []string{
		"OpenDKIM's socket was " + old,
		"dkimmilter listens elsewhere, so that both can run side by side while you switch.",
		"Then, in Postfix's main.cf, put dkimmilter in OpenDKIM's place:",
		"  smtpd_milters = " + milter + " (and the same in non_smtpd_milters)",
		"and `postfix reload`; stop OpenDKIM once mail is signed.",
	}
	if n != nil {
		n.set(Translated, "listen = %q, beside OpenDKIM's socket (see the comment at listen)", o.listen)
	}
}

// signatureSettings translates what decides the signatures' tags.
func (t *translator) signatureSettings() {
	o := t.out
	o.canon = "simple/simple"
	o.canonComment = "OpenDKIM's default, simple/simple (dkimmilter's own default is relaxed/relaxed, which survives more relays)."
	if n := t.get("Canonicalization"); n != nil {
		h, b, ok := strings.Cut(strings.ToLower(n.Value), "/")
		if !ok {
			b = "simple"
		}
		if (h == "simple" || h == "relaxed") && (b == "simple" || b == "relaxed") {
			o.canon = h + "/" + b
			o.canonComment = ""
			n.set(Translated, "sign.canonicalization = %q", o.canon)
		} else {
			n.unsupported("%q is not a canonicalization; sign.canonicalization left at OpenDKIM's default %q", n.Value, o.canon)
		}
	}

	o.expire = "0"
	o.expireComment = "OpenDKIM adds no x= without SignatureTTL."
	if n := t.get("SignatureTTL"); n != nil {
		secs, err := strconv.ParseUint(n.Value, 10, 32)
		if err != nil {
			n.unsupported("%q is not a number of seconds; sign.expire left at \"0\" (no x=)", n.Value)
		} else {
			o.expire = duration(secs)
			o.expireComment = ""
			n.set(Translated, "sign.expire = %q", o.expire)
		}
	}

	if n := t.get("SignatureAlgorithm"); n != nil {
		switch strings.ToLower(n.Value) {
		case "rsa-sha256", "ed25519-sha256":
			n.set(NotNeeded, "dkimmilter takes the algorithm from each key's type (RSA keys sign rsa-sha256, Ed25519 keys ed25519-sha256)")
		case "rsa-sha1":
			n.unsupported("dkimmilter signs with rsa-sha256, never rsa-sha1 (RFC 8301 §3.1 forbids it): receivers see a different a= tag")
		default:
			n.unsupported("%q is not an algorithm OpenDKIM knows", n.Value)
		}
	}
	if n := t.get("SenderHeaders"); n != nil {
		d := t.dataset(n)
		if d != nil && len(d.entries) == 1 && strings.EqualFold(d.entries[0].key, "From") {
			n.set(NotNeeded, "From is where dkimmilter takes the signing domain from, too")
		} else if d != nil {
			n.unsupported("the signing domain is taken from the From field only, never from other header fields")
		}
	}
	t.headers()
}

// duration writes seconds as a dkimmilter duration, in days when whole.
func duration(secs uint64) string {
	if secs == 0 {
		return "0"
	}
	if secs%86400 == 0 {
		return fmt.Sprintf("%dd", secs/86400)
	}
	s := ""
	if h := secs / 3600; h > 0 {
		s += fmt.Sprintf("%dh", h)
	}
	if m := secs % 3600 / 60; m > 0 {
		s += fmt.Sprintf("%dm", m)
	}
	if r := secs % 60; r > 0 {
		s += fmt.Sprintf("%ds", r)
	}
	return s
}

func (t *translator) verifySettings() {
	o := t.out
	o.minRSA = 1024
	if n := t.get("MinimumKeyBits"); n != nil {
		v, err := strconv.Atoi(n.Value)
		switch {
		case err != nil || v < 0:
			n.unsupported("%q is not a number of bits; verify.min_rsa_bits left at 1024", n.Value)
		case v == 0:
			n.set(Translated, "verify.min_rsa_bits = 1024: OpenDKIM's 0 keeps its 1024-bit minimum (it passes 0 on only when not zero)")
		case v < 1024:
			n.set(Translated, "verify.min_rsa_bits = 1024: RFC 8301 §3.2 forbids less; signatures by %d- to 1023-bit RSA keys now get dkim=policy (actions.policy) where OpenDKIM passed them", v)
		case v > 8192:
			o.minRSA = 8192
			n.set(Translated, "verify.min_rsa_bits = 8192, dkimmilter's highest")
		default:
			o.minRSA = v
			n.set(Translated, "verify.min_rsa_bits = %d", v)
		}
	}
	o.maxSigs = 3
	o.maxSigsComment = "OpenDKIM's default MaximumSignaturesToVerify; later signatures get dkim=neutral."
	if n := t.get("MaximumSignaturesToVerify"); n != nil {
		v, err := strconv.Atoi(n.Value)
		switch {
		case err != nil || v < 0:
			n.unsupported("%q is not a number; verify.max_signatures left at 3", n.Value)
		case v == 0:
			n.unsupported("0 makes OpenDKIM verify only first-party and TrustSignaturesFrom signatures; dkimmilter verifies up to verify.max_signatures (left at 3)")
		case v > 64:
			o.maxSigs, o.maxSigsComment = 64, ""
			n.set(Translated, "verify.max_signatures = 64, dkimmilter's highest")
		default:
			o.maxSigs, o.maxSigsComment = v, ""
			n.set(Translated, "verify.max_signatures = %d", v)
		}
	}

	if n := t.get("Nameservers"); n != nil {
		for _, ns := range strings.Split(n.Value, ",") {
			ns = strings.TrimSpace(ns)
			if _, err := netip.ParseAddr(ns); err != nil {
				n.detail(false, "%q is not an IP address, which dkimmilter needs (it does not look name servers up by name); left out", ns)
				continue
			}
			o.nameservers = append(o.nameservers, ns)
		}
		n.set(Translated, "dns.nameservers = %s", list(o.nameservers))
	}
	o.timeout = "5s"
	if n := t.get("DNSTimeout"); n != nil {
		v, err := strconv.Atoi(n.Value)
		switch {
		case err != nil || v < 0:
			n.unsupported("%q is not a number of seconds; dns.timeout left at \"5s\"", n.Value)
		case v == 0 || v > 60:
			o.timeout = "60s"
			n.set(Translated, "dns.timeout = \"60s\", dkimmilter's longest (OpenDKIM's 0 waits forever); keep it below Postfix's milter_command_timeout")
		default:
			o.timeout = fmt.Sprintf("%ds", v)
			n.set(Translated, "dns.timeout = %q", o.timeout)
		}
	}

	o.maxHeaderBytes = 65536
	o.maxHeaderComment = "OpenDKIM's MaximumHeaders default: a longer header block gets actions.security when verifying, actions.sign_error when signing (OpenDKIM applied On-Security to both; dkimmilter's own default is 1048576)."
	if n := t.get("MaximumHeaders"); n != nil {
		v, err := strconv.Atoi(n.Value)
		switch {
		case err != nil || v < 0:
			n.unsupported("%q is not a number of bytes; limits.max_header_bytes left at 65536", n.Value)
		case v == 0 || v > 1<<28:
			o.maxHeaderBytes, o.maxHeaderComment = 1<<28, ""
			n.set(Translated, "limits.max_header_bytes = %d, dkimmilter's highest (OpenDKIM's 0 is no limit)", 1<<28)
		case v < 16384:
			o.maxHeaderBytes, o.maxHeaderComment = 16384, ""
			n.set(Translated, "limits.max_header_bytes = 16384, dkimmilter's lowest")
		default:
			o.maxHeaderBytes, o.maxHeaderComment = v, ""
			n.set(Translated, "limits.max_header_bytes = %d", v)
		}
	}

	if n := t.get("AuthservID"); n != nil {
		if n.Value == "HOSTNAME" {
			h, err := t.opts.Hostname()
			if err != nil || h == "" {
				n.unsupported("this host's name is unknown (%v); write authserv_id yourself", err)
			} else {
				o.authservID = h
				n.set(Translated, "authserv_id = %q, this host's name", h)
			}
		} else {
			o.authservID = n.Value
			n.set(Translated, "authserv_id = %q", n.Value)
		}
	} else {
		o.authservComment = "OpenDKIM's default: Postfix's myhostname (the j macro). Without it, OpenDKIM wrote unknown-host, dkimmilter writes this host's name."
	}
}

// actionWords reads OpenDKIM's On-* values (dkimf_values).
var actionWords = map[string]string{
	"a": "accept", "accept": "accept", "d": "discard", "discard": "discard",
	"q": "quarantine", "quarantine": "quarantine", "r": "reject", "reject": "reject",
	"t": "tempfail", "tempfail": "tempfail",
}

// actionKeys maps OpenDKIM's On-* settings to [actions] keys, in the order
// they are written, with OpenDKIM's defaults.
var actionKeys = []struct{ on, key, def string }{
	{"On-SignatureError", "sign_error", "reject"},
	{"On-DNSError", "dns_error", "tempfail"},
	{"On-Security", "security", "tempfail"},
	{"On-BadSignature", "bad_signature", "accept"},
	{"On-KeyNotFound", "key_not_found", "accept"},
	{"On-NoSignature", "no_signature", "accept"},
	{"On-InternalError", "internal_error", "tempfail"},
}

func (t *translator) actions() {
	o := t.out
	def := ""
	if n := t.get("On-Default"); n != nil {
		if a, ok := actionWords[strings.ToLower(n.Value)]; ok {
			def = a
			n.set(Translated, "every [actions] key without its own On- setting = %q", a)
		} else {
			n.unsupported("%q is not an action (accept, discard, quarantine, reject, tempfail)", n.Value)
		}
	}
	for _, ak := range actionKeys {
		v, comment := ak.def, "OpenDKIM's default."
		if def != "" {
			v, comment = def, "From On-Default."
		}
		if ak.on == "On-SignatureError" && def == "" {
			v = "tempfail"
			comment = "OpenDKIM's On-SignatureError default is reject, but it covers only a signature that cannot be computed (a key under MinimumKeyBits); a key that cannot be loaded, what sign_error mostly meets, OpenDKIM tempfailed."
		}
		if ak.on == "On-DNSError" && def == "" {
			v = "accept"
			comment = "OpenDKIM documents tempfail, but 2.11 (what Debian and others ship) accepts mail whose key lookup failed, without Authentication-Results; accept keeps that, with dkim=temperror stamped."
		}
		if n := t.get(ak.on); n != nil {
			if a, ok := actionWords[strings.ToLower(n.Value)]; ok {
				v, comment = a, ""
				n.set(Translated, "actions.%s = %q", ak.key, a)
				if ak.on == "On-DNSError" && a != "accept" {
					comment = "OpenDKIM 2.11 accepted such mail anyway (a bug); dkimmilter does what was asked."
				}
			} else {
				n.unsupported("%q is not an action (accept, discard, quarantine, reject, tempfail); actions.%s left at %q", n.Value, ak.key, v)
			}
		}
		if v == "quarantine" {
			// Seen side by side: Debian's OpenDKIM 2.11 negotiates no
			// SMFIF_QUARANTINE with the MTA (with Quarantine yes too),
			// so its quarantine came to an accept. Mail that was
			// delivered will be held after the switch.
			comment = strings.TrimSpace(comment + " OpenDKIM 2.11 as Debian ships it never asked Postfix for the right to quarantine, and delivered such mail (without Authentication-Results); dkimmilter holds it in Postfix's hold queue (postqueue -p lists it, postsuper -H releases it).")
		}
		if ak.key == "bad_signature" && v != "accept" {
			// Seen side by side with Debian's OpenDKIM 2.11: an expired
			// signature gets dkim=permerror and no On- action at all,
			// where dkimmilter (RFC 6376 §6.1.1: PERMFAIL) applies
			// bad_signature. The admin should know before switching.
			// A broken rsa-sha1 signature is dkim=fail in both (both
			// verify it; RFC 8301 §3.1 only forbids counting one that
			// verifies as valid), so it gets this action as under
			// On-BadSignature; only an intact one is policy.
			comment = strings.TrimSpace(comment + " " + fmt.Sprintf("An expired signature (x= in the past) gets %q too; OpenDKIM 2.11 stamped it dkim=permerror and delivered the mail. A broken rsa-sha1 signature is dkim=fail and gets %q, as it did under OpenDKIM; an intact one is policy (below).", v, v))
		}
		o.actions = append(o.actions, kv{ak.key, v, comment})
		if ak.key == "bad_signature" {
			// dkim=policy covers rsa-sha1 that verifies, RSA keys under
			// MinimumKeyBits, content after l= and an unsigned From above
			// the signed one. Run against OpenDKIM 2.11 with
			// On-BadSignature reject: it passes intact rsa-sha1
			// signatures and gives a good signature by an RSA key under
			// MinimumKeyBits dkim=policy, accepting the message whatever
			// On-BadSignature says. (A broken signature
			// by such a key, or a broken rsa-sha1 one, is dkim=fail in
			// both and gets On-BadSignature, bad_signature here.)
			// accept delivers all of that mail as OpenDKIM did.
			c := "OpenDKIM passed l= with content after it and an unsigned From above the signed one, which dkimmilter gives dkim=policy; " + policyWords + "; accept delivers them as OpenDKIM did."
			if v != "accept" {
				c += fmt.Sprintf(" %q here would refuse that mail.", v)
			}
			o.actions = append(o.actions, kv{"policy", "accept", c})
		}
	}
}

// policyWords is what OpenDKIM 2.11 was seen to do with the signatures
// dkimmilter gives dkim=policy; the README's switching table says it in
// the same words.
const policyWords = "OpenDKIM 2.11 passes intact rsa-sha1 signatures and gives a good signature by an RSA key under MinimumKeyBits dkim=policy, accepting the message whatever On-BadSignature says"

// list renders strings for a note: ["a", "b"].
func list(l []string) string {
	q := make([]string, len(l))
	for i, s := range l {
		q[i] = strconv.Quote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// dataset opens the data set of a setting, marking the setting not
// supported when it cannot be read. It returns nil then.
func (t *translator) dataset(n *Note) *dataset {
	d, err := openDataset(n.Setting, t.opts.Root, t.dir)
	if err != nil {
		n.unsupported("%v", err)
		return nil
	}
	if d.relative {
		n.detail(false, "%s is relative: OpenDKIM read it from its working directory, the import from opendkim.conf's, %s", strings.TrimPrefix(strings.TrimPrefix(n.Value, "refile:"), "file:"), t.dir)
	}
	return d
}
