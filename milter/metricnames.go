package milter

import (
	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/keystore"
	"github.com/dkimmilter/dkimmilter/verifier"
)

// The metrics the daemon exports: name, type and HELP text, the one list
// the exposition (HELP and TYPE lines), the series exported at zero from
// the start, and the README's table of metrics (a test compares them) all
// come from. A counter that appears only after its first event cannot be
// alerted on: increase() of a series that did not exist before the event
// sees nothing.
var metricFamilies = []struct {
	name, typ, help string
	// series lists the label sets known in advance, each exported at
	// zero from the start; nil: the one series without labels.
	series func() []string
	// perKey: one series per configured key, labelled key and domain,
	// set by the background keys check (a key is not "unpublished"
	// before it has been looked at), or per rotating key by rotation
	// (keystore/rotation), with its selectors.
	perKey bool
}{
	{"dkimmilter_messages_total", "counter", "Messages, by what the milter did with them.", decisionSeries, false},
	{"dkimmilter_message_duration_seconds", "histogram", "Time from MAIL FROM to end of message, as the milter saw it, by decision.", decisionSeries, false},
	{"dkimmilter_dkim_results_total", "counter", "Verified DKIM signatures by result and reason class; one result=none per unsigned message.", resultSeries, false},
	{"dkimmilter_sign_errors_total", "counter", "Messages that could not be signed (actions.sign_error applied).", nil, false},
	{"dkimmilter_sender_mismatches_total", "counter", "Messages of authenticated clients not signed because their From is not one the login may use (sign.sender_binding; actions.sender_mismatch applied), by reason.", senderMismatchSeries, false},
	{"dkimmilter_actions_total", "counter", "[actions] answers other than accept.", actionSeries, false},
	{"dkimmilter_forged_authentication_results_removed_total", "counter", "Authentication-Results fields claiming our authserv-id, removed.", nil, false},
	{"dkimmilter_messages_cut_total", "counter", "Messages whose milter connection ended before their end of message was answered (Postfix applied milter_default_action), by cause.", cutSeries, false},
	{"dkimmilter_limits_hit_total", "counter", "[limits] settings reached (max_sessions: a connection had to wait).", limitSeries, false},
	{"dkimmilter_dns_lookups_total", "counter", "Key lookups sent to DNS (cache hits excluded), by outcome.", outcomeSeries, false},
	{"dkimmilter_dns_lookup_duration_seconds", "histogram", "Latency of the key lookups sent to DNS.", nil, false},
	{"dkimmilter_dkim_stale_keys_total", "counter", "Verified signatures whose key record was served stale (dns.max_stale) because the resolver failed.", nil, false},
	{"dkimmilter_sessions", "gauge", "Open milter connections.", nil, false},
	{"dkimmilter_connections_total", "counter", "Milter connections accepted.", nil, false},
	{"dkimmilter_config_reloads_total", "counter", "Configuration reloads (SIGHUP), by outcome.", reloadSeries, false},
	{"dkimmilter_config_last_reload_success_timestamp_seconds", "gauge", "Unix time of the last good reload; 0 before the first.", nil, false},
	{"dkimmilter_key_published", "gauge", "1 if a DKIM record is at the key's DNS name (hourly background keys check, and after each reload).", nil, true},
	{"dkimmilter_key_matches", "gauge", "1 if that record holds this key's public key and is usable.", nil, true},
	{"dkimmilter_key_check_status", "gauge", "The key's keys check status: 0 ok, 1 warning, 2 could not check, 3 failing.", nil, true},
	{"dkimmilter_key_age_seconds", "gauge", "Age of the key file (rotate old keys).", nil, true},
	{"dkimmilter_rotation_state", "gauge", "1 for each selector of a rotating key, labelled with its state: pending (published, not yet served by every authoritative server; never signs), active (signs), retiring (its record stays for mail in flight), revoked (p= empty, to be deleted).", nil, true},
	{"dkimmilter_rotation_key_age_seconds", "gauge", "Age of each key of a rotating key, from when it was made.", nil, true},
	{"dkimmilter_rotation_next_step_seconds", "gauge", "Time until the next step of each key of a rotating key: the next rotation (active), the next check (pending), the revocation (retiring), the deletion (revoked).", nil, true},
	{"dkimmilter_rotation_publish_errors_total", "counter", "Failed publishing of a rotating key's records (add, revoke, delete): the current key goes on signing, and the step is retried with backoff.", nil, true},
	{"dkimmilter_rotation_paused", "gauge", "1 while a rotating key's rotation is paused because a record is not what rotation published (changed by hand).", nil, true},
	{"dkimmilter_database_cache_total", "counter", "Database lookups (keys with a query, database.senders_query), by query and cache result: hit (an answer), negative_hit (no usable answer), miss (the database was asked).", dbCacheSeries, false},
	{"dkimmilter_database_queries_total", "counter", "Queries sent to the database, by query and outcome.", dbQuerySeries, false},
	{"dkimmilter_database_query_duration_seconds", "histogram", "Latency of the queries sent to the database, waiting for a connection included, by query.", dbQueries, false},
}

