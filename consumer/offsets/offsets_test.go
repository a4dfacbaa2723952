package offsets

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/consumer/wire"
)

// fakeClient is a Client whose calls are functions set by the test.
type fakeClient struct {
	metadata     func(*kafka.MetadataRequest) (*kafka.MetadataResponse, error)
	offsetFetch  func(*kafka.OffsetFetchRequest) (*kafka.OffsetFetchResponse, error)
	offsetCommit func(*kafka.OffsetCommitRequest) (*kafka.OffsetCommitResponse, error)
	listOffsets  func(*kafka.ListOffsetsRequest) (*kafka.ListOffsetsResponse, error)
}

func (f *fakeClient) ListOffsets(_ context.Context, r *kafka.ListOffsetsRequest) (*kafka.ListOffsetsResponse, error) {
	return f.listOffsets(r)
}

func (f *fakeClient) Metadata(_ context.Context, r *kafka.MetadataRequest) (*kafka.MetadataResponse, error) {
	return f.metadata(r)
}

func (f *fakeClient) OffsetFetch(_ context.Context, r *kafka.OffsetFetchRequest) (*kafka.OffsetFetchResponse, error) {
	return f.offsetFetch(r)
}

func (f *fakeClient) OffsetCommit(_ context.Context, r *kafka.OffsetCommitRequest) (*kafka.OffsetCommitResponse, error) {
	return f.offsetCommit(r)
}

func testOffsets(c Client) *Partition {
	return &Partition{Client: c, Group: "g", Generation: 7, Member: "m-1", Topic: "t", Partition: 2, RetryWait: time.Millisecond}
}

// commitAnswers answers OffsetCommit with the given errors in turn (nil
// for success) and records the requests.
func commitAnswers(reqs *[]*kafka.OffsetCommitRequest, errs ...error) *fakeClient {
	return &fakeClient{offsetCommit: func(r *kafka.OffsetCommitRequest) (*kafka.OffsetCommitResponse, error) {
		*reqs = append(*reqs, r)
		var err error
		if len(errs) > 0 {
			err, errs = errs[0], errs[1:]
		}
		return &kafka.OffsetCommitResponse{Topics: map[string][]kafka.OffsetCommitPartition{
			"t": {{Partition: 2, Error: err}},
		}}, nil
	}}
}

func TestCommitCarriesGenerationAndMetadata(t *testing.T) {
	var reqs []*kafka.OffsetCommitRequest
	meta := wire.InFlight{Last: 12, Random: 99}.String()
	if err := testOffsets(commitAnswers(&reqs)).Commit(context.Background(), 10, meta, nil); err != nil {
		t.Fatal(err)
	}
	if len(reqs) != 1 {
		t.Fatalf("%d commit requests, want 1", len(reqs))
	}
	r := reqs[0]
	got := r.Topics["t"]
	if r.GroupID != "g" || r.GenerationID != 7 || r.MemberID != "m-1" || len(got) != 1 ||
		got[0].Partition != 2 || got[0].Offset != 10 || got[0].Metadata != meta {
		t.Errorf("commit request %+v %+v, want group g generation 7 member m-1 partition 2 offset 10 metadata %q", r, got, meta)
	}
}

func TestCommitRetriesTransientErrors(t *testing.T) {
	var reqs []*kafka.OffsetCommitRequest
	err := testOffsets(commitAnswers(&reqs, kafka.RequestTimedOut, kafka.NotCoordinatorForGroup)).Commit(context.Background(), 5, "", nil)
	if err != nil {
		t.Fatalf("commit after two transient errors: %v", err)
	}
	if len(reqs) != 3 {
		t.Errorf("%d attempts, want 3", len(reqs))
	}
}

func TestCommitStopsWhenTheGenerationIsGone(t *testing.T) {
	var reqs []*kafka.OffsetCommitRequest
	for _, gone := range []kafka.Error{kafka.IllegalGeneration, kafka.UnknownMemberId, kafka.RebalanceInProgress, kafka.FencedInstanceID} {
		reqs = nil
		err := testOffsets(commitAnswers(&reqs, gone)).Commit(context.Background(), 5, "", nil)
		if !errors.Is(err, gone) || !errors.Is(err, ErrGenerationGone) || !strings.Contains(err.Error(), "commit offset 5") {
			t.Fatalf("commit = %v, want %v (generation gone) naming the offset", err, gone)
		}
		if len(reqs) != 1 {
			t.Errorf("%v: %d attempts, want 1 (a refused generation is final)", gone, len(reqs))
		}
	}
}

