package dedupe

import (
	"crypto/sha256"
	"encoding/binary"
	"strconv"
)

const domain = "timbroadcast/random/v1\x00"

// Identity returns the identity of a record: its key, or, for a record
// without a key, its position in the topic.
func Identity(key []byte, topic string, partition int, offset int64) []byte {
	if len(key) > 0 {
		return append([]byte{'K'}, key...)
	}
	id := []byte{'P'}
	id = append(id, topic...)
	id = append(id, 0)
	id = strconv.AppendInt(id, int64(partition), 10)
	id = append(id, 0)
	return strconv.AppendInt(id, offset, 10)
}

// Random returns the stable Random for an event with the given identity
// (see Identity) and content.
func Random(identity, content []byte) uint32 {
	h := sha256.New()
	h.Write([]byte(domain))
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(identity)))
	h.Write(n[:])
	h.Write(identity)
	h.Write(content)
	sum := h.Sum(nil)
	r := binary.BigEndian.Uint32(sum[:4])
	if r == 0 {
		return 1
	}
	return r
}

// BatchRandom returns the Random of a merged message: a pure function of
// its members' Randoms, in order (each already a function of its key and
// content), so the same members always make the same merged message
// identity, and a batch never shares its Random with one of its members.
//
//	h      = SHA-256("timbroadcast/batch/v1" ‖ 0x00 ‖ uint32be(n) ‖ uint32be(r1) ‖ … ‖ uint32be(rn))
//	Random = uint32be(h[0:4]), or 1 if that is 0
func BatchRandom(members []uint32) uint32 {
	h := sha256.New()
	h.Write([]byte("timbroadcast/batch/v1\x00"))
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(members)))
	h.Write(n[:])
	for _, r := range members {
		binary.BigEndian.PutUint32(n[:], r)
		h.Write(n[:])
	}
	sum := h.Sum(nil)
	r := binary.BigEndian.Uint32(sum[:4])
	if r == 0 {
		return 1
	}
	return r
}
