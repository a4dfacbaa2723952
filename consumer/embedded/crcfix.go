package embedded

import (
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// kfake stamps a LogAppendTime batch (logappend.go) by rewriting its
// timestamps after its producer computed the batch's crc, and keeps that
// crc: a fetch would hand out a batch whose crc is wrong, which Kafka
// never does (its log layer computes the crc again). stampConn sits
// between kfake and its clients and recomputes the crc of every
// LogAppendTime batch of a fetch answer, in place (the batch's size does
// not change). It reads the client's requests to know which answers are
// fetch answers. Over TLS (kfake encrypts above the listener) it sees no
// Kafka frames: it then passes everything as it is, and the cluster stops
// marking batches (plain) so none is handed out with a wrong crc.

// stampListener wraps kfake's listener.
type stampListener struct {
	net.Listener
	plain *atomic.Bool
}

func (l stampListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &stampConn{Conn: c, plain: l.plain, fetches: map[int32]int16{}}, nil
}

// stampConn is one client connection of kfake.
type stampConn struct {
	net.Conn
	plain *atomic.Bool

	mu      sync.Mutex
	opaque  bool            // not Kafka frames (TLS): passed as they are
	in      []byte          // request bytes not yet framed
	fetches map[int32]int16 // fetch requests awaiting an answer: correlation id to version
	out     []byte          // answer bytes not yet framed
}

// Read passes the client's bytes to kfake, noting its fetch requests.
func (c *stampConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.mu.Lock()
		c.sawRequest(p[:n])
		c.mu.Unlock()
	}
	return n, err
}

func (c *stampConn) sawRequest(b []byte) {
	if c.opaque {
		return
	}
	if len(c.in) == 0 && len(b) > 0 && b[0] == 0x16 { // a TLS handshake record
		c.opaque = true
		c.plain.Store(false)
		return
	}
	c.in = append(c.in, b...)
	for len(c.in) >= 4 {
		size := int(int32(binary.BigEndian.Uint32(c.in)))
		if size < 8 || size > 256<<20 {
			c.opaque = true
			c.plain.Store(false)
			c.in = nil
			return
		}
		if len(c.in) < 4+size {
			return
		}
		frame := c.in[4 : 4+size]
		key := int16(binary.BigEndian.Uint16(frame[0:2]))
		if key == int16(kmsg.Fetch) {
			c.fetches[int32(binary.BigEndian.Uint32(frame[4:8]))] = int16(binary.BigEndian.Uint16(frame[2:4]))
		}
		c.in = c.in[4+size:]
	}
	if len(c.in) == 0 {
		c.in = nil // do not keep a large buffer's backing array
	}
}

// Write passes kfake's answers to the client, each whole, with the crc of
// the LogAppendTime batches of fetch answers computed again.
func (c *stampConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.opaque {
		c.mu.Unlock()
		return c.Conn.Write(p)
	}
	c.out = append(c.out, p...)
	var ready []byte
	for len(c.out) >= 4 {
		size := int(int32(binary.BigEndian.Uint32(c.out)))
		if size < 4 || len(c.out) < 4+size {
			break
		}
		frame := c.out[:4+size]
		corr := int32(binary.BigEndian.Uint32(frame[4:8]))
		if v, ok := c.fetches[corr]; ok {
			delete(c.fetches, corr)
			fixFetchAnswer(frame[8:], v)
		}
		ready = append(ready, frame...)
		c.out = c.out[4+size:]
	}
	if len(c.out) == 0 {
		c.out = nil
	}
	c.mu.Unlock()
	if len(ready) > 0 {
		if _, err := c.Conn.Write(ready); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// fixFetchAnswer recomputes, in place, the crc of each LogAppendTime batch
// in a fetch answer of version v (after the correlation id).
func fixFetchAnswer(b []byte, v int16) {
	if v >= 12 { // a flexible answer header: its tagged fields
		if len(b) == 0 || b[0] != 0 {
			return // kfake writes none
		}
		b = b[1:]
	}
	resp := kmsg.NewPtrFetchResponse()
	resp.Version = v
	if err := resp.ReadFrom(b); err != nil {
		return
	}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			fixBatches(p.RecordBatches)
		}
	}
}

// fixBatches recomputes the crc of every v2 LogAppendTime batch of
// records, in place.
func fixBatches(records []byte) {
	eachBatch(records, func(b []byte) {
		if binary.BigEndian.Uint16(b[9:11])&attrLogAppendTime != 0 {
			setCRC(b)
		}
	})
}
