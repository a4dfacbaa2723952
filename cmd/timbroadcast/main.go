// Command timbroadcast delivers broadcast events from a Kafka topic to
// Tencent Cloud Chat's send_broadcast_msg API, exactly once in effect.
//
//	timbroadcast demo       everything embedded: broker, API emulator, worker
//	timbroadcast run        the worker
//	timbroadcast emulator   an emulator of the API endpoint
//	timbroadcast publish    validate and produce announcements
//	timbroadcast replay     re-publish dead-letter records
//	timbroadcast forget     forget deliveries from an offset on, to broadcast them again on purpose
//	timbroadcast pause      stop an app's calls on every worker at once (resume starts them again)
//	timbroadcast apps check check an apps file (TIM_APPS_FILE): keys, regions, rates, duplicates
//	timbroadcast map        try a mapping (TIM_MAP) on records
//	timbroadcast status     the group at a glance
//	timbroadcast version    the release of this binary
//
// Run `timbroadcast COMMAND --help` for a command's settings.
//
// Every command has one shape: parseX reads its settings (flags, then
// environment variables, then defaults; groups.go declares the ones shared
// between commands) into an xCmd value, whose Run(ctx) does the work.
// Configuration is read here and nowhere else.
//
// Build tags leave parts out for a smaller process (deploy/README, Memory):
// nootlp (the OTLP exporters), nomskiam (AWS_MSK_IAM), noprotobuf
// (Protobuf schemas), noembedded (the demo's in-process broker), and lean
// for all four (make build-lean). A build refuses what it lacks at start,
// naming the setting; the start log lists it (left_out_of_build).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/timbroadcast/timbroadcast/consumer/kafkaconn"
)

const usage = `timbroadcast delivers broadcast events from Kafka to Tencent Cloud Chat
(send_broadcast_msg), exactly once in effect, at the rate the API allows.

Usage: timbroadcast COMMAND [flags]

Commands:
  demo       run broker, API emulator and worker in-process and show events arriving
  run        the worker: consume KAFKA_TOPIC and deliver each event
  emulator   serve an emulator of the send_broadcast_msg endpoint
  publish    validate and produce announcements (from flags or a JSON Lines file)
  replay     re-publish chosen dead-letter records to the main topic
  forget     forget what the delivered log remembers from an offset (or time) on, to broadcast it again
  pause      stop an app's calls on every worker at once, until resume (or --for); records wait
  resume     start the app's calls again after pause
  apps check check an apps file (TIM_APPS_FILE): each key signs a UserSig, regions, rates, duplicates
  map        try a mapping (TIM_MAP, Schema Registry) on records: what each would become
  status     the group at a glance: members, lag and what is in flight per partition, dead letters
  version    the release of this binary

Run 'timbroadcast COMMAND --help' for the settings of a command.
`

// command is a subcommand whose settings are resolved.
type command interface {
	Run(ctx context.Context) error
}

// process is what a command may use of its process.
type process struct {
	getenv         func(string) string
	logger         *zap.Logger
	stdout, stderr io.Writer
	// terminal says stderr is a terminal (progress bars).
	terminal bool
	// declared collects the command's settings (process.settings).
	declared *[]*settings
}

// commands parse their settings into a command; a settings error is
// reported with exit code 2.
var commands = map[string]func(p process, args []string) (command, error){
	"run":      func(p process, args []string) (command, error) { return parseRun(p, args) },
	"emulator": func(p process, args []string) (command, error) { return parseEmulator(p, args) },
	"map":      func(p process, args []string) (command, error) { return parseMap(p, args) },
	"status":   func(p process, args []string) (command, error) { return parseStatus(p, args) },
	"demo":     func(p process, args []string) (command, error) { return parseDemo(p, args) },
	"publish":  func(p process, args []string) (command, error) { return parsePublish(p, args) },
	"replay":   func(p process, args []string) (command, error) { return parseReplay(p, args) },
	"forget":   func(p process, args []string) (command, error) { return parseForget(p, args) },
	"pause":    func(p process, args []string) (command, error) { return parsePause(p, args) },
	"apps":     parseApps,
	"resume":   func(p process, args []string) (command, error) { return parseResume(p, args) },
	"version":  func(p process, args []string) (command, error) { return parseVersion(p, args) },
}

