package consumer

import (
	"context"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer/kafkaconn"
)

// The one way the worker writes to Kafka before a commit (dead letters,
// receipts, the delivered log): acknowledged by all in-sync replicas,
// retried while the partition holds.

// writer is where writeHeld writes: a topic's kafka.Writer (dead letters,
// receipts) or the delivered log's appender.
type writer interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
	topicName() string
}

// topicWriter is a kafka.Writer as a writer.
type topicWriter struct{ *kafka.Writer }

func (w topicWriter) topicName() string { return w.Topic }

// topicAppender is an appender as a writer.
type topicAppender struct {
	*kafkaconn.Appender
	topic string
}

func (a topicAppender) topicName() string { return a.topic }

// writeHeld writes msgs with out and waits for the acknowledgement of all
// in-sync replicas. A refused write is retried with a capped backoff while
// the partition holds offset (it shows as stuck after StuckAfter, the
// hold's error starting with what); refused, if set, sees each refusal
// first and may return the records to write instead, at once. spans (nil
// ones included) record the refusals and end with the outcome. It returns
// errAbandoned (or why taking ended) if sending ended first.
func (s *stream) writeHeld(log *zap.Logger, what string, out writer, offset int64, msgs []kafka.Message,
	spans []trace.Span, refused func(error) []kafka.Message) error {
	w, ctx := s.w, s.sending
	endSpans := func(err error) {
		for _, s := range spans {
			end(s, err)
		}
	}
	w.holds.Ensure(s.tp, offset)
	for attempt := 1; ; attempt++ {
		err := out.WriteMessages(ctx, msgs...)
		switch {
		case err == nil:
			endSpans(nil)
			w.holds.Done(s.tp)
			return nil
		case ctx.Err() != nil:
			endSpans(err)
			return s.abandoned()
		}
		for _, s := range spans {
			if s != nil {
				s.RecordError(err)
			}
		}
		if refused != nil {
			if again := refused(err); again != nil {
				msgs = again
				continue
			}
		}
		w.holds.Fail(s.tp, w.cfg.Now(), what+": "+err.Error())
		log.Error(what+" failed; retrying (the offset is committed only after it succeeds)",
			zap.Int("attempt", attempt), zap.String("topic", out.topicName()), zap.Error(err))
		if sleepCtx(ctx, min(time.Duration(attempt)*200*time.Millisecond, 5*time.Second)) != nil {
			endSpans(err)
			return s.abandoned()
		}
	}
}
