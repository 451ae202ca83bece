package milter

// decision is what the milter did with a message (doc/decision.md). It is
// the decision= of the log line and, as label, the decision label of
// dkimmilter_messages_total and dkimmilter_message_duration_seconds.
type decision uint8

const (
	undecided decision = iota
	signed             // signed with every key of the matching rule
	verified           // verified and stamped (dkim=none included)
	notSigned          // a key could not sign; actions.sign_error = "accept": delivered unsigned
	signError          // a key could not sign: tempfail, reject, quarantine or discard, from actions.sign_error
	skipped            // from a peer (passed through untouched), or mode "s" and not a message to sign
	failed             // dkimmilter failed on the message: actions.internal_error

	senderMismatch // the From is not the login's to sign (sign.sender_binding): tempfail, reject or discard, from actions.sender_mismatch

	lastDecision = senderMismatch
)

var decisionWords = [...]struct{ log, label string }{
	undecided: {"undecided", "undecided"},
	signed:    {"signed", "signed"},
	verified:  {"verified", "verified"},
	notSigned: {"not signed", "not_signed"},
	signError: {"sign error", "sign_error"},
	skipped:   {"skipped", "skipped"},
	failed:    {"internal error", "internal_error"},

	senderMismatch: {"sender mismatch", "sender_mismatch"},
}

// String is the decision as the log writes it.
func (d decision) String() string { return decisionWords[d].log }

// label is the decision as a metric label value.
func (d decision) label() string { return decisionWords[d].label }
