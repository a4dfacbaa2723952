package consumer

import (
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer/wire"
)

// deadLetter writes m to the dead-letter topic (the record as
// wire.DeadLetterMessage builds it) and waits for the acknowledgement of
// all in-sync replicas, retrying a failed write with a capped backoff. It
// returns false if the send context ended first.
func (p *partition) deadLetter(log *zap.Logger, m kafka.Message, ev *wire.Event, f wire.Failure) bool {
	w, ctx := p.w, p.sendCtx
	f.FailedAt = w.cfg.Now()
	msg := wire.DeadLetterMessage(m, f)
	for attempt := 1; ; attempt++ {
		err := w.dlq.WriteMessages(ctx, msg)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return false
		}
		w.holds.fail(p.id, w.cfg.Now(), "dead-letter write: "+err.Error())
		log.Error("dead-letter write failed; retrying", zap.Int("attempt", attempt), zap.Error(err))
		t := time.NewTimer(min(time.Duration(attempt)*200*time.Millisecond, 5*time.Second))
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
	w.holds.done(p.id)
	w.metrics.recordDeadLettered(f.Reason)
	log.Warn("record dead-lettered", zap.String("reason", f.Reason), zap.Int("code", f.Code),
		zap.String("info", f.Info), zap.String("dlq_topic", w.cfg.DLQTopic))
	p.report(m, ev, Outcome{DeadLetter: &f, Attempts: f.Attempts})
	return true
}
