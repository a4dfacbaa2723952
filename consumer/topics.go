package consumer

import (
	"sort"
	"strconv"

	"github.com/timbroadcast/timbroadcast/consumer/metrics"
	"github.com/timbroadcast/timbroadcast/consumer/schedule"
)

// topicPartition names one partition of one of the worker's topics.
type topicPartition struct {
	topic     string
	partition int
	// app, when set, names one app's share of the partition (several
	// apps in one deployment): its stream's holds are its own.
	app string
}

func (tp topicPartition) String() string {
	s := tp.topic + "/" + strconv.Itoa(tp.partition)
	if tp.app != "" {
		s += " (app " + tp.app + ")"
	}
	return s
}

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
		if ps[i].partition != ps[j].partition {
			return ps[i].partition < ps[j].partition
		}
		return ps[i].app < ps[j].app
	})
}

// metricsPartitions are ps as the metrics name them.
func metricsPartitions(ps []topicPartition) []metrics.Partition {
	out := make([]metrics.Partition, len(ps))
	for i, tp := range ps {
		out[i] = metrics.Partition{Topic: tp.topic, Partition: tp.partition}
	}
	return out
}
