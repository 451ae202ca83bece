package milter

import (
	"bytes"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	gomilter "github.com/emersion/go-milter"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/dkimmilter/dkimmilter/internal/testkit"
)

// panicAt makes new connections panic once at stage, with the value boom;
// it returns how many times it did.
func (e *env) panicAt(stage string) *atomic.Int32 {
	var n atomic.Int32
	armed := atomic.Bool{}
	armed.Store(true)
	rt := *e.rt
	rt.testHook = func(s string) {
		if s == stage && armed.CompareAndSwap(true, false) {
			n.Add(1)
			panic("boom")
		}
	}
	e.rt = &rt
	e.srv.SetRuntime(&rt)
	return &n
}

// A panic while handling a message (a bug of ours) costs that message
// actions.internal_error, at whatever stage it happens, and nothing
// more: an ERROR line names the queue id, the stage and the panic, the
// message line says outcome=internal_error, and the connection goes on
// with the next message, its client still known. With accept or
// quarantine the message goes on without our Authentication-Results (the
// result is not to be trusted), but forged ones are removed.
func TestInternalError(t *testing.T) {
	e, sign := actionsEnv(t)
	forged := "Authentication-Results: other.example; dkim=pass\n" +
		"Authentication-Results: mx.example.com; dkim=pass header.d=bank.example\n"
	msg := forged + sign(inbound, "good")
	stages := []string{stageMail, stageHeader, stageEOH, stageBody, stageEOM}
	tests := []struct {
		action string
		code   gomilter.ActionCode
		smtp   string
	}{
		{"tempfail", gomilter.ActReplyCode, "451 4.3.0 Internal error in the DKIM milter, try again later"},
		{"reject", gomilter.ActReplyCode, "550 5.3.0 Internal error in the DKIM milter"},
		{"accept", gomilter.ActContinue, ""},
		{"quarantine", gomilter.ActContinue, ""},
		{"discard", gomilter.ActDiscard, ""},
	}
	for _, stage := range stages {
		for _, tt := range tests {
			t.Run(stage+"/"+tt.action, func(t *testing.T) {
				e := e.on(t)
				e.setActions(parseActions(t, "", `internal_error = "`+tt.action+`"`, `bad_signature = "reject"`, `no_signature = "reject"`))
				n := e.panicAt(stage)
				c := e.dial(remote)
				before := strings.Count(e.logs.String(), "\n")
				r, out := e.sendOn(c, daveEnv, msg, 7)
				if n.Load() != 1 {
					t.Fatalf("the hook panicked %d times", n.Load())
				}
				if r.Action.Code != tt.code || tt.smtp != "" && fmt.Sprint(r.Action.SMTPCode, " ", r.Action.SMTPText) != tt.smtp {
					t.Fatalf("answer %c %d %q, want %c %q", r.Action.Code, r.Action.SMTPCode, r.Action.SMTPText, tt.code, tt.smtp)
				}
				if tt.code == gomilter.ActContinue {
					ar := testkit.Fields(out, "Authentication-Results")
					if strings.Join(ar, "|") != "other.example; dkim=pass" {
						t.Errorf("delivered Authentication-Results %q: want only the other host's", ar)
					}
					if len(testkit.Fields(out, "DKIM-Signature")) != 1 {
						t.Error("the message was changed")
					}
				}
				q := testkit.Mods(r, gomilter.ActQuarantine)
				if tt.action == "quarantine" && (len(q) != 1 || q[0].Reason != "DKIM: internal error") || tt.action != "quarantine" && len(q) != 0 {
					t.Errorf("quarantine %+v", q)
				}
				logs := strings.Join(strings.Split(e.logs.String(), "\n")[before:], "\n")
				errLine := ""
				for _, l := range strings.Split(logs, "\n") {
					if strings.Contains(l, "level=ERROR") && strings.Contains(l, "internal error: recovered a panic") {
						errLine = l
					}
				}
				wantQID := "qid=4Xin0001"
				if stage == stageMail {
					wantQID = `qid=""` // Postfix sends it with RCPT and DATA
				}
				for _, w := range []string{wantQID, `stage="` + stage + `"`, "panic=boom", "actions.internal_error = " + tt.action, "stack="} {
					if !strings.Contains(errLine, w) && !strings.Contains(errLine, strings.ReplaceAll(w, `"`, "")) {
						t.Errorf("ERROR line lacks %q: %q", w, errLine)
					}
				}
				l := e.lastLog()
				if !strings.Contains(l, "qid=4Xin0001") || !strings.Contains(l, `decision="internal error"`) || !strings.Contains(l, "outcome=internal_error") ||
					strings.Contains(l, "action=") != (tt.action != "accept") || !strings.Contains(l, "internal error at "+stage+": boom") {
					t.Errorf("message line: %s", l)
				}

				// Next message, same connection: verified as usual,
				// [actions] and all.
				r, out = e.sendOn(c, daveEnv, sign(inbound, "good"), 0)
				if ar := testkit.Fields(out, "Authentication-Results"); r.Action.Code != gomilter.ActContinue || len(ar) != 1 || !strings.Contains(ar[0], "dkim=pass") {
					t.Errorf("next message: %c %q", r.Action.Code, ar)
				}
				r, _ = e.sendOn(c, daveEnv, inbound, 0)
				if r.Action.Code != gomilter.ActReplyCode || r.Action.SMTPCode != 550 {
					t.Errorf("next unsigned message: %c %d, want no_signature's reject", r.Action.Code, r.Action.SMTPCode)
				}
				if l := e.lastLog(); !strings.Contains(l, "client=client.example.net[198.51.100.7]") || !strings.Contains(l, "outcome=no_signature") {
					t.Errorf("next message's log line: %s", l)
				}
			})
		}
	}

	var b bytes.Buffer
	e.metrics.WritePrometheus(&b)
	if !strings.Contains(b.String(), `dkimmilter_messages_total{decision="internal_error"} 25`) {
		t.Errorf("internal errors not counted:\n%s", b.String())
	}
}

