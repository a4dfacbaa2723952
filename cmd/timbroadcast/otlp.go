//go:build !nootlp && !lean

package main

import (
	"context"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// otlpBuilt reports whether this build has the OTLP exporters.
const otlpBuilt = true

// newOTLPExporter is the OTLP span exporter for protocol ("grpc" or
// "http/protobuf"), configured by the OTEL_EXPORTER_OTLP_* variables.
func newOTLPExporter(ctx context.Context, protocol string) (sdktrace.SpanExporter, error) {
	if protocol == "grpc" {
		return otlptracegrpc.New(ctx)
	}
	return otlptracehttp.New(ctx)
}
