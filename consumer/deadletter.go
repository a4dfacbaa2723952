package consumer

import (
	"errors"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer/wire"
)

// deadLetter writes the member's record to the dead-letter topic (the
// record as wire.DeadLetterMessage builds it) and waits for the
// acknowledgement of all in-sync replicas, retrying a failed write with a
// capped backoff; then writes its receipt. c is the call that failed, if
// one was made. It returns errStopped if the send context ended first.
func (p *partition) deadLetter(log *zap.Logger, mb member, f wire.Failure, c call) error {
	w, ctx, m := p.w, p.sendCtx, mb.msg
	f.FailedAt = w.cfg.Now()
	full := wire.DeadLetterMessage(m, f)
	msg := full
	truncations := 0
	span := w.tr.write(mb.span, w.cfg.DLQTopic)
	w.holds.ensure(p.tp, m.Offset)
	for attempt := 1; ; attempt++ {
		err := w.dlq.WriteMessages(ctx, msg)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			end(span, err)
			return errStopped
		}
		if span != nil {
			span.RecordError(err)
		}
		if tooLarge(err) && truncations < 2 {
			// It can never be written as it is: write a smaller copy that
			// says what was cut, so the partition moves on.
			truncations++
			msg = wire.TruncateDeadLetter(full, m.Value, truncations)
			log.Error("dead-letter record too large for the dead-letter topic; writing a truncated copy",
				zap.Int("original_value_bytes", len(m.Value)), zap.Int("step", truncations), zap.Error(err))
			continue
		}
		w.holds.fail(p.tp, w.cfg.Now(), "dead-letter write: "+err.Error())
		log.Error("dead-letter write failed; retrying", zap.Int("attempt", attempt), zap.Error(err))
		if sleepCtx(ctx, min(time.Duration(attempt)*200*time.Millisecond, 5*time.Second)) != nil {
			end(span, err)
			return errStopped
		}
	}
	end(span, nil, AttrReason.String(f.Reason), AttrErrorCode.Int(f.Code))
	w.holds.done(p.tp)
	if truncations > 0 {
		w.metrics.recordDeadLetterTruncated()
	}
	w.metrics.recordDeadLettered(f.Reason)
	w.metrics.recordLane(m.Topic, "dead_lettered")
	log.Warn("record dead-lettered", zap.String("reason", f.Reason), zap.Int("code", f.Code),
		zap.String("info", f.Info), zap.String("dlq_topic", w.cfg.DLQTopic))
	if mb.span != nil {
		mb.span.SetAttributes(AttrOutcome.String(wire.OutcomeDeadLettered), AttrReason.String(f.Reason),
			AttrErrorCode.Int(f.Code), AttrAttempts.Int(c.attempts))
		if f.Random != 0 {
			mb.span.SetAttributes(AttrRandom.Int64(int64(f.Random)))
		}
	}
	if w.receipts != nil {
		r := wire.ReceiptFor(m, wire.OutcomeDeadLettered, w.cfg.Now())
		r.Random = f.Random
		if c.events > 0 {
			r.SetCall(c.random, c.events, c.attempts, c.first, c.at)
		}
		r.DeadLetter = wire.ReceiptDeadLetterOf(w.cfg.DLQTopic, f)
		if err := p.writeReceipts(log, []member{mb}, []wire.Receipt{r}); err != nil {
			return err
		}
	}
	p.report(m, mb.ev, Outcome{DeadLetter: &f, Attempts: f.Attempts})
	return nil
}

// tooLarge reports whether a write failed because the record is too large
// for the writer (BatchBytes) or the topic (MESSAGE_TOO_LARGE).
func tooLarge(err error) bool {
	var mtl kafka.MessageTooLargeError
	if errors.As(err, &mtl) || errors.Is(err, kafka.MessageSizeTooLarge) || errors.Is(err, kafka.RecordListTooLarge) {
		return true
	}
	var we kafka.WriteErrors
	if errors.As(err, &we) {
		for _, e := range we {
			if e != nil && tooLarge(e) {
				return true
			}
		}
	}
	return false
}