// A panic at connect leaves the connection's state unknown: each of its
// messages answers actions.internal_error, and a new connection is
// served as usual. A panic in ABORT, between messages, costs nothing.
func TestInternalErrorConnectAndAbort(t *testing.T) {
	e, sign := actionsEnv(t)
	good := sign(inbound, "good")
	e.panicAt(stageConnect)
	c := e.dial(remote)
	for i := 0; i < 2; i++ {
		r, _ := e.sendOn(c, daveEnv, good, 0)
		if r.Action.Code != gomilter.ActReplyCode || r.Action.SMTPCode != 451 {
			t.Fatalf("message %d: answer %c %d %q, want the default tempfail", i, r.Action.Code, r.Action.SMTPCode, r.Action.SMTPText)
		}
		if l := e.lastLog(); !strings.Contains(l, "outcome=internal_error") || !strings.Contains(l, "internal error at connect: boom") {
			t.Errorf("message line: %s", l)
		}
	}
	if !strings.Contains(e.logs.String(), "every message on this connection answers actions.internal_error = tempfail") {
		t.Errorf("log:\n%s", e.logs.String())
	}
	r, out := e.send(remote, daveEnv, good, 0)
	if ar := testkit.Fields(out, "Authentication-Results"); r.Action.Code != gomilter.ActContinue || len(ar) != 1 || !strings.Contains(ar[0], "dkim=pass") {
		t.Errorf("new connection: %c %q", r.Action.Code, ar)
	}

	e.setActions(parseActions(t, "", `no_signature = "reject"`))
	n := e.panicAt(stageAbort)
	c = e.dial(remote)
	for i := 0; i < 3; i++ { // testkit sends ABORT before each message but the first
		r, out := e.sendOn(c, daveEnv, good, 0)
		if ar := testkit.Fields(out, "Authentication-Results"); r.Action.Code != gomilter.ActContinue || len(ar) != 1 || !strings.Contains(ar[0], "dkim=pass") {
			t.Errorf("message %d: %c %q", i, r.Action.Code, ar)
		}
	}
	if n.Load() != 1 || !strings.Contains(e.logs.String(), "the message was over; the connection goes on") {
		t.Errorf("abort panicked %d times; log:\n%s", n.Load(), e.logs.String())
	}
	if r, _ := e.sendOn(c, daveEnv, inbound, 0); r.Action.Code != gomilter.ActReplyCode || r.Action.SMTPCode != 550 {
		t.Errorf("unsigned after the abort: %c %d", r.Action.Code, r.Action.SMTPCode)
	}
}

// No configuration reaches the test hook: a runtime built from a
// configuration has none.
func TestNoTestHookInProduction(t *testing.T) {
	e := newEnv(t, "")
	if e.rt.testHook != nil {
		t.Fatal("LoadRuntime set a test hook")
	}
	if config.Default().Actions.InternalError != config.Tempfail {
		t.Error("internal_error does not default to tempfail")
	}
}
