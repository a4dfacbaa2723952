package metrics

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/timbroadcast/timbroadcast/consumer/wire"
)

// appsPage returns the metrics handler of a worker's metrics with every
// per-app series of apps apps set (each app delivered, dead-lettered,
// filtered and found already delivered; one in fifty paused; each with a
// record waiting), as timbroadcast run serves it.
func appsPage(apps int) http.Handler {
	reg := prometheus.NewRegistry()
	m := New(reg)
	now := time.Now()
	for i := range apps {
		name := fmt.Sprintf("tenant-%04d", i) // names are at most 32 bytes; these are 11
		for _, o := range []string{wire.OutcomeDelivered, wire.OutcomeDeadLettered, wire.OutcomeFiltered, wire.OutcomeAlreadyDelivered} {
			m.RecordAppEvents(name, o, 1)
		}
		m.SetAppPaused(name, i%50 == 0)
		m.SetAppLastCall(name, now)
		m.SetAppOldestWaiting(name, now)
	}
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}

// render is one GET of the metrics page h serves.
func render(h http.Handler) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec
}

// TestMetricsPageOfThousandApps: with 1,000 apps, every per-app series
// set, the metrics page stays under 1 MB: per-app series are counters and
// gauges, a few per app, no histogram.
func TestMetricsPageOfThousandApps(t *testing.T) {
	rec := render(appsPage(1000))
	if rec.Code != 200 {
		t.Fatalf("metrics page: HTTP %d", rec.Code)
	}
	n := rec.Body.Len()
	t.Logf("metrics page of 1,000 apps: %d bytes", n)
	if n > 1<<20 {
		t.Errorf("metrics page of 1,000 apps is %d bytes, want under 1 MB", n)
	}
}

// BenchmarkMetricsPage renders the metrics page of 1,000 apps, every
// per-app series set (ns/op is one render, uncompressed, as Prometheus
// asks without Accept-Encoding), and reports its size:
//
//	go test -run '^$' -bench MetricsPage ./consumer
func BenchmarkMetricsPage(b *testing.B) {
	h := appsPage(1000)
	var bytes int
	for b.Loop() {
		bytes = render(h).Body.Len()
	}
	b.ReportMetric(float64(bytes), "page-bytes")
}
