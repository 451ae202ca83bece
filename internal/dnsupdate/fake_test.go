package dnsupdate

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dkimmilter/dkimmilter/config"
	"github.com/miekg/dns"
)

// fakePrimary answers updates on 127.0.0.1 over UDP and TCP as answer
// says; a nil reply is no answer at all.
type fakePrimary struct {
	addr   string
	answer func(req *dns.Msg, tcp bool) *dns.Msg
	tcp    atomic.Int32
}

func newFakePrimary(t *testing.T, answer func(req *dns.Msg, tcp bool) *dns.Msg) *fakePrimary {
	t.Helper()
	f := &fakePrimary{answer: answer}
	// The UDP port the kernel picks may be in use for TCP (another
	// test's connection): pick again.
	var pc net.PacketConn
	var ln net.Listener
	for try := 0; ; try++ {
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
		if try == 20 {
			t.Fatal(err)
		}
	}
	f.addr = pc.LocalAddr().String()
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		_, tcp := w.RemoteAddr().(*net.TCPAddr)
		if tcp {
			f.tcp.Add(1)
		}
		if resp := f.answer(req, tcp); resp != nil {
			w.WriteMsg(resp)
		}
	})
	// miekg's server refuses UPDATE by default (NOTIMP): accept all. It
	// does not check TSIG (no TsigSecret).
	accept := func(dns.Header) dns.MsgAcceptAction { return dns.MsgAccept }
	udp := &dns.Server{PacketConn: pc, Handler: handler, MsgAcceptFunc: accept}
	tcpSrv := &dns.Server{Listener: ln, Handler: handler, MsgAcceptFunc: accept}
	go udp.ActivateAndServe()
	go tcpSrv.ActivateAndServe()
	t.Cleanup(func() { udp.Shutdown(); tcpSrv.Shutdown() })
	return f
}

func rcodeAnswer(rcode int) func(*dns.Msg, bool) *dns.Msg {
	return func(req *dns.Msg, _ bool) *dns.Msg {
		m := new(dns.Msg)
		m.SetRcode(req, rcode)
		m.Extra = nil // no TSIG: the answer is unsigned
		return m
	}
}

func TestFakePrimary(t *testing.T) {
	name := "s1._domainkey.example.com"
	change := Change{Action: Add, Name: name, Value: "v=DKIM1; p=A"}
	tests := []struct {
		what    string
		answer  func(*dns.Msg, bool) *dns.Msg
		key     string
		wantErr string // "" success
		wantTCP bool
	}{
		{what: "truncated over UDP, whole over TCP", answer: func(req *dns.Msg, tcp bool) *dns.Msg {
			m := new(dns.Msg)
			m.SetReply(req)
			m.Truncated = !tcp
			return m
		}, wantTCP: true},
		{what: "unsigned success to a signed update", answer: rcodeAnswer(dns.RcodeSuccess), key: "testdata/tsig-keygen.key",
			wantErr: "is not signed with TSIG key dkim-update, though the update was"},
		{what: "SERVFAIL", answer: rcodeAnswer(dns.RcodeServerFailure), wantErr: "SERVFAIL: the server failed to apply the update: its log says why"},
		{what: "NOTIMP", answer: rcodeAnswer(dns.RcodeNotImplemented), wantErr: `NOTIMP: the server does not accept dynamic updates (RFC 2136): use a server that does, or method = "command"`},
		{what: "NOTZONE", answer: rcodeAnswer(dns.RcodeNotZone), wantErr: "NOTZONE: the name is not in zone example.com as the server knows it: set zone in [publish.fake]"},
		{what: "FORMERR", answer: rcodeAnswer(dns.RcodeFormatError), wantErr: "FORMERR"},
		{what: "an RCODE without a name", answer: rcodeAnswer(12), wantErr: "the server answered RCODE 12"},
		{what: "NOTAUTH unsigned", answer: rcodeAnswer(dns.RcodeNotAuth), wantErr: "NOTAUTH: the server is not authoritative for zone example.com, or wants a signed update"},
		{what: "no answer", answer: func(*dns.Msg, bool) *dns.Msg { return nil }, wantErr: "no answer from 127.0.0.1:"},
	}
	for _, tt := range tests {
		t.Run(tt.what, func(t *testing.T) {
			f := newFakePrimary(t, tt.answer)
			p, err := New(&config.Publisher{Name: "fake", Method: "rfc2136", Server: f.addr, Zone: "example.com",
				TSIGKey: tt.key, TTL: time.Minute, Timeout: 500 * time.Millisecond}, nil, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			out, err := p.Apply(context.Background(), change)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Apply: %v", err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), f.addr) {
				t.Fatalf("Apply = %q, %v; want an error naming the server with %q", out, err, tt.wantErr)
			}
			if got := f.tcp.Load() > 0; got != tt.wantTCP {
				t.Errorf("TCP used: %v, want %v", got, tt.wantTCP)
			}
		})
	}
}

// A change too big for a UDP datagram without EDNS goes over TCP at once.
func TestLargeUpdateOverTCP(t *testing.T) {
	f := newFakePrimary(t, func(req *dns.Msg, tcp bool) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(req)
		if !tcp {
			m.Rcode = dns.RcodeRefused // would fail the test
		}
		return m
	})
	p, err := New(&config.Publisher{Name: "fake", Method: "rfc2136", Server: f.addr, Zone: "example.com", Timeout: time.Second}, nil, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Apply(context.Background(), Change{Action: Add, Name: "s1._domainkey.example.com", Value: record4096}); err != nil {
		t.Fatal(err)
	}
	if f.tcp.Load() != 1 {
		t.Errorf("%d TCP updates, want 1", f.tcp.Load())
	}
}

// The expected record split differently, then changed before the second
// update: ErrChanged, saying what is there now and what was expected.
func TestChangedBetweenTries(t *testing.T) {
	name := "s1._domainkey.example.com."
	var queries atomic.Int32
	f := newFakePrimary(t, func(req *dns.Msg, _ bool) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(req)
		if req.Opcode == dns.OpcodeUpdate {
			m.Rcode = dns.RcodeNXRrset
			return m
		}
		strs := []string{"v=DKIM1; ", "p=OURS"}
		if queries.Add(1) > 1 {
			strs = []string{"v=DKIM1; p=THEIRS"}
		}
		m.Answer = []dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: strs}}
		return m
	})
	p, err := New(&config.Publisher{Name: "fake", Method: "rfc2136", Server: f.addr, Zone: "example.com", Timeout: time.Second}, nil, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Apply(context.Background(), Change{Action: Revoke, Name: name, Value: "v=DKIM1; p=", Expect: "v=DKIM1; p=OURS"})
	if !errors.Is(err, ErrChanged) || !strings.Contains(err.Error(), `has "v=DKIM1; p=THEIRS", where "v=DKIM1; p=OURS" was expected`) {
		t.Fatalf("Apply: %v, want ErrChanged showing both records", err)
	}
	if queries.Load() != 2 {
		t.Errorf("%d TXT queries, want 2 (one per failed update)", queries.Load())
	}
}
