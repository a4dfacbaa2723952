package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// runEmulator serves an emulator of send_broadcast_msg until ctx ends.
func runEmulator(ctx context.Context, args []string, getenv func(string) string, logger *zap.Logger, stdout io.Writer) error {
	s := newSettings("emulator", getenv)
	addr := s.add("addr", "EMULATOR_ADDR", "127.0.0.1:8080", "address to listen on")
	appID := s.add("sdkappid", "TIM_SDKAPPID", "", "the emulated app's SDKAppID")
	admin := s.add("admin", "TIM_ADMIN", "", "the emulated app's admin identifier")
	key := s.add("secret-key", "TIM_SECRET_KEY", "", "the emulated app's secret key")
	keyFile := s.add("secret-key-file", "TIM_SECRET_KEY_FILE", "", "file holding the emulated app's secret key")
	rate := s.add("rate", "EMULATOR_RATE", "1", "the app's limit in calls per second (10023 above it); 0 for none")
	window := s.add("dedupe-window", "EMULATOR_DEDUPE_WINDOW", "5m", "how long a Random is remembered for dedupe")
	internal := s.add("internal-error-rate", "EMULATOR_INTERNAL_ERROR_RATE", "0", "fraction of calls answered 10002")
	badGateway := s.add("bad-gateway-rate", "EMULATOR_BAD_GATEWAY_RATE", "0", "fraction of calls answered HTTP 502")
	drop := s.add("drop-rate", "EMULATOR_DROP_RATE", "0", "fraction of calls processed and then dropped without an answer")
	latency := s.add("latency", "EMULATOR_LATENCY", "0s", "delay before every answer")
	featureOff := s.boolFlag("feature-off", "answer 10007 to every call (broadcast switched off in the console)")
	if err := s.parse(args); err != nil {
		return configError{err}
	}
	opts := sendertest.Options{}
	var err error
	id, err := appID.required()
	if err != nil {
		return configError{err}
	}
	if opts.AppID, err = strconv.Atoi(id); err != nil || opts.AppID <= 0 {
		return configError{appID.errorf("%q is not a positive number", id)}
	}
	if opts.Admin, err = admin.required(); err != nil {
		return configError{err}
	}
	if opts.SecretKey, err = secretKey(key, keyFile); err != nil {
		return configError{err}
	}
	if opts.Rate, err = strconv.ParseFloat(rate.String(), 64); err != nil || opts.Rate < 0 {
		return configError{rate.errorf("%q is not a number of calls per second", rate.val)}
	}
	if opts.DedupeWindow, err = window.duration(); err != nil {
		return configError{err}
	}
	for _, f := range []struct {
		st  *setting
		dst *float64
	}{{internal, &opts.Faults.InternalErrorRate}, {badGateway, &opts.Faults.BadGatewayRate}, {drop, &opts.Faults.DropAfterProcessRate}} {
		v, err := strconv.ParseFloat(f.st.String(), 64)
		if err != nil || v < 0 || v > 1 {
			return configError{f.st.errorf("%q is not a fraction between 0 and 1", f.st.val)}
		}
		*f.dst = v
	}
	if opts.Faults.Latency, err = latency.duration(); err != nil {
		return configError{err}
	}
	opts.Faults.FeatureOff = *featureOff

	emu := sendertest.NewHandler(opts)
	l, err := net.Listen("tcp", addr.String())
	if err != nil {
		return configError{addr.errorf("cannot listen: %v", err)}
	}
	srv := &http.Server{Handler: emu, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	fmt.Fprintf(stdout, "emulator listening on http://%s (SDKAppID %d, admin %s, %g calls/s)\n", l.Addr(), opts.AppID, opts.Admin, opts.Rate)
	logger.Info("emulator started", zap.String("addr", l.Addr().String()))
	select {
	case <-ctx.Done():
	case err := <-errc:
		return fmt.Errorf("emulator: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	<-errc
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	st := emu.Stats()
	fmt.Fprintf(stdout, "emulator stopped: %d calls, %d delivered, %d duplicates\n", st.Calls, st.Delivered, st.Duplicates)
	return nil
}
