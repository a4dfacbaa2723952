package consumer

import (
	"sort"
	"strconv"

	"github.com/timbroadcast/timbroadcast/consumer/schedule"
)

// topicPartition names one partition of one of the worker's topics.
type topicPartition struct {
	topic     string
	partition int
}

func (tp topicPartition) String() string { return tp.topic + "/" + strconv.Itoa(tp.partition) }

// sched is tp as the call schedule names it.
func (tp topicPartition) sched() schedule.Partition {
	return schedule.Partition{Topic: tp.topic, Partition: tp.partition}
}

// sortPartitions sorts by topic, then partition.
func sortPartitions(ps []topicPartition) {
	sort.Slice(ps, func(i, j int) bool {
		if ps[i].topic != ps[j].topic {
			return ps[i].topic < ps[j].topic
		}
		return ps[i].partition < ps[j].partition
	})
}
