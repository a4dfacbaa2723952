//go:build !unix

package main

import "time"

// processCPU is not read here: GOMAXPROCS keeps the runtime's default.
func processCPU() (time.Duration, bool) { return 0, false }
