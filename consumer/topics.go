package consumer

import (
	"cmp"
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
	// commits, when set, names the partition's committer (its holds are
	// its own: a stream goes on sending while a commit is refused).
	commits bool
}

func (tp topicPartition) String() string {
	s := tp.topic + "/" + strconv.Itoa(tp.partition)
	switch {
	case tp.app != "":
		s += " (app " + tp.app + ")"
	case tp.commits:
		s += " (commits)"
	}
	return s
}

// committing is tp's committer.
func (tp topicPartition) committing() topicPartition {
	return topicPartition{topic: tp.topic, partition: tp.partition, commits: true}
}

// sched is tp as the call schedule names it.
func (tp topicPartition) sched() schedule.Partition {
	return schedule.Partition{Topic: tp.topic, Partition: tp.partition}
}

// comparePartitions orders by topic, then partition, then app.
func comparePartitions(a, b topicPartition) int {
	return cmp.Or(cmp.Compare(a.topic, b.topic), cmp.Compare(a.partition, b.partition), cmp.Compare(a.app, b.app),
		compareBool(a.commits, b.commits))
}

// compareBool orders false before true.
func compareBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// samePartition reports whether o is tp's partition (an app's share of
// it included).
func (tp topicPartition) samePartition(o topicPartition) bool {
	return o.topic == tp.topic && o.partition == tp.partition
}

// metricsPartitions are ps as the metrics name them.
func metricsPartitions(ps []topicPartition) []metrics.Partition {
	out := make([]metrics.Partition, len(ps))
	for i, tp := range ps {
		out[i] = metrics.Partition{Topic: tp.topic, Partition: tp.partition}
	}
	return out
}
