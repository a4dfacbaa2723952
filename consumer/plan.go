package consumer

import (
	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer/wire"
	"github.com/timbroadcast/timbroadcast/dedupe"
	"github.com/timbroadcast/timbroadcast/sender"
)

// Planning: the partition's loops only decide what the next call is (its
// members, body and Random, whether it records itself as in flight, whether
// an earlier attempt may have reached the server); settle.go takes every
// call to its outcome and commits.

// plan waits for the next record and returns the call that delivers it:
// the record alone (plain mode), or in merge mode the record with whatever
// waits behind it when its slot comes.
func (s *stream) plan() (*call, error) {
	rec, err := s.take()
	if err != nil {
		return nil, err
	}
	if rec.msg.Offset < s.freshFloor(rec) {
		return s.already(rec), nil
	}
	c := s.lone(rec)
	switch {
	case rec.ev == nil:
		// Never sent: dead-lettered as invalid.
	case s.w.cfg.Merge && !s.expired(rec.ev):
		// What arrives while the call waits for its slot joins it; the
		// call is recorded in flight once packed.
		c.record = true
		c.pack = func() { s.pack(c) }
	case !s.w.cfg.Merge && !rec.ev.ExpiresAt.IsZero() && !s.expired(rec.ev):
		// Recorded in flight before its first attempt: after a crash, an
		// event that may have reached the server is resent (and deduped),
		// not dead-lettered as expired.
		c.record = true
	}
	return c, nil
}

// maxAlready is how many records below the delivered log's watermark are
// committed at once.
const maxAlready = 500

// already returns the "call" of rec and of the records waiting behind it
// that are below the delivered log's watermark too: never sent, committed
// together as already delivered.
func (s *stream) already(rec *record) *call {
	members := []*record{rec}
	for i := 0; len(members) < maxAlready; i++ {
		nx, ok := s.peekAt(i)
		if !ok || nx.msg.Offset >= s.floor {
			break
		}
		members = append(members, nx)
	}
	s.ahead = s.ahead[len(members)-1:]
	for _, m := range members {
		s.obs.joined(m)
	}
	log := s.log.With(zap.Int64("offset", rec.msg.Offset))
	return &call{obs: s.obs, members: members, res: resultAlready, log: log}
}

// lone returns the call for rec alone, its span started.
func (s *stream) lone(rec *record) *call {
	s.obs.joined(rec)
	c := &call{obs: s.obs, members: []*record{rec}, log: s.obs.memberLog(rec)}
	if rec.ev != nil {
		c.body, c.random = rec.ev.Body, rec.ev.Message.Random
	}
	return c
}

// pack grows a merge call, once its slot has come, by the longest run of
// waiting events that may join it, and of that run by the longest prefix
// that fits (a binary search: a few encodings however many events wait, so
// packing barely delays the call).
func (s *stream) pack(c *call) {
	s.caughtUp()
	head := c.members[0]
	members := []*record{head}
	limit := s.w.cfg.MergeMaxBytes
	join := wire.NewJoiner(s.w.mergeMode())
	join.Add(&head.ev.Message)
	for i, estimate := 0, len(head.ev.Body); estimate <= 3*limit; i++ {
		nx, ok := s.peekAt(i)
		if !ok || nx.ev == nil || s.expired(nx.ev) || !join.Add(&nx.ev.Message) {
			break
		}
		members = append(members, nx)
		estimate += len(nx.ev.Body)
	}
	type packed struct {
		body   []byte
		random uint32
	}
	// The largest prefix within the limit, found by size alone (encoding
	// without validating: every member was validated when decoded), then
	// validated once; should that fail, the search runs again validating
	// every candidate.
	search := func(validate bool) (int, packed) {
		build := func(n int) (packed, bool) {
			b, r, err := s.w.build(members[:n], validate)
			return packed{b, r}, err == nil && len(b) <= limit
		}
		best, _ := build(1) // a lone event always goes, with its own bytes
		lo, hi := 1, len(members)
		for lo < hi {
			mid := (lo + hi + 1) / 2
			if b, ok := build(mid); ok {
				lo, best = mid, b
			} else {
				hi = mid - 1
			}
		}
		return lo, best
	}
	lo, best := search(false)
	if lo > 1 {
		if b, r, err := s.w.build(members[:lo], true); err == nil && len(b) <= limit {
			best = packed{b, r}
		} else {
			lo, best = search(true)
		}
	}
	s.ahead = s.ahead[lo-1:]
	c.members, c.body, c.random = members[:lo], best.body, best.random
	for _, m := range c.members[1:] {
		s.obs.joined(m)
	}
	c.log = s.log.With(zap.Int64("offset", head.msg.Offset), zap.Int("events", lo), zap.Uint32("random", c.random))
	if lo == 1 {
		c.log = c.log.With(s.w.eventTraceFields(head)...)
	}
}

