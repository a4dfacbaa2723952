package kafkaconn

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol/fetch"
)

// Mux fetches many partitions with one long-polled Fetch per broker, the
// way Kafka's own consumer does, instead of a Fetch per partition: an idle
// member asks each broker once per max wait, whatever the number of its
// partitions.
//
// Each partition has a Stream; its reader calls Stream.Fetch, which waits
// for the partition's next records. The mux keeps one request (the main)
// in flight per broker for every partition whose reader waits; it returns
// as soon as any of them has records. A partition whose reader asks again
// while the broker's main is in flight without it (its reader was busy
// when the main left) gets a new main at once, of every waiting partition
// of that broker; the old one's answer still counts (records already
// delivered are skipped by offset).
type Mux struct {
	c       *Conn
	maxWait time.Duration
	budget  *Budget

	mu       sync.Mutex
	streams  map[*Stream]bool
	main     map[int]*muxRequest // by broker id
	leaders  map[topicPartitionKey]int
	fresh    time.Time // when leaders were read
	wake     chan struct{}
	inflight sync.WaitGroup
}

type topicPartitionKey struct {
	topic     string
	partition int
}

// muxRequest is one Fetch in flight: the streams it asks for, by
// partition.
type muxRequest struct {
	streams map[topicPartitionKey]*Stream
}

// Stream is one partition of a Mux.
type Stream struct {
	m       *Mux
	f       *Fetcher
	waiting bool // the reader waits in Fetch
	out     chan streamResult
}

// key is the stream's partition.
func (s *Stream) key() topicPartitionKey { return topicPartitionKey{s.f.topic, s.f.partition} }

type streamResult struct {
	res *Fetched
	err error
}

// A Mux's answers hold at most muxMaxBytes, muxPartitionMaxBytes per
// partition (Kafka's consumer defaults are 50 MiB and 1 MiB). A partition's
// pump holds one answer while it hands the records on, and a call takes at
// most 12,000 bytes of events, so 64 KiB is several calls ahead even at
// 50 calls/s: BenchmarkMergeBacklog (also with every fetch 30 ms late) and
// BenchmarkDeadLetterThroughput are unchanged from 256 KiB, and the peak
// RSS of a 20,000-event merge backlog (BenchmarkPeakRSS) is 4 MB lower. A batch larger than the limit still
// comes whole (KIP-74).
const (
	muxMaxBytes          = 4 << 20
	muxPartitionMaxBytes = 64 << 10
)

// Mux returns a fetch mux whose requests wait at most maxWait at the
// broker and keep records only as budget (if not nil) takes them: the
// streams' readers release each record's RecordBytes when they are done
// with it. Run it for as long as its streams are read.
func (c *Conn) Mux(maxWait time.Duration, budget *Budget) *Mux {
	return &Mux{c: c, maxWait: maxWait, budget: budget, streams: map[*Stream]bool{}, main: map[int]*muxRequest{},
		leaders: map[topicPartitionKey]int{}, wake: make(chan struct{}, 1)}
}

// Stream adds topic's partition, read from offset next; Close removes it.
func (m *Mux) Stream(topic string, partition int, next int64) *Stream {
	s := &Stream{m: m, f: m.c.Fetcher(topic, partition, next, m.maxWait), out: make(chan streamResult, 1)}
	m.mu.Lock()
	m.streams[s] = true
	m.mu.Unlock()
	return s
}

// Fetcher is the stream's fetcher: its Next offset (which the reader may
// move between fetches) and MaxWait.
func (s *Stream) Fetcher() *Fetcher { return s.f }

// Close removes the stream from its mux; a result it was handed and did
// not take gives its records back to the budget.
func (s *Stream) Close() {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	delete(s.m.streams, s)
	s.waiting = false
	select {
	case r := <-s.out:
		if r.res != nil {
			s.m.releaseLocked(r.res.Records)
		}
	default:
	}
}

// Fetch waits for the partition's next records from s.Fetcher().Next, as
// Fetcher.Fetch does, until ctx ends.
func (s *Stream) Fetch(ctx context.Context) (*Fetched, error) {
	m := s.m
	m.mu.Lock()
	s.waiting = true
	m.mu.Unlock()
	m.poke()
	select {
	case r := <-s.out:
		return r.res, r.err
	case <-ctx.Done():
		m.mu.Lock()
		s.waiting = false
		m.mu.Unlock()
		select {
		case r := <-s.out: // delivered meanwhile: keep what it moved
			return r.res, r.err
		default:
		}
		return nil, ctx.Err()
	}
}

func (m *Mux) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// gather is how long the mux waits after a wake for other readers to ask
// too (readers handed records a moment ago ask again within
// microseconds), so they share one request.
const gather = time.Millisecond

// Run sends the requests until ctx ends, then waits for those in flight.
func (m *Mux) Run(ctx context.Context) {
	defer m.inflight.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.wake:
		}
		t := time.NewTimer(gather)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		m.send(ctx)
	}
}

// send starts a main request for every broker with a waiting stream that
// its main does not hold.
func (m *Mux) send(ctx context.Context) {
	m.refreshLeaders(ctx)
	m.mu.Lock()
	defer m.mu.Unlock()
	byBroker := map[int][]*Stream{}
	for s := range m.streams {
		if !s.waiting {
			continue
		}
		b, ok := m.leaders[s.key()]
		if !ok {
			b = -1 // unknown leader: the request's routing says why
		}
		byBroker[b] = append(byBroker[b], s)
	}
	for b, ss := range byBroker {
		if main := m.main[b]; main != nil {
			covered := true
			for _, s := range ss {
				covered = covered && main.streams[s.key()] == s
			}
			if covered {
				continue
			}
		}
		r := &muxRequest{streams: map[topicPartitionKey]*Stream{}}
		req := &fetch.Request{ReplicaID: -1, MaxWaitTime: int32(m.maxWait / time.Millisecond), MinBytes: 1,
			MaxBytes: muxMaxBytes, IsolationLevel: isolationReadCommitted, SessionEpoch: -1}
		topics := map[string]int{}
		for _, s := range ss {
			r.streams[s.key()] = s
			i, ok := topics[s.f.topic]
			if !ok {
				i = len(req.Topics)
				topics[s.f.topic] = i
				req.Topics = append(req.Topics, fetch.RequestTopic{Topic: s.f.topic})
			}
			req.Topics[i].Partitions = append(req.Topics[i].Partitions, fetch.RequestPartition{
				Partition: int32(s.f.partition), CurrentLeaderEpoch: -1, FetchOffset: s.f.Next,
				LogStartOffset: -1, PartitionMaxBytes: muxPartitionMaxBytes})
		}
		m.main[b] = r
		x := &fetchExchange{req: req, lim: m.c.Limits.orDefault(), budget: m.budget}
		m.inflight.Go(func() { m.roundTrip(ctx, b, r, x) })
	}
}

// roundTrip makes one request and hands each stream what the answer holds
// for it. Records kept for a stream that no longer waits for them are
// given back to the budget.
func (m *Mux) roundTrip(ctx context.Context, broker int, r *muxRequest, x *fetchExchange) {
	rctx, cancel := context.WithTimeout(ctx, m.maxWait+15*time.Second)
	defer cancel()
	msg, err := m.c.Transport().RoundTrip(rctx, kafka.TCP(m.c.Brokers...), x)
	resp, ok := msg.(*answer)
	switch {
	case err != nil:
	case !ok:
		err = fmt.Errorf("unexpected answer %T", msg)
	case resp.errorCode != 0:
		err = &PartitionError{Err: kafka.Error(resp.errorCode)}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	main := m.main[broker] == r
	if main {
		delete(m.main, broker)
	}
	defer m.poke()
	if err != nil {
		if ctx.Err() != nil || !main {
			return // stopping, or superseded: the newer main answers
		}
		m.fresh = time.Time{} // routing may have moved: read the leaders again
		for _, s := range r.streams {
			m.deliverLocked(s, nil, fmt.Errorf("fetch %s/%d at %d: %w", s.f.topic, s.f.partition, s.f.Next, err), 0)
		}
		return
	}
	for i := range resp.topics {
		t := &resp.topics[i]
		for j := range t.partitions {
			p := &t.partitions[j]
			s := r.streams[topicPartitionKey{t.name, int(p.partition)}]
			if s == nil || !s.waiting || !m.streams[s] {
				m.releaseLocked(p.fetched.Records)
				continue
			}
			if p.errorCode != 0 {
				m.fresh = time.Time{}
				m.deliverLocked(s, nil, &PartitionError{Err: kafka.Error(p.errorCode)}, 0)
				continue
			}
			if p.highWatermark <= s.f.Next && !p.hasData {
				continue // nothing new: the stream waits on
			}
			if p.from != s.f.Next {
				// The reader moved meanwhile (an answer to an older request):
				// what it holds may be stale.
				m.releaseLocked(p.fetched.Records)
				continue
			}
			res := &p.fetched
			if len(res.Records) == 0 && len(res.Oversized) == 0 && p.next == p.from && !res.BudgetFull {
				continue // nothing to deliver (records already delivered)
			}
			m.deliverLocked(s, res, nil, p.next)
		}
	}
}

// releaseLocked gives the budget back for records not delivered.
func (m *Mux) releaseLocked(ms []kafka.Message) {
	if m.budget == nil {
		return
	}
	for _, rec := range ms {
		m.budget.Release(RecordBytes(rec))
	}
}

// Budget is the mux's budget (nil: none).
func (m *Mux) Budget() *Budget { return m.budget }

// deliverLocked hands a stream its result, and moves its fetcher to next
// (the offset after what res held); it no longer waits.
func (m *Mux) deliverLocked(s *Stream, res *Fetched, err error, next int64) {
	s.waiting = false
	prev := s.f.Next
	s.f.Next = max(s.f.Next, next) // before the send: the reader reads it after receiving
	select {
	case s.out <- streamResult{res, err}:
	default: // a result not taken yet (the reader gave up): keep it
		s.f.Next = prev
		if res != nil {
			m.releaseLocked(res.Records)
		}
	}
}

// leaderTTL is how long partition leaders are trusted without an error.
const leaderTTL = time.Minute

// refreshLeaders reads the partitions' leaders (the transport's cached
// metadata) when they are stale or a stream's leader is unknown.
func (m *Mux) refreshLeaders(ctx context.Context) {
	m.mu.Lock()
	topics := map[string]bool{}
	force := false
	for s := range m.streams {
		if _, ok := m.leaders[s.key()]; !ok {
			force = true
		}
		topics[s.f.topic] = true
	}
	stale := force || time.Since(m.fresh) > leaderTTL
	m.mu.Unlock()
	if !stale || len(topics) == 0 {
		return
	}
	names := make([]string, 0, len(topics))
	for t := range topics {
		names = append(names, t)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	md, err := m.c.client.Metadata(ctx, &kafka.MetadataRequest{Topics: names})
	if err != nil {
		return // the requests' routing reports it
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, t := range md.Topics {
		for _, p := range t.Partitions {
			m.leaders[topicPartitionKey{t.Name, p.ID}] = p.Leader.ID
		}
	}
	m.fresh = time.Now()
}
