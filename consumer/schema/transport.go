package schema

import (
	"fmt"
	"io"
	"net/http"
)

// MaxAnswerBytes caps one registry answer: schemas are kilobytes, a
// large Protobuf file with its options a few hundred.
const MaxAnswerBytes = 8 << 20

// LimitAnswers returns rt with every answer's body cut off after max bytes
// (MaxAnswerBytes when max is 0): reading past it fails, so a registry (or
// whatever answers in its place) cannot make the worker hold an unbounded
// body. The error is a retryable one: the record waits, /readyz says why.
func LimitAnswers(rt http.RoundTripper, max int64) http.RoundTripper {
	if max <= 0 {
		max = MaxAnswerBytes
	}
	return limitedTransport{rt: rt, max: max}
}

type limitedTransport struct {
	rt  http.RoundTripper
	max int64
}

func (t limitedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.rt.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = &limitedBody{rc: resp.Body, left: t.max, max: t.max}
	return resp, nil
}

// limitedBody reads at most max bytes, then fails.
type limitedBody struct {
	rc   io.ReadCloser
	left int64
	max  int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		var one [1]byte
		if n, _ := b.rc.Read(one[:]); n == 0 {
			return 0, io.EOF
		}
		return 0, fmt.Errorf("schema registry answer larger than %d bytes", b.max)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }
