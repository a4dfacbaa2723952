package kafkaconn

import (
	"encoding/binary"
	"fmt"
	"io"
	"sort"
	"sync/atomic"

	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/fetch"
)

// A Fetch is sent with kafka-go's transport (connections, TLS, SASL,
// routing to the leader, version negotiation) but its answer is read here,
// from the connection, as it streams: kafka-go's protocol.RawExchanger is
// the hook for exactly that. So no count or length in an answer is
// believed before the bytes it counts are there, and record batches are
// decoded within Limits (batch.go).

// fetchExchange is one Fetch request whose answer is read by
// readAnswer.
type fetchExchange struct {
	req    *fetch.Request
	lim    Limits
	budget *Budget
	// version is the Fetch version negotiated on the connection.
	version int16
}

var correlation atomic.Int32

func (x *fetchExchange) ApiKey() protocol.ApiKey { return protocol.Fetch }

// Broker routes the request to its partitions' leader.
func (x *fetchExchange) Broker(c protocol.Cluster) (protocol.Broker, error) { return x.req.Broker(c) }

// Required records the negotiated version: the exchange is always raw.
func (x *fetchExchange) Required(versions map[protocol.ApiKey]int16) bool {
	x.version = versions[protocol.Fetch]
	return true
}

// RawExchange writes the request and reads its answer.
func (x *fetchExchange) RawExchange(rw io.ReadWriter) (protocol.Message, error) {
	if x.version < 4 {
		return nil, fmt.Errorf("the broker answers Fetch up to v%d; reading committed records needs v4 (Kafka 0.11) or later", x.version)
	}
	id := correlation.Add(1)
	if err := protocol.WriteRequest(rw, x.version, id, ClientID, x.req); err != nil {
		return nil, err
	}
	var size [4]byte
	if _, err := io.ReadFull(rw, size[:]); err != nil {
		return nil, noEOF(err)
	}
	r := &frameReader{r: rw, remain: int64(int32(binary.BigEndian.Uint32(size[:])))}
	if r.remain < 4 {
		return nil, formatErr("answer of %d bytes", r.remain)
	}
	if got := r.int32(); r.err == nil && got != id {
		return nil, formatErr("correlation id %d, want %d", got, id)
	}
	a, err := readAnswer(r, x)
	if err == nil {
		err = r.discardRest()
	}
	if err != nil {
		return nil, err // the transport closes the connection
	}
	return a, nil
}

// answer is a Fetch answer, its records decoded.
type answer struct {
	errorCode int16
	topics    []topicAnswer
}

func (*answer) ApiKey() protocol.ApiKey { return protocol.Fetch }

type topicAnswer struct {
	name       string
	partitions []partitionAnswer
}

// partitionAnswer is one partition of an answer, read as a read_committed
// consumer reads it.
type partitionAnswer struct {
	partition     int32
	errorCode     int16
	highWatermark int64
	// hasData says the answer held bytes for the partition.
	hasData bool
	// from is the offset the request asked for (-1: not asked); fetched
	// is what to deliver; next the offset after everything the answer held
	// (skipped batches and markers included), or where it was cut.
	from    int64
	fetched Fetched
	next    int64
}

// frameReader reads one answer frame, never past its end.
type frameReader struct {
	r       io.Reader
	remain  int64
	err     error
	scratch [8]byte
}

func (r *frameReader) fill(n int) []byte {
	b := r.scratch[:n]
	if r.err != nil {
		clear(b)
		return b
	}
	if int64(n) > r.remain {
		r.err = formatErr("a field runs past the answer's end")
		clear(b)
		return b
	}
	if _, err := io.ReadFull(r.r, b); err != nil {
		r.err = noEOF(err)
		clear(b)
		return b
	}
	r.remain -= int64(n)
	return b
}

func (r *frameReader) int16() int16 { return int16(binary.BigEndian.Uint16(r.fill(2))) }
func (r *frameReader) int32() int32 { return int32(binary.BigEndian.Uint32(r.fill(4))) }
func (r *frameReader) int64() int64 { return int64(binary.BigEndian.Uint64(r.fill(8))) }

// bytes reads n bytes, n checked against what remains first.
func (r *frameReader) bytes(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || int64(n) > r.remain {
		r.err = formatErr("%d bytes claimed with %d left in the answer", n, r.remain)
		return nil
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r.r, b); err != nil {
		r.err = noEOF(err)
		return nil
	}
	r.remain -= int64(n)
	return b
}

func (r *frameReader) string() string {
	n := r.int16()
	if n < 0 {
		return ""
	}
	return string(r.bytes(int(n)))
}

// count reads an array length whose elements take at least each bytes.
func (r *frameReader) count(each int64) int {
	n := int64(r.int32())
	if r.err != nil || n <= 0 {
		return 0
	}
	if n*each > r.remain {
		r.err = formatErr("an array of %d claimed with %d bytes left in the answer", n, r.remain)
		return 0
	}
	return int(n)
}

// discardN passes over n bytes of a record set.
func (r *frameReader) discardN(n int64, setLeft *int64) error {
	if r.err != nil {
		return r.err
	}
	if n > *setLeft || n > r.remain {
		r.err = formatErr("%d bytes claimed with %d left in the record set", n, *setLeft)
		return r.err
	}
	if _, err := io.CopyN(io.Discard, r.r, n); err != nil {
		r.err = noEOF(err)
		return r.err
	}
	r.remain -= n
	*setLeft -= n
	return nil
}

