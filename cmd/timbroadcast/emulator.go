package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// emulatorCmd is `timbroadcast emulator`: an emulator of send_broadcast_msg
// served until the context ends.
type emulatorCmd struct {
	addr   string
	opts   sendertest.Options
	logger *zap.Logger
	stdout io.Writer
}

// parseEmulator resolves the emulator's settings.
func parseEmulator(p process, args []string) (*emulatorCmd, error) {
	s := p.settings("emulator")
	addr := s.add("addr", "EMULATOR_ADDR", "127.0.0.1:8080", "address to listen on")
	creds := addCredentialSettings(s, "the emulated app's")
	rate := s.add("rate", "EMULATOR_RATE", "1", "the app's limit in calls per second (10023 above it); 0 for none")
	window := s.add("dedupe-window", "EMULATOR_DEDUPE_WINDOW", "5m", "how long a Random is remembered for dedupe")
	internal := s.add("internal-error-rate", "EMULATOR_INTERNAL_ERROR_RATE", "0", "fraction of calls answered 10002")
	badGateway := s.add("bad-gateway-rate", "EMULATOR_BAD_GATEWAY_RATE", "0", "fraction of calls answered HTTP 502")
	drop := s.add("drop-rate", "EMULATOR_DROP_RATE", "0", "fraction of calls processed and then dropped without an answer")
	latency := s.add("latency", "EMULATOR_LATENCY", "0s", "delay before every answer")
	answers := s.add("answer", "EMULATOR_ANSWER", "", "answer ErrorCodes to a fraction of calls: CODE[:FRACTION], comma-separated (e.g. 70009 or 10002:0.3,10023:0.1)")
	limiter := s.add("limiter", "EMULATOR_LIMITER", "bucket", "rate-limit model: "+strings.Join(sendertest.Limiters, ", "))
	accounts := s.add("accounts", "EMULATOR_ACCOUNTS", "", "accounts that exist besides the admin, comma-separated; another From_Account is answered 10019 [default: any]")
	featureOff := s.boolFlag("feature-off", "answer 10007 to every call (broadcast switched off in the console)")
	if err := s.parse(args); err != nil {
		return nil, err
	}
	c := &emulatorCmd{addr: addr.String(), logger: p.logger, stdout: p.stdout}
	o := &c.opts
	var err error
	if o.AppID, o.Admin, o.SecretKey, err = creds.resolve(); err != nil {
		return nil, err
	}
	if o.Rate, err = strconv.ParseFloat(rate.String(), 64); err != nil || o.Rate < 0 {
		return nil, rate.errorf("%q is not a number of calls per second", rate.val)
	}
	if o.DedupeWindow, err = window.duration(); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		st  *setting
		dst *float64
	}{{internal, &o.Faults.InternalErrorRate}, {badGateway, &o.Faults.BadGatewayRate}, {drop, &o.Faults.DropAfterProcessRate}} {
		v, err := strconv.ParseFloat(f.st.String(), 64)
		if err != nil || v < 0 || v > 1 {
			return nil, f.st.errorf("%q is not a fraction between 0 and 1", f.st.val)
		}
		*f.dst = v
	}
	if o.Faults.Latency, err = latency.duration(); err != nil {
		return nil, err
	}
	o.Faults.FeatureOff = *featureOff
	for _, a := range answers.list() {
		code, frac, found := strings.Cut(a, ":")
		n, err := strconv.Atoi(code)
		f := 1.0
		if err == nil && found {
			f, err = strconv.ParseFloat(frac, 64)
		}
		if err != nil || n <= 0 || f <= 0 || f > 1 {
			return nil, answers.errorf("%q is not CODE or CODE:FRACTION with a fraction in (0, 1]", a)
		}
		if o.Faults.Answers == nil {
			o.Faults.Answers = map[int]float64{}
		}
		o.Faults.Answers[n] = f
	}
	o.Limiter = limiter.String()
	if accounts.String() != "" {
		o.Accounts = accounts.list()
	}
	if err := o.Validate(); err != nil {
		return nil, limiter.errorf("%v", err)
	}
	return c, nil
}

func (c *emulatorCmd) secrets() []string { return []string{c.opts.SecretKey} }

// Run serves the emulator until ctx ends.
func (c *emulatorCmd) Run(ctx context.Context) error {
	emu := sendertest.NewHandler(c.opts)
	l, err := net.Listen("tcp", c.addr)
	if err != nil {
		return configError{fmt.Errorf("EMULATOR_ADDR (--addr): cannot listen: %w", err)}
	}
	srv := &http.Server{Handler: emu, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }() // awaited below
	fmt.Fprintf(c.stdout, "emulator listening on http://%s (SDKAppID %d, admin %s, %g calls/s)\n", l.Addr(), c.opts.AppID, c.opts.Admin, c.opts.Rate)
	c.logger.Info("emulator started", zap.String("addr", l.Addr().String()))
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
	fmt.Fprintf(c.stdout, "emulator stopped: %d calls, %d delivered, %d duplicates\n", st.Calls, st.Delivered, st.Duplicates)
	return nil
}
