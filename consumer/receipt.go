package consumer

import (
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer/wire"
)

// writeReceipts writes the receipts rs of members to the receipt topic in
// one produce and waits for the acknowledgement of all in-sync replicas.
// A refused write is retried with a capped backoff, like a dead-letter
// write: the partition holds (and shows as stuck after StuckAfter), and
// nothing is committed until the receipts are written. It returns
// errStopped if the send context ended first.
func (p *partition) writeReceipts(log *zap.Logger, members []member, rs []wire.Receipt) error {
	w, ctx := p.w, p.sendCtx
	msgs := make([]kafka.Message, len(rs))
	for i, r := range rs {
		m, err := wire.ReceiptMessage(members[i].msg, r)
		if err != nil {
			return err // a Receipt always encodes
		}
		msgs[i] = m
	}
	var spans []trace.Span
	if w.tr != nil {
		spans = make([]trace.Span, len(members))
		for i, m := range members {
			spans[i] = w.tr.write(m.span, w.cfg.ReceiptTopic)
		}
	}
	endAll := func(err error) {
		for _, s := range spans {
			end(s, err)
		}
	}
	start := time.Now()
	w.holds.ensure(p.tp, members[0].msg.Offset)
	for attempt := 1; ; attempt++ {
		err := w.receipts.WriteMessages(ctx, msgs...)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			endAll(err)
			return errStopped
		}
		for _, s := range spans {
			s.RecordError(err)
		}
		w.metrics.recordReceiptFailure()
		w.holds.fail(p.tp, w.cfg.Now(), "receipt write: "+err.Error())
		log.Error("receipt write failed; retrying (the offset is committed only after its receipt is written)",
			zap.Int("attempt", attempt), zap.String("receipt_topic", w.cfg.ReceiptTopic), zap.Error(err))
		if sleepCtx(ctx, min(time.Duration(attempt)*200*time.Millisecond, 5*time.Second)) != nil {
			endAll(err)
			return errStopped
		}
	}
	endAll(nil)
	w.holds.done(p.tp)
	w.metrics.observeReceiptWrite(time.Since(start))
	for _, r := range rs {
		w.metrics.recordReceipt(r.Outcome)
	}
	return nil
}
