//go:build nootlp || lean

package main

import (
	"context"
	"errors"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// otlpBuilt reports whether this build has the OTLP exporters: not with
// the tag nootlp or lean, which spares the binary gRPC and the OTLP
// protobuf types (2 MB of resident memory). Spans can still go to the
// console; asking for OTLP fails at start, naming the variable.
const otlpBuilt = false

// newOTLPExporter is never reached in this build: resolve refuses OTLP.
func newOTLPExporter(context.Context, string) (sdktrace.SpanExporter, error) {
	return nil, errors.New("the OTLP exporters are not in this build")
}
