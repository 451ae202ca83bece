package opendkim

import "strings"

// kind is what becomes of an OpenDKIM setting that the translator does not
// handle with code of its own.
type kind uint8

const (
	handled   kind = iota // translated by the code in translate.go
	notNeeded             // dkimmilter, its systemd unit or Postfix does it
	cosmetic              // not supported, and mail is signed and handled the same
	affects               // not supported, and it decides signing or inbound handling
	ifTrue                // not supported when on; off is dkimmilter's behaviour too
)

type option struct {
	kind kind
	why  string
}

const (
	unitJob = "the systemd unit's job (dkimmilter runs as its own user, in the foreground, with systemd restarting it)"
	logJob  = "dkimmilter logs one line per message to stderr, which systemd passes to the journal and syslog"
)

// options lists OpenDKIM 2.11's parameters by their spelling in
// opendkim.conf(5). Names are matched case-insensitively.
var options = map[string]option{
	// Translated in translate.go.
	"Mode": {}, "Socket": {}, "KeyTable": {}, "SigningTable": {}, "MultipleSignatures": {},
	"Domain": {}, "Selector": {}, "KeyFile": {}, "SubDomains": {}, "InternalHosts": {},
	"PeerList": {}, "MTA": {}, "MacroList": {}, "Canonicalization": {}, "SignHeaders": {},
	"OmitHeaders": {}, "OversignHeaders": {}, "SignatureTTL": {}, "MinimumKeyBits": {},
	"MaximumSignaturesToVerify": {}, "AuthservID": {}, "Nameservers": {}, "DNSTimeout": {},
	"SignatureAlgorithm": {}, "SenderHeaders": {}, "MaximumHeaders": {}, "Include": {},
	"On-Default": {}, "On-BadSignature": {}, "On-KeyNotFound": {}, "On-DNSError": {},
	"On-NoSignature": {}, "On-Security": {}, "On-SignatureError": {}, "On-InternalError": {},

	// Process and logging: done elsewhere.
	"UserID":              {notNeeded, unitJob},
	"UMask":               {notNeeded, "dkimmilter sets its socket's mode itself (socket_mode, default \"0660\")"},
	"PidFile":             {notNeeded, unitJob},
	"Background":          {notNeeded, unitJob},
	"AutoRestart":         {notNeeded, unitJob},
	"AutoRestartCount":    {notNeeded, unitJob},
	"AutoRestartRate":     {notNeeded, unitJob},
	"ChangeRootDirectory": {notNeeded, "the systemd unit sandboxes dkimmilter (ProtectSystem=strict and more)"},
	"BaseDirectory":       {notNeeded, "dkimmilter resolves relative key paths against its configuration file's directory"},
	"EnableCoredumps":     {notNeeded, unitJob},
	"MilterDebug":         {notNeeded, "dkimmilter serve -log-level debug shows each decision"},
	"DisableCryptoInit":   {notNeeded, "Go's crypto needs no initialisation"},
	"TemporaryDirectory":  {notNeeded, "dkimmilter writes no temporary files"},
	"KeepTemporaryFiles":  {notNeeded, "dkimmilter writes no temporary files"},
	"SoftStart":           {notNeeded, "dkimmilter has no LDAP or SQL back ends to wait for"},
	"QueryCache":          {notNeeded, "dkimmilter always caches key records for their TTL"},
	"Syslog":              {notNeeded, logJob},
	"SyslogFacility":      {notNeeded, logJob + " (facility mail)"},
	"SyslogName":          {notNeeded, logJob},
	"SyslogSuccess":       {notNeeded, logJob + ", successes included"},
	"LogWhy":              {notNeeded, "dkimmilter's log line says why a message was signed or verified; -log-level debug says more"},
	"LogResults":          {notNeeded, "dkimmilter's log line has every signature's result"},
	"RequireSafeKeys":     {notNeeded, "dkimmilter always refuses key files that others can read or write (stricter: it cannot be turned off)"},
	"ExternalIgnoreList":  {notNeeded, "it only silences OpenDKIM's \"external host attempted to send as\" log line, which dkimmilter does not write"},
	"AlwaysAddARHeader":   {notNeeded, "dkimmilter always adds Authentication-Results, dkim=none for unsigned mail"},
	"AllowSHA1Only":       {notNeeded, "Go always has SHA-256"},
	"ResolverTracing":     {notNeeded, "-log-level debug"},
	"DNSConnect":          {notNeeded, "dkimmilter asks over UDP and repeats over TCP when an answer is truncated"},
	"StatisticsName":      {notNeeded, "dkimmilter serves Prometheus metrics instead (metrics_listen)"},
	"Statistics":          {notNeeded, "dkimmilter serves Prometheus metrics instead (metrics_listen)"},
	"StatisticsPrefix":    {notNeeded, "dkimmilter serves Prometheus metrics instead (metrics_listen)"},
	"TrustAnchorFile":     {notNeeded, "DNSSEC is the resolver's job: point dns.nameservers at a validating resolver (unbound, systemd-resolved with DNSSEC=yes)"},

	// Not supported, but mail is signed and handled the same.
	"SoftwareHeader":         {cosmetic, "the DKIM-Filter header field is not added; signatures and results are the same"},
	"X-Header":               {cosmetic, "the DKIM-Filter header field is not added; signatures and results are the same"},
	"AuthservIDWithJobID":    {cosmetic, "Authentication-Results carries the authserv-id without \"/queue-id\" (OpenDKIM's form is invalid under RFC 8601 anyway)"},
	"NoHeaderB":              {cosmetic, "Authentication-Results keeps header.b, which helps telling signatures apart"},
	"SendReports":            {cosmetic, "no RFC 6651 failure reports are sent; signing and verification are the same"},
	"ReportAddress":          {cosmetic, "no RFC 6651 failure reports are sent"},
	"ReportBccAddress":       {cosmetic, "no RFC 6651 failure reports are sent"},
	"MTACommand":             {cosmetic, "no RFC 6651 failure reports are sent"},
	"SMTPURI":                {cosmetic, "no RFC 6651 failure reports are sent"},
	"DiagnosticDirectory":    {cosmetic, "no diagnostic dumps are written; dkimmilter verify FILE explains a saved message"},
	"ResolverConfiguration":  {cosmetic, "dkimmilter does not embed unbound; put the resolver settings in the resolver that dns.nameservers names"},
	"StatisticsPolicyScript": {cosmetic, "statistics are Prometheus metrics"},

	// Not supported, and it changes mail.
	"ExemptDomains":                {affects, "mail from these domains would be signed or verified by dkimmilter, where OpenDKIM passed it untouched"},
	"DontSignMailTo":               {affects, "mail to these recipients would be signed"},
	"BodyLengthDB":                 {affects, "signatures have no l= tag (which is safer: l= lets anyone append to the body)"},
	"MaximumSignedBytes":           {affects, "the whole body is signed, with no l= tag"},
	"MustBeSigned":                 {affects, "signatures that leave these fields unsigned are not failed for it"},
	"RedirectFailuresTo":           {affects, "mail that fails verification is delivered to its recipients, not redirected"},
	"SetupPolicyScript":            {affects, "Lua scripts are not run: signing follows the tables only"},
	"ScreenPolicyScript":           {affects, "Lua scripts are not run: every signature is verified"},
	"FinalPolicyScript":            {affects, "Lua scripts are not run: the actions follow [actions] only"},
	"LuaOnlySigning":               {affects, "Lua scripts are not run"},
	"TrustSignaturesFrom":          {affects, "every signature is verified (up to verify.max_signatures), not only these domains'"},
	"Minimum":                      {affects, "signatures with l= are not held to a minimum of the body"},
	"ClockDrift":                   {affects, "dkimmilter allows its own fixed clock drift for t= and x="},
	"SelectCanonicalizationHeader": {affects, "a header field in the message cannot choose the canonicalization"},
	"SenderMacro":                  {affects, "the signing domain comes from the From field only"},
	"DefaultSender":                {affects, "mail without a From field is not signed"},
	"UnprotectedKey":               {affects, "DNSSEC status does not change results: validate in the resolver instead"},
	"BogusKey":                     {affects, "DNSSEC status does not change results: a validating resolver answers SERVFAIL for bogus data, which is dns_error"},
	"TestPublicKeys":               {affects, "keys are looked up in DNS, never read from a file"},
	"TestDNSData":                  {affects, "keys are looked up in DNS, never read from a file"},
	"ReplaceRules":                 {affects, "header text is not rewritten before signing"},
	"ReplaceHeaders":               {affects, "header text is not rewritten before signing"},
	"IdentityHeader":               {affects, "i= comes from [[signing]] identity only"},
	"IdentityHeaderRemove":         {affects, "i= comes from [[signing]] identity only"},
	"ResignAll":                    {affects, "mail is either signed or verified, never re-signed"},
	"ResignMailTo":                 {affects, "mail is either signed or verified, never re-signed"},
	"ConditionalSignatures":        {affects, "no conditional signatures are added"},
	"ATPSDomains":                  {affects, "no ATPS signatures"},
	"ATPSHashAlgorithm":            {affects, "no ATPS signatures"},
	"POPDBFile":                    {affects, "POP-before-SMTP clients are not signed for (use SASL: sign_authenticated)"},
	"RateLimits":                   {affects, "no rate limits"},
	"FlowData":                     {affects, "no rate limits"},
	"FlowDataFactor":               {affects, "no rate limits"},
	"FlowDataTTL":                  {affects, "no rate limits"},
	"ReputationLimits":             {affects, "no reputation checks"},
	"ReputationRatios":             {affects, "no reputation checks"},
	"ReputationLowTime":            {affects, "no reputation checks"},
	"ReputationMinimum":            {affects, "no reputation checks"},
	"ReputationSpamCheck":          {affects, "no reputation checks"},
	"ReputationTimeout":            {affects, "no reputation checks"},
	"ReputationVerbose":            {affects, "no reputation checks"},
	"ReputationCache":              {affects, "no reputation checks"},
	"ReputationCacheTTL":           {affects, "no reputation checks"},
	"ReputationDuplicates":         {affects, "no reputation checks"},
	"ReputationLimitModifiers":     {affects, "no reputation checks"},
	"VBR-Certifiers":               {affects, "no VBR-Info fields are added"},
	"VBR-PurgeFields":              {affects, "VBR-Info fields are not removed"},
	"VBR-TrustedCertifiers":        {affects, "VBR-Info fields are not checked"},
	"VBR-TrustedCertifiersOnly":    {affects, "VBR-Info fields are not checked"},
	"VBR-Type":                     {affects, "no VBR-Info fields are added"},
	"LDAPAuthMechanism":            {affects, "LDAP data sets are not supported"},
	"LDAPAuthName":                 {affects, "LDAP data sets are not supported"},
	"LDAPAuthRealm":                {affects, "LDAP data sets are not supported"},
	"LDAPAuthUser":                 {affects, "LDAP data sets are not supported"},
	"LDAPBindPassword":             {affects, "LDAP data sets are not supported"},
	"LDAPBindUser":                 {affects, "LDAP data sets are not supported"},
	"LDAPDisableCache":             {affects, "LDAP data sets are not supported"},
	"LDAPKeepaliveIdle":            {affects, "LDAP data sets are not supported"},
	"LDAPKeepaliveInterval":        {affects, "LDAP data sets are not supported"},
	"LDAPKeepaliveProbes":          {affects, "LDAP data sets are not supported"},
	"LDAPTimeout":                  {affects, "LDAP data sets are not supported"},
	"LDAPUseTLS":                   {affects, "LDAP data sets are not supported"},
	"LDAPSoftStart":                {affects, "LDAP data sets are not supported"},

	// Booleans that change mail only when on.
	"RemoveOldSignatures":  {ifTrue, "existing DKIM-Signature fields are kept when signing"},
	"RequestReports":       {ifTrue, "signatures have no r=y tag, so receivers send no RFC 6651 failure reports"},
	"Diagnostics":          {ifTrue, "signatures have no z= tag with copies of the signed header fields (verifiers only used it for debugging)"},
	"StrictHeaders":        {ifTrue, "messages with two From fields are verified as usual, not failed as a whole"},
	"RequiredHeaders":      {ifTrue, "messages without exactly one From field are not rejected"},
	"KeepAuthResults":      {ifTrue, "forged Authentication-Results fields carrying this host's authserv-id are removed"},
	"RemoveARAll":          {ifTrue, "only forged DKIM results under this host's authserv-id are removed, not every result"},
	"IgnoreMalformedMail":  {ifTrue, "malformed mail still gets dkim=permerror"},
	"WeakSyntaxChecks":     {ifTrue, "signatures with syntax errors get permerror"},
	"FixCRLF":              {ifTrue, "bare CR and LF are not turned into CRLF before hashing"},
	"DomainKeysCompat":     {ifTrue, "DomainKeys-style key records are not accepted"},
	"Quarantine":           {ifTrue, "failing mail is not quarantined unless an [actions] key says \"quarantine\""},
	"CaptureUnknownErrors": {ifTrue, "internal errors follow actions.internal_error"},
	"RemoveARFrom":         {affects, "Authentication-Results fields of other hosts are kept"},
}

var canonical = func() map[string]string {
	m := make(map[string]string, len(options))
	for n := range options {
		m[strings.ToLower(n)] = n
	}
	// The man page spells it OversignHeaders; the code and some
	// tutorials OverSignHeaders. Both are the same, case-insensitively.
	return m
}()

func canonicalName(s string) string {
	if n, ok := canonical[strings.ToLower(s)]; ok {
		return n
	}
	return s
}
