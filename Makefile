# timbroadcast: build, test, demo.
GO             ?= go
STATICCHECK    := honnef.co/go/tools/cmd/staticcheck@v0.8.2
BIN            := $(CURDIR)/bin
FUZZTIME       ?= 3000x
export PATH    := $(BIN):$(PATH)

.PHONY: all build build-lean test test-short lint fmt-check tidy-check vet staticcheck unit fuzz bench demo clean

all: build

## build: the binary, at bin/timbroadcast: static and stripped, as deploy/Dockerfile
## builds it (without libc mapped it holds about 2 MB less memory: BenchmarkPeakRSS)
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o $(BIN)/timbroadcast ./cmd/timbroadcast

## build-lean: bin/timbroadcast-lean, without the OTLP exporters, AWS_MSK_IAM, Protobuf
## schemas and the demo's in-process broker (-tags lean): about 21 MB resident, not 30
build-lean:
	CGO_ENABLED=0 $(GO) build -tags lean -trimpath -ldflags "-s -w" -o $(BIN)/timbroadcast-lean ./cmd/timbroadcast

## test: everything CI runs: format, vet, staticcheck, race tests, short fuzzing
test: lint unit fuzz

## test-short: the fast tier alone (no broker, no binary): seconds
test-short:
	$(GO) test -short -count=1 ./...

lint: fmt-check tidy-check vet staticcheck

## tidy-check: go.mod and go.sum are exactly what go mod tidy makes
tidy-check:
	@$(GO) mod tidy -diff || { echo "go.mod/go.sum are not tidy: run go mod tidy"; exit 1; }

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

# vet and staticcheck also check the lean build's files.
vet:
	$(GO) vet ./...
	$(GO) vet -tags lean ./...

$(BIN)/staticcheck:
	GOBIN=$(BIN) $(GO) install $(STATICCHECK)

staticcheck: $(BIN)/staticcheck
	$(BIN)/staticcheck ./...
	$(BIN)/staticcheck -tags lean ./...

unit:
	$(GO) test -race -count=1 -timeout 15m ./...

## fuzz: each fuzz target for FUZZTIME, counted in executions, not seconds: on Go 1.26 a
## duration budget can fail at its deadline on a loaded machine with no failing input (Go
## issue 75804). make fuzz FUZZTIME=10m for a long run on a quiet machine
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
	  for target in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/func //'); do \
	    echo "fuzz $$pkg $$target ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

## bench: the benchmarks (about ten minutes: the rate ones run real binaries for 20 s each)
bench:
	$(GO) test -run '^$$' -bench . -benchtime 1x ./...

## demo: the product on its embedded default (in-process Kafka and API emulator)
demo:
	$(GO) run ./cmd/timbroadcast demo

clean:
	rm -rf $(BIN)
