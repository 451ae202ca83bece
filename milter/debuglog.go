package milter

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/dkimmilter/dkimmilter/internal/dns"
)

// With -log-level debug the daemon says what it asked DNS and what came
// back, why it signed or verified, and which key it chose: what an admin
// needs when a result looks wrong and the message line does not say why.

// qidKey carries a message's queue id in the context of its key lookups,
// for the DNS debug lines.
type qidKey struct{}

func withQueueID(ctx context.Context, qid string) context.Context {
	return context.WithValue(ctx, qidKey{}, qid)
}

func queueID(ctx context.Context) string {
	qid, _ := ctx.Value(qidKey{}).(string)
	return qid
}

// debugResolver logs each DNS lookup and its answer. It goes under the
// cache, with the metrics: what it logs are the queries sent. When
// several messages wait for one lookup, the queue id is the first's.
type debugResolver struct {
	next dns.Resolver
	log  *slog.Logger
}

// logLookups wraps next with debugResolver when log is at debug level
// (the level is fixed for the life of the process); otherwise it costs
// nothing.
func logLookups(next dns.Resolver, log *slog.Logger) dns.Resolver {
	if log == nil || !log.Enabled(context.Background(), slog.LevelDebug) {
		return next
	}
	return debugResolver{next, log}
}

func (r debugResolver) LookupTXT(ctx context.Context, name string) (*dns.TXTResult, error) {
	start := time.Now()
	res, err := r.next.LookupTXT(ctx, name)
	args := []any{"qid", queueID(ctx), "name", name, "duration", time.Since(start)}
	if err != nil {
		args = append(args, "err", err)
	} else {
		args = append(args, "records", fmt.Sprintf("%q", res.Records), "ttl", res.TTL, "ad", res.Authenticated)
	}
	r.log.Debug("dns lookup", args...)
	return res, err
}
