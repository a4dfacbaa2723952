package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/propagators/autoprop"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
)

// tracingSettings is the OpenTelemetry tracing the standard OTEL_*
// environment variables ask for. Tracing is off unless an exporter is
// set: OTEL_TRACES_EXPORTER=otlp or console, or an OTLP endpoint
// (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT).
// OTEL_SDK_DISABLED=true turns it off. The exporters and the SDK read the
// rest themselves: endpoint, headers, timeout, certificates, compression
// (OTEL_EXPORTER_OTLP_*), the sampler (OTEL_TRACES_SAMPLER, default
// parentbased_always_on), batching (OTEL_BSP_*) and the resource
// (OTEL_SERVICE_NAME, default "timbroadcast"; OTEL_RESOURCE_ATTRIBUTES).
// OTEL_PROPAGATORS chooses the trace headers read from and written to
// records, tracing on or off (default tracecontext,baggage).
type tracingSettings struct {
	otlp       string // "" (no OTLP exporter), "http/protobuf" or "grpc"
	console    bool   // spans as JSON on stderr
	stderr     io.Writer
	propagator propagation.TextMapPropagator
}

// tracingGroup is a command's OTEL_* variables: its help names them, and
// resolve reads them once the flags are parsed.
type tracingGroup struct {
	p process
}

func addTracingSettings(s *settings, p process) *tracingGroup {
	s.tracing = true
	return &tracingGroup{p}
}

// resolve reads the tracing settings, naming the variable at fault.
func (g *tracingGroup) resolve() (*tracingSettings, error) {
	p := g.p
	prop, err := propagatorFrom(p.getenv("OTEL_PROPAGATORS"))
	if err != nil {
		return nil, err
	}
	t := &tracingSettings{stderr: p.stderr, propagator: prop}
	if strings.EqualFold(strings.TrimSpace(p.getenv("OTEL_SDK_DISABLED")), "true") {
		return t, nil
	}
	endpoint := p.getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" || p.getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != ""
	exporters := strings.TrimSpace(p.getenv("OTEL_TRACES_EXPORTER"))
	otlp := false
	if exporters == "" {
		otlp = endpoint
	}
	for _, e := range strings.Split(exporters, ",") {
		switch strings.TrimSpace(e) {
		case "":
		case "otlp":
			otlp = true
		case "console":
			t.console = true
		case "none":
			if len(strings.Split(exporters, ",")) > 1 {
				return nil, errors.New(`OTEL_TRACES_EXPORTER: "none" cannot be combined with other exporters`)
			}
		default:
			return nil, fmt.Errorf("OTEL_TRACES_EXPORTER: %q is not one of otlp, console, none", e)
		}
	}
	if !otlp {
		return t, nil
	}
	name, proto := "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", p.getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if proto == "" {
		name, proto = "OTEL_EXPORTER_OTLP_PROTOCOL", p.getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	switch proto {
	case "", "http/protobuf":
		t.otlp = "http/protobuf"
	case "grpc":
		t.otlp = "grpc"
	default:
		return nil, fmt.Errorf("%s: %q is not one of http/protobuf (default), grpc", name, proto)
	}
	if !otlpBuilt {
		asked := "OTEL_TRACES_EXPORTER"
		if exporters == "" {
			asked = "OTEL_EXPORTER_OTLP_ENDPOINT"
			if p.getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" {
				asked = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
			}
		}
		return nil, fmt.Errorf("%s: the OTLP exporters are not in this build (built with -tags nootlp or lean); console is, or use a build without them", asked)
	}
	return t, nil
}

// on reports whether spans are exported.
func (t *tracingSettings) on() bool { return t != nil && (t.otlp != "" || t.console) }

// start returns the tracer provider and its shutdown (which flushes
// the spans not yet exported), or (nil, no-op) when tracing is off.
func (t *tracingSettings) start(ctx context.Context, log *zap.Logger) (trace.TracerProvider, func(), error) {
	if !t.on() {
		return nil, func() {}, nil
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName("timbroadcast")),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES win
	)
	if err != nil {
		return nil, nil, configError{fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err)}
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	if t.otlp != "" {
		exp, err := newOTLPExporter(ctx, t.otlp)
		if err != nil {
			return nil, nil, configError{fmt.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT: %w", err)}
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	if t.console {
		exp, err := stdouttrace.New(stdouttrace.WithWriter(t.stderr))
		if err != nil {
			return nil, nil, err
		}
		opts = append(opts, sdktrace.WithSyncer(exp))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("tracing: export failed", zap.Error(err)) }))
	log.Info("tracing on", zap.String("otlp_protocol", t.otlp), zap.Bool("console", t.console))
	return tp, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tp.Shutdown(sctx); err != nil {
			log.Warn("tracing: spans not exported at exit", zap.Error(err))
		}
	}, nil
}

// propagators are the values OTEL_PROPAGATORS takes, as the OpenTelemetry
// specification names them.
const propagators = "tracecontext, baggage, b3, b3multi, jaeger, xray, ottrace, none"

// propagatorFrom is the propagator OTEL_PROPAGATORS names (a comma-separated
// list; empty means tracecontext,baggage, the specification's default).
func propagatorFrom(v string) (propagation.TextMapPropagator, error) {
	var names []string
	for _, n := range strings.Split(v, ",") {
		if n = strings.ToLower(strings.TrimSpace(n)); n != "" {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		names = []string{"tracecontext", "baggage"}
	}
	prop, err := autoprop.TextMapPropagator(names...)
	if err != nil {
		return nil, fmt.Errorf("OTEL_PROPAGATORS: %w (known: %s)", err, propagators)
	}
	return prop, nil
}
