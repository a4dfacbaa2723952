package consumer

import (
	"errors"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer/call"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
)

// deadLetter dead-letters member m of call c: it writes the record (as
// wire.DeadLetterMessage builds it, or a truncated copy when it is too
// large for the topic) with writeHeld, observes the outcome, then writes
// its receipt.
func (s *stream) deadLetter(c *call.Call, m *call.Record) error {
	w, msg, log := s.w, m.Msg, c.Obs.MemberLog(m)
	f := c.Failure(m)
	f.FailedAt = w.cfg.Now()
	if s.app != nil && w.apps.Single == nil {
		f.App, f.SDKAppID = s.app.Name, s.app.SDKAppID
	}
	full := wire.DeadLetterMessage(msg, f)
	truncations := 0
	tooBig := func(err error) []kafka.Message {
		if !tooLarge(err) || truncations == wire.TruncateSteps {
			return nil
		}
		// It can never be written as it is: write a smaller copy that says
		// what was cut, so the partition moves on.
		truncations++
		log.Error("dead-letter record too large for the dead-letter topic; writing a truncated copy",
			zap.Int("original_value_bytes", len(msg.Value)), zap.Int("step", truncations), zap.Error(err))
		return []kafka.Message{wire.TruncateDeadLetter(full, msg.Value, truncations)}
	}
	span := w.tr.Write(m.Span, w.cfg.DLQTopic, call.AttrReason.String(f.Reason), call.AttrErrorCode.Int(f.Code))
	if err := s.writeHeld(log, "dead-letter write", topicWriter{w.dlq}, msg.Offset, []kafka.Message{full}, []trace.Span{span}, tooBig); err != nil {
		return err
	}
	if truncations > 0 {
		w.metrics.RecordDeadLetterTruncated()
	}
	c.Obs.Outcome(c, m, &f)
	if w.receipts == nil {
		return nil
	}
	r := wire.ReceiptFor(msg, wire.OutcomeDeadLettered, w.cfg.Now())
	r.Random = f.Random
	if c.Res != call.Invalid { // a call was planned for it
		r.SetCall(c.Random, len(c.Members), c.Attempts, c.First, c.At)
	}
	r.DeadLetter = wire.ReceiptDeadLetterOf(w.cfg.DLQTopic, f)
	return s.writeReceipts(log, []*call.Record{m}, []wire.Receipt{r})
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
