package kafkaconn_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/timbroadcast/timbroadcast/consumer/kafkaconn"
)

// TestBalancer: murmur2 places keys exactly where the Java client's default
// partitioner does (franz-go's StickyKeyPartitioner with no hasher mirrors
// it); the default stays kafka-go's FNV-1a hash; an unknown name is an
// error listing the known ones.
func TestBalancer(t *testing.T) {
	murmur, err := kafkaconn.Balancer("murmur2")
	if err != nil {
		t.Fatal(err)
	}
	def, err := kafkaconn.Balancer("")
	if err != nil {
		t.Fatal(err)
	}
	java := kgo.StickyKeyPartitioner(nil).ForTopic("events")
	partitions := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}
	differ := 0
	for i := range 200 {
		key := []byte(fmt.Sprintf("show-%d-open", i))
		want := java.Partition(&kgo.Record{Key: key}, len(partitions))
		if got := murmur.Balance(kafka.Message{Key: key}, partitions...); got != want {
			t.Errorf("murmur2 puts %q in partition %d, the Java partitioner in %d", key, got, want)
		}
		if def.Balance(kafka.Message{Key: key}, partitions...) != want {
			differ++
		}
	}
	if differ == 0 {
		t.Error("the default placed every key like murmur2: it is not FNV-1a")
	}
	if _, ok := def.(*kafka.Hash); !ok {
		t.Errorf("default balancer %T, want *kafka.Hash", def)
	}
	if c, err := kafkaconn.Balancer("crc32"); err != nil || c == nil {
		t.Errorf("crc32: %v", err)
	}
	if _, err := kafkaconn.Balancer("random"); err == nil || !strings.Contains(err.Error(), "murmur2") {
		t.Errorf("unknown partitioner: %v", err)
	}
}