// dbQueries: the query label of the database metrics, keys and senders.
func dbQueries() []string {
	return []string{`query="` + keystore.DBKeys + `"`, `query="` + keystore.DBSenders + `"`}
}

func dbCacheSeries() []string {
	var out []string
	for _, q := range dbQueries() {
		for _, r := range []string{keystore.DBHit, keystore.DBNegativeHit, keystore.DBMiss} {
			out = append(out, q+`,result="`+r+`"`)
		}
	}
	return out
}

// dbQuerySeries: a key row that cannot sign is bad_key, a senders row
// that is not an entry bad_row; each query has only its own.
func dbQuerySeries() []string {
	var out []string
	for _, q := range []string{keystore.DBKeys, keystore.DBSenders} {
		bad := keystore.DBBadKey
		if q == keystore.DBSenders {
			bad = keystore.DBBadRow
		}
		for _, o := range []string{keystore.DBFound, keystore.DBNotFound, bad, keystore.DBTimeout, keystore.DBError} {
			out = append(out, `query="`+q+`",outcome="`+o+`"`)
		}
	}
	return out
}

// The [limits] settings counted in dkimmilter_limits_hit_total.
const (
	limitMaxHeaders     = "max_headers"
	limitMaxHeaderBytes = "max_header_bytes"
	limitMaxSessions    = "max_sessions"
	limitIdleTimeout    = "idle_timeout"
	limitMessageTimeout = "message_timeout"
)

// cutCause is why a milter connection ended, for a message it cut: the
// cause label of dkimmilter_messages_cut_total and the log's cause.
type cutCause int32

const (
	causeClosed         cutCause = iota // Postfix closed it (its own timeouts), or it broke
	causeShutdown                       // the stop's limits.shutdown_timeout, or a second stop signal
	causeMessageTimeout                 // limits.message_timeout
	causeIdleTimeout                    // limits.idle_timeout, in the middle of a message
)

var causeLabels = [...]string{"closed", "shutdown", "message_timeout", "idle_timeout"}

func (c cutCause) String() string { return causeLabels[c] }

func cutSeries() []string {
	var out []string
	for _, l := range causeLabels {
		out = append(out, `cause="`+l+`"`)
	}
	return out
}

func decisionSeries() []string {
	var out []string
	for d := signed; d <= lastDecision; d++ {
		out = append(out, `decision="`+d.label()+`"`)
	}
	return out
}

func resultSeries() []string {
	var out []string
	for _, rc := range verifier.ResultClasses() {
		out = append(out, `result="`+string(rc.Result)+`",reason="`+rc.Class+`"`)
	}
	return out
}

func actionSeries() []string {
	var out []string
	for _, a := range config.AllActions {
		if a != config.Accept {
			out = append(out, `action="`+a.String()+`"`)
		}
	}
	return out
}

func limitSeries() []string {
	var out []string
	for _, l := range []string{limitMaxHeaders, limitMaxHeaderBytes, limitMaxSessions, limitIdleTimeout, limitMessageTimeout} {
		out = append(out, `limit="`+l+`"`)
	}
	return out
}

func outcomeSeries() []string {
	return []string{`outcome="ok"`, `outcome="not_found"`, `outcome="timeout"`, `outcome="error"`}
}

func senderMismatchSeries() []string {
	return []string{`reason="` + keystore.ReasonNotAllowed + `"`, `reason="` + keystore.ReasonLoginWithoutDomain + `"`}
}

func reloadSeries() []string { return []string{`result="ok"`, `result="error"`} }