// resumeCall returns the calls that finish a call recorded as in flight
// by an earlier owner (or by this one before a restart): the same
// records, the same bytes, so the server's dedupe discards a resend. A
// call recorded as delivered is not sent again: its receipts are written
// and it is committed. A call that cannot be rebuilt byte for byte (its
// records were compacted away or changed) is sent record by record, with
// a warning: never a reason to stop the partition.
func (s *stream) resumeCall(first int64, f wire.InFlight) ([]*call, error) {
	log := s.log.With(zap.Int64("first_offset", first), zap.Int64("last_offset", f.Last), zap.Uint32("random", f.Random))
	log.Info("resuming the call recorded as in flight", zap.Bool("delivered", f.Delivered != nil))
	_, end, err := s.offsets.bounds(s.taking)
	if err != nil {
		return nil, s.ended(err)
	}
	got, err := s.through(f.Last, end)
	if err != nil {
		return nil, err
	}
	decoded := true
	for _, r := range got {
		s.obs.joined(r)
		decoded = decoded && r.ev != nil
	}
	whole := &call{obs: s.obs, members: got, random: f.Random, attempted: true, log: log}
	if len(got) == 0 {
		return nil, nil
	}
	if d := f.Delivered; d != nil && decoded {
		whole.res, whole.msgSeq, whole.attempts = resultDelivered, d.MsgSeq, d.Attempts
		whole.first, whole.at, whole.final = d.FirstAttempt, d.Call, d.Final
		whole.recorded = true // receipts are written, the delivery is on record
		return []*call{whole}, nil
	}
	if decoded && got[0].msg.Offset == first && got[len(got)-1].msg.Offset == f.Last {
		body, random, err := s.w.build(got, true)
		if err == nil && random == f.Random {
			whole.body = body
			return []*call{whole}, nil
		}
	}
	log.Warn("the call recorded as in flight cannot be rebuilt byte for byte (records compacted away or changed); "+
		"sending its surviving records one by one: if the earlier call reached the server, these events may be shown twice",
		zap.Int("surviving_records", len(got)))
	calls := make([]*call, len(got))
	for i, r := range got {
		calls[i] = s.lone(r)
		calls[i].attempted = true
	}
	return calls, nil
}

// mergeMode is the configured way events share a call.
func (w *Worker) mergeMode() wire.MergeMode {
	if w.cfg.MergeEnvelope {
		return wire.MergeEnvelope
	}
	return wire.MergeNative
}

// build returns the request body and Random of a call for members: a lone
// event's own bytes, or the merge of several (validated as a message when
// validate is set; the bytes are the same either way).
func (w *Worker) build(members []*record, validate bool) ([]byte, uint32, error) {
	if len(members) == 1 {
		return members[0].ev.Body, members[0].ev.Message.Random, nil
	}
	randoms := make([]uint32, len(members))
	parts := make([]wire.MergePart, len(members))
	for i, m := range members {
		randoms[i] = m.ev.Message.Random
		parts[i] = wire.MergePart{Key: string(m.msg.Key), Message: &m.ev.Message}
	}
	msg, err := wire.Merge(w.mergeMode(), parts)
	if err != nil {
		return nil, 0, err
	}
	msg.Random = dedupe.BatchRandom(randoms)
	encode := msg.Encode
	if !validate {
		encode = func() ([]byte, error) { return sender.Marshal(msg) }
	}
	body, err := encode()
	if err != nil {
		return nil, 0, err
	}
	return body, msg.Random, nil
}