// discard passes over the rest of a record set.
func (r *frameReader) discard(setLeft *int64) error { return r.discardN(*setLeft, setLeft) }

func (r *frameReader) discardRest() error {
	if r.err != nil {
		return r.err
	}
	if _, err := io.CopyN(io.Discard, r.r, r.remain); err != nil {
		return noEOF(err)
	}
	r.remain = 0
	return nil
}

// readAnswer reads a Fetch answer of version 4 to 11.
func readAnswer(r *frameReader, x *fetchExchange) (*answer, error) {
	v := x.version
	a := &answer{}
	r.int32() // throttle time (v1+)
	if v >= 7 {
		a.errorCode = r.int16()
		r.int32() // session id
	}
	from := map[topicPartitionKey]int64{}
	for _, t := range x.req.Topics {
		for _, p := range t.Partitions {
			from[topicPartitionKey{t.Topic, int(p.Partition)}] = p.FetchOffset
		}
	}
	k := &keeper{lim: x.lim.orDefault(), budget: x.budget}
	k.left = answerKeepBytes(k.lim)
	first := true // no record kept yet in this answer
	nt := r.count(2 + 4)
	for range nt {
		t := topicAnswer{name: r.string()}
		np := r.count(4 + 2 + 8 + 8 + 4 + 4)
		for range np {
			p := partitionAnswer{partition: r.int32(), errorCode: r.int16(), highWatermark: r.int64()}
			r.int64() // last stable offset
			if v >= 5 {
				r.int64() // log start offset
			}
			na := r.count(16)
			aborted := make([]fetch.ResponseTransaction, na)
			for i := range aborted {
				aborted[i] = fetch.ResponseTransaction{ProducerID: r.int64(), FirstOffset: r.int64()}
			}
			if v >= 11 {
				r.int32() // preferred read replica
			}
			setLeft := int64(r.int32())
			if r.err != nil {
				return nil, r.err
			}
			if setLeft > r.remain {
				return nil, formatErr("a record set of %d bytes with %d left in the answer", setLeft, r.remain)
			}
			off, asked := from[topicPartitionKey{t.name, int(p.partition)}]
			p.next, p.from = off, -1
			if asked {
				p.from = off
			}
			if setLeft > 0 {
				p.hasData = true
				if !asked || p.errorCode != 0 {
					if err := r.discard(&setLeft); err != nil {
						return nil, err
					}
				} else if err := readSet(r, &setLeft, &p, aborted, t.name, k, &first); err != nil {
					return nil, err
				}
			}
			t.partitions = append(t.partitions, p)
		}
		a.topics = append(a.topics, t)
	}
	if r.err != nil {
		return nil, r.err
	}
	return a, nil
}

// readSet reads a partition's record set from p.next on, walking its
// batches in offset order with the answer's aborted transactions: a
// producer joins the aborted set when its transaction's first offset is
// reached and leaves it at its ABORT marker; a control batch is never
// delivered; a transactional batch of an aborted producer is skipped
// whole; offsets count through all of it, so commits stay contiguous.
func readSet(r *frameReader, setLeft *int64, p *partitionAnswer, pending []fetch.ResponseTransaction, topic string, k *keeper, first *bool) error {
	sort.Slice(pending, func(i, j int) bool { return pending[i].FirstOffset < pending[j].FirstOffset })
	var aborted map[int64]bool // made at the first aborted transaction
	enter := func(base, producerID int64, transactional, control bool) bool {
		for len(pending) > 0 && pending[0].FirstOffset <= base {
			if aborted == nil {
				aborted = map[int64]bool{}
			}
			aborted[pending[0].ProducerID] = true
			pending = pending[1:]
		}
		return transactional && !control && aborted[producerID]
	}
	out := &p.fetched
	for *setLeft > 0 {
		if k.budgetFull {
			out.BudgetFull, out.BudgetNeed = true, k.need
			return r.discard(setLeft)
		}
		b, err := readBatch(r, setLeft, p.next, k, *first, enter)
		if err != nil {
			return err
		}
		if b == nil {
			break // a partial batch at the end
		}
		out.Batches++
		switch {
		case b.control:
			out.Markers += b.markers
			if b.aborts > 0 {
				delete(aborted, b.producerID)
			}
		case b.skipped > 0 || (b.transactional && aborted[b.producerID]):
			out.Aborted += b.skipped
			p.next = max(p.next, b.last+1)
			continue
		}
		for i := range b.records {
			m := &b.records[i]
			m.Topic, m.Partition, m.HighWaterMark = topic, int(p.partition), p.highWatermark
			out.BrokerTime = append(out.BrokerTime, b.logAppend)
		}
		if len(out.Records) == 0 {
			out.Records = b.records // most fetches of a partition: its first batch's records are the answer's
		} else {
			out.Records = append(out.Records, b.records...)
		}
		out.Oversized = append(out.Oversized, b.oversized...)
		if len(b.records) > 0 {
			*first = false
		}
		if b.cut {
			out.BudgetFull = out.BudgetFull || k.budgetFull
			out.BudgetNeed = k.need
			p.next = max(p.next, b.cutAt)
			return r.discard(setLeft)
		}
		p.next = max(p.next, b.last+1)
	}
	out.BudgetFull = out.BudgetFull || (k.budgetFull && len(out.Records) == 0)
	if out.BudgetFull {
		out.BudgetNeed = k.need
	}
	return nil
}
