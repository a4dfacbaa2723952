package embedded

import (
	"encoding/binary"
	"hash/crc32"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// kfake stamps a record batch with the broker's time only when its
// producer set the batch's LogAppendTime attribute; it accepts the topic
// configuration message.timestamp.type but does not apply it. A real
// broker does the opposite: it stamps every batch of a topic configured
// LogAppendTime, and refuses a batch whose producer set the attribute. The
// claims log relies on the real behaviour (its grants follow the broker's
// clock), so the in-process broker is made to behave like Kafka here: it
// follows the topic configurations set by CreateTopics, AlterConfigs and
// IncrementalAlterConfigs, and marks the batches produced to a
// LogAppendTime topic as Kafka's log layer would, before kfake stores them.

const (
	timestampTypeConfig = "message.timestamp.type"
	logAppendTime       = "LogAppendTime"
	attrLogAppendTime   = 0x08
)

// appendTimeTopics follows which topics are configured LogAppendTime.
type appendTimeTopics struct {
	mu     sync.Mutex
	topics map[string]bool
}

func (a *appendTimeTopics) set(topic string, value *string, deleted bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if deleted || value == nil {
		delete(a.topics, topic)
		return
	}
	a.topics[topic] = *value == logAppendTime
}

func (a *appendTimeTopics) has(topic string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.topics[topic]
}

// followTimestampType installs the control functions that give fc Kafka's
// message.timestamp.type behaviour. They observe requests and change a
// produce request's batches in place; kfake handles every request itself.
// plain says the cluster's connections carry Kafka frames stampConn can
// correct (not TLS): batches are marked only then.
func followTimestampType(fc *kfake.Cluster, plain *atomic.Bool) {
	a := &appendTimeTopics{topics: map[string]bool{}}
	fc.ControlKey(int16(kmsg.CreateTopics), func(req kmsg.Request) (kmsg.Response, error, bool) {
		r := req.(*kmsg.CreateTopicsRequest)
		if r.ValidateOnly {
			return nil, nil, false
		}
		for _, t := range r.Topics {
			for _, c := range t.Configs {
				if c.Name == timestampTypeConfig {
					a.set(t.Topic, c.Value, false)
				}
			}
		}
		return nil, nil, false
	})
	fc.ControlKey(int16(kmsg.AlterConfigs), func(req kmsg.Request) (kmsg.Response, error, bool) {
		r := req.(*kmsg.AlterConfigsRequest)
		if r.ValidateOnly {
			return nil, nil, false
		}
		for _, res := range r.Resources {
			if res.ResourceType != kmsg.ConfigResourceTypeTopic {
				continue
			}
			var v *string // AlterConfigs replaces the whole set: unset unless named
			for _, c := range res.Configs {
				if c.Name == timestampTypeConfig {
					v = c.Value
				}
			}
			a.set(res.ResourceName, v, false)
		}
		return nil, nil, false
	})
	fc.ControlKey(int16(kmsg.IncrementalAlterConfigs), func(req kmsg.Request) (kmsg.Response, error, bool) {
		r := req.(*kmsg.IncrementalAlterConfigsRequest)
		if r.ValidateOnly {
			return nil, nil, false
		}
		for _, res := range r.Resources {
			if res.ResourceType != kmsg.ConfigResourceTypeTopic {
				continue
			}
			for _, c := range res.Configs {
				if c.Name != timestampTypeConfig {
					continue
				}
				switch c.Op {
				case kmsg.IncrementalAlterConfigOpSet:
					a.set(res.ResourceName, c.Value, false)
				case kmsg.IncrementalAlterConfigOpDelete:
					a.set(res.ResourceName, nil, true)
				}
			}
		}
		return nil, nil, false
	})
	fc.ControlKey(int16(kmsg.DeleteTopics), func(req kmsg.Request) (kmsg.Response, error, bool) {
		r := req.(*kmsg.DeleteTopicsRequest)
		for _, t := range r.TopicNames {
			a.set(t, nil, true)
		}
		for _, t := range r.Topics {
			if t.Topic != nil {
				a.set(*t.Topic, nil, true)
			}
		}
		return nil, nil, false
	})
	fc.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		r := req.(*kmsg.ProduceRequest)
		if !plain.Load() {
			return nil, nil, false
		}
		for i := range r.Topics {
			t := &r.Topics[i]
			if !a.has(t.Topic) {
				continue
			}
			for j := range t.Partitions {
				markLogAppendTime(t.Partitions[j].Records)
			}
		}
		return nil, nil, false
	})
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// markLogAppendTime sets the LogAppendTime attribute of every v2 batch in
// records, and its crc (what Kafka's log layer does for such a topic).
func markLogAppendTime(records []byte) {
	eachBatch(records, func(b []byte) {
		attrs := binary.BigEndian.Uint16(b[9:11])
		binary.BigEndian.PutUint16(b[9:11], attrs|attrLogAppendTime)
		setCRC(b)
	})
}

// eachBatch calls fn with each v2 record batch of records (from its
// partition leader epoch on), in place. Anything it cannot read ends the
// walk and is left as it is, for kfake or the client to refuse.
func eachBatch(records []byte, fn func(b []byte)) {
	for len(records) >= 12 {
		length := int64(int32(binary.BigEndian.Uint32(records[8:12])))
		if length < 4+1+4+2 || int64(len(records)-12) < length {
			return
		}
		b := records[12 : 12+length]
		records = records[12+length:]
		if b[4] == 2 { // magic
			fn(b)
		}
	}
}

// setCRC computes a batch's crc32c again, over its attributes on.
func setCRC(b []byte) { binary.BigEndian.PutUint32(b[5:9], crc32.Checksum(b[9:], castagnoli)) }