// setClientID names this release in the Kafka client id, once per process
// (before any connection).
var setClientID sync.Once

func main() {
	os.Exit(runMainEnv(os.Args[1:], os.Getenv, os.Environ, os.Stdout, os.Stderr))
}

// runMain runs a command and returns the process exit code: 0, 1 for a
// failure, 2 for a configuration error. The first SIGINT or SIGTERM
// drains; a second exits at once with 130.
func runMain(args []string, getenv func(string) string, rawStdout, rawStderr io.Writer) int {
	return runMainEnv(args, getenv, func() []string { return nil }, rawStdout, rawStderr)
}

// runMainEnv is runMain whose environment also lists its variables
// (environ, as os.Environ), for the unknown-variable check.
func runMainEnv(args []string, getenv func(string) string, environ func() []string, rawStdout, rawStderr io.Writer) int {
	stdout, stderr := &scrubWriter{w: rawStdout}, &scrubWriter{w: rawStderr}
	for _, name := range secretEnv {
		stdout.add(getenv(name))
		stderr.add(getenv(name))
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	name, rest := args[0], args[1:]
	if name == "--version" {
		name = "version"
	}
	setClientID.Do(func() { kafkaconn.ClientID = clientID() })
	parse, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "timbroadcast: unknown command %q\n\n%s", name, usage)
		return 2
	}
	logger, err := newLogger(getenv("LOG_LEVEL"), stderr, isTerminal(rawStderr))
	if err != nil {
		fmt.Fprintln(stderr, "timbroadcast:", err)
		return 2
	}
	defer func() { _ = logger.Sync() }()

	var declared []*settings
	cmd, err := parse(process{getenv: getenv, logger: logger, stdout: stdout, stderr: stderr, terminal: isTerminal(rawStderr),
		declared: &declared}, rest)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "timbroadcast %s: configuration error: %v\n", name, err)
		return 2
	}
	if err := checkEnviron(name, declared, environ(), logger); err != nil {
		fmt.Fprintf(stderr, "timbroadcast %s: configuration error: %v\n", name, err)
		return 2
	}
	if sh, ok := cmd.(secretHolder); ok {
		stdout.add(sh.secrets()...)
		stderr.add(sh.secrets()...)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() { // ends with the process: it exits or returns on cancel
		select {
		case <-sigs:
		case <-ctx.Done():
			return
		}
		logger.Info("signal received: draining (send it again to exit at once)")
		cancel()
		<-sigs
		logger.Warn("second signal: exiting at once")
		_ = logger.Sync()
		os.Exit(130)
	}()

	switch err := cmd.Run(ctx); {
	case err == nil:
		return 0
	case errors.As(err, new(configError)):
		fmt.Fprintf(stderr, "timbroadcast %s: configuration error: %v\n", name, err)
		return 2
	default:
		fmt.Fprintf(stderr, "timbroadcast %s: %v\n", name, err)
		return 1
	}
}

// configError marks a configuration error found only while running (a
// listen address in use, say): exit code 2.
type configError struct{ error }

func (e configError) Unwrap() error { return e.error }

// newLogger returns a JSON logger, or a console one when stderr is a
// terminal. level is LOG_LEVEL: debug, info (default), warn or error.
func newLogger(level string, w io.Writer, terminal bool) (*zap.Logger, error) {
	lvl := zapcore.InfoLevel
	if level != "" {
		if err := lvl.UnmarshalText([]byte(strings.ToLower(level))); err != nil {
			return nil, fmt.Errorf("LOG_LEVEL: %q is not one of debug, info, warn, error", level)
		}
	}
	var enc zapcore.Encoder
	if terminal {
		ec := zap.NewDevelopmentEncoderConfig()
		ec.EncodeLevel = zapcore.CapitalColorLevelEncoder
		ec.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
		enc = zapcore.NewConsoleEncoder(ec)
	} else {
		ec := zap.NewProductionEncoderConfig()
		ec.EncodeTime = zapcore.ISO8601TimeEncoder
		enc = zapcore.NewJSONEncoder(ec)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), lvl)), nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
