package main

import (
	"context"
	"fmt"
	"io"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
)

// version is this build's release (CHANGELOG.md's first section); a
// build may set it: go build -ldflags "-X main.version=0.9.0-rc1".
var version = "0.12.6"

// versionCmd is `timbroadcast version`.
type versionCmd struct{ stdout io.Writer }

func parseVersion(p process, args []string) (*versionCmd, error) {
	s := p.settings("version")
	if err := s.parse(args); err != nil {
		return nil, err
	}
	return &versionCmd{stdout: p.stdout}, nil
}

// Run prints the version, the Go release and the platform.
func (c *versionCmd) Run(context.Context) error {
	fmt.Fprintf(c.stdout, "timbroadcast %s (%s %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}

// clientID is the Kafka client id of this build: brokers and `status` see
// which release each member runs.
func clientID() string { return "timbroadcast-" + version }

// registerBuildInfo registers timbroadcast_build_info{version,goversion} 1.
func registerBuildInfo(reg prometheus.Registerer) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "timbroadcast_build_info", Help: "Always 1: the release this process runs and the Go release that built it.",
	}, []string{"version", "goversion"})
	g.WithLabelValues(version, runtime.Version()).Set(1)
	reg.MustRegister(g)
}