// A commit an ACL refuses is not a lost generation: it is retried (the
// partition holds) until it is accepted, each refusal seen by the hook.
func TestCommitRefusedByACLHolds(t *testing.T) {
	for _, refusal := range []kafka.Error{kafka.GroupAuthorizationFailed, kafka.TopicAuthorizationFailed, kafka.OffsetMetadataTooLarge} {
		var reqs []*kafka.OffsetCommitRequest
		var seen []error
		o := testOffsets(commitAnswers(&reqs, refusal, refusal, refusal, refusal))
		err := o.Commit(context.Background(), 5, "", func(err error, attempt int) {
			seen = append(seen, err)
			if attempt != len(seen) {
				t.Errorf("attempt %d, want %d", attempt, len(seen))
			}
		})
		if err != nil {
			t.Fatalf("%v: commit = %v, want it accepted once the refusals stop", refusal, err)
		}
		if len(reqs) != 5 || len(seen) != 4 || !errors.Is(seen[0], refusal) {
			t.Errorf("%v: %d requests and %d refusals seen (%v), want 5 and 4", refusal, len(reqs), len(seen), seen)
		}
		if o.CommitHint(refusal) == "" {
			t.Errorf("%v: no hint for the operator", refusal)
		}
	}
	// Refused until the context ends: the error says so, and is not a lost
	// generation.
	var reqs []*kafka.OffsetCommitRequest
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	refusals := make([]error, 1000)
	for i := range refusals {
		refusals[i] = kafka.GroupAuthorizationFailed
	}
	err := testOffsets(commitAnswers(&reqs, refusals...)).Commit(ctx, 5, "", nil)
	if err == nil || errors.Is(err, ErrGenerationGone) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("commit refused until the deadline = %v, want the deadline, not a lost generation", err)
	}
}

func TestReadCommittedAndInFlight(t *testing.T) {
	answer := func(committed int64, meta string) *fakeClient {
		return &fakeClient{offsetFetch: func(r *kafka.OffsetFetchRequest) (*kafka.OffsetFetchResponse, error) {
			if r.GroupID != "g" || len(r.Topics["t"]) != 1 || r.Topics["t"][0] != 2 {
				t.Errorf("offset fetch request %+v", r)
			}
			return &kafka.OffsetFetchResponse{Topics: map[string][]kafka.OffsetFetchPartition{
				"t": {{Partition: 2, CommittedOffset: committed, Metadata: meta}},
			}}, nil
		}}
	}
	tests := []struct {
		name      string
		committed int64
		meta      string
		want      *wire.InFlight
	}{
		{"recorded call", 40, "tb1 43 123456", &wire.InFlight{Last: 43, Random: 123456}},
		{"plain commit", 40, "", nil},
		{"other tool's metadata", 40, "owner=someone", nil},
		{"stale record", 44, "tb1 43 123456", nil},
		{"several apps", 40, "tb2 1400000001 42 43 9;1400000002 40 40 8", &wire.InFlight{Last: 43, Random: 9}},
		{"nothing committed", -1, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			committed, f, err := testOffsets(answer(tt.committed, tt.meta)).Read(context.Background(), zap.NewNop())
			if err != nil || committed != tt.committed || (f == nil) != (tt.want == nil) || (f != nil && f[0].InFlight != *tt.want) {
				t.Errorf("read = %d, %+v, %v; want %d, %+v", committed, f, err, tt.committed, tt.want)
			}
		})
	}
}

// TestReadRetriesGroupErrors: a group-level error in the answer
// (COORDINATOR_LOAD_IN_PROGRESS) or a failed request is retried, never
// taken as "nothing in flight".
func TestReadRetriesGroupErrors(t *testing.T) {
	calls := 0
	c := &fakeClient{offsetFetch: func(*kafka.OffsetFetchRequest) (*kafka.OffsetFetchResponse, error) {
		calls++
		switch calls {
		case 1:
			return nil, errors.New("connection refused")
		case 2:
			return &kafka.OffsetFetchResponse{Error: kafka.GroupLoadInProgress}, nil
		case 3:
			return &kafka.OffsetFetchResponse{Topics: map[string][]kafka.OffsetFetchPartition{
				"t": {{Partition: 2, Error: kafka.NotCoordinatorForGroup}},
			}}, nil
		}
		return &kafka.OffsetFetchResponse{Topics: map[string][]kafka.OffsetFetchPartition{
			"t": {{Partition: 2, CommittedOffset: 40, Metadata: "tb1 41 7"}},
		}}, nil
	}}
	committed, f, err := testOffsets(c).Read(context.Background(), zap.NewNop())
	if err != nil || committed != 40 || f == nil || f[0].Last != 41 || calls != 4 {
		t.Fatalf("read = %d, %+v, %v after %d calls; want the in-flight record after 4", committed, f, err, calls)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	failing := &fakeClient{offsetFetch: func(*kafka.OffsetFetchRequest) (*kafka.OffsetFetchResponse, error) {
		return &kafka.OffsetFetchResponse{Error: kafka.GroupLoadInProgress}, nil
	}}
	if _, _, err := testOffsets(failing).Read(ctx, zap.NewNop()); err == nil {
		t.Error("read returned without the offset and without an error")
	}
}

func TestBounds(t *testing.T) {
	c := &fakeClient{listOffsets: func(r *kafka.ListOffsetsRequest) (*kafka.ListOffsetsResponse, error) {
		return &kafka.ListOffsetsResponse{Topics: map[string][]kafka.PartitionOffsets{"t": {{Partition: 2, FirstOffset: 5, LastOffset: 9}}}}, nil
	}}
	first, last, err := testOffsets(c).Bounds(context.Background())
	if err != nil || first != 5 || last != 9 {
		t.Errorf("bounds = %d, %d, %v", first, last, err)
	}
}
