package consumer

import (
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer/call"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
)

// writeReceipts writes the receipts rs of members to the receipt topic in
// one produce with writeHeld, like a dead letter: nothing is committed
// until the receipts are written. It returns errAbandoned (or why taking
// ended) if sending ended first.
func (s *stream) writeReceipts(log *zap.Logger, members []*call.Record, rs []wire.Receipt) error {
	w := s.w
	msgs := make([]kafka.Message, len(rs))
	for i, r := range rs {
		if s.app != nil && w.apps.Single == nil {
			r.App, r.SDKAppID = s.app.Name, s.app.SDKAppID
		}
		m, err := wire.ReceiptMessage(members[i].Msg, r, w.traceHeaders)
		if err != nil {
			return err // a Receipt always encodes
		}
		msgs[i] = m
	}
	var spans []trace.Span
	if w.tr.On() {
		spans = make([]trace.Span, len(members))
		for i, m := range members {
			spans[i] = w.tr.Write(m.Span, w.cfg.ReceiptTopic)
		}
	}
	start := time.Now()
	refused := func(error) []kafka.Message {
		w.metrics.RecordReceiptFailure()
		return nil
	}
	if err := s.writeHeld(log, "receipt write", topicWriter{w.receipts}, members[0].Msg.Offset, msgs, spans, refused); err != nil {
		return err
	}
	s.obs.Receipts(rs, time.Since(start))
	return nil
}
