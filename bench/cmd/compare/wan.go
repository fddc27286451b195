package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/pulsyflux/tcp-conn/bench"
)

// printWAN prints the wide-area table: one bulk flow through a delaying
// proxy, throughput and what it implies is kept in flight per round trip.
func printWAN(w io.Writer, workloads []bench.Workload, results map[string]map[string]*result, cells map[string][]bench.Transport, benchtime time.Duration, short bool) {
	fmt.Fprintf(w, "\nWide area: one logical connection streams 64 KiB messages one way through a proxy on 127.0.0.1\nthat delays each direction by half the round-trip time (RTT), bandwidth unlimited:\n")
	fmt.Fprintf(w, "%-12s %-14s %9s %7s %7s %10s\n", "workload", "transport", "MB/s", "spread", "of raw", "per RTT")
	var passLengths []string
	for _, wl := range workloads {
		passLengths = append(passLengths, fmt.Sprintf("%v for %s", max(benchtime, wl.MinBenchtime()), wl.Name))
	}
	eachResult(w, workloads, results, cells, func(wl bench.Workload, tr bench.Transport, r *result) {
		ofRaw := "-"
		if raw := results[wl.Name]["raw"]; raw != nil && raw.failed == "" && raw.mbs > 0 {
			ofRaw = fmt.Sprintf("%.3f", r.mbs/raw.mbs)
		}
		spread := "-"
		if r.passes > 1 {
			spread = fmt.Sprintf("%.0f%%", 100*r.spread)
		}
		inFlight := r.mbs * 1e6 * wl.PathRTT.Seconds() // bytes per round trip
		fmt.Fprintf(w, "%-12s %-14s %9.1f %7s %7s %10s\n", wl.Name, tr.Name, r.mbs, spread, ofRaw, fmtBinary(inFlight))
	})
	fmt.Fprintf(w, `  MB/s     payload the server received and checked per second (1 MB = 10^6 bytes), measured
           after the first message and a warm-up of 10 RTTs (3 with -short); median over passes.
           A pass lasts max(-benchtime, 30 RTTs): here %s.
  spread   (slowest - fastest pass) / median, of the time per message.
  of raw   MB/s divided by raw's on the same path: raw has no flow control, so it shows what the
           path (the proxy and this machine's loopback) carries.
  per RTT  MB/s x RTT: the bytes delivered per round trip; for a flow limited by a window, that
           window (raw and smux have none: for them it only restates MB/s). Expected caps:
           tcpconn its StreamWindow (1 MiB by default, before auto-tuning); yamux its 256 KiB
           window, of which it keeps about 128 KiB in flight here (it returns credit once it owes
           half its window, and 4-byte prefixes on 64 KiB messages leave the second half 8 bytes
           short); smux (v1, default config) has no per-stream window, only a 4 MiB receive buffer
           that pushes back through TCP, and TCP ends at the proxy, so it moves like raw; grpc
           the windows its BDP estimator grows by pinging, at most 16 MiB.
  The proxy terminates both TCP connections on loopback, so the kernel's buffers and congestion
  control never see the delay: only a protocol's own window does (as on a well-tuned long path).
  It reads as data arrives and writes each read when due, holding up to 128 MiB per direction
  (a cap of 2.7 GB/s at 100 ms, above what it forwards here).
`, strings.Join(passLengths, ", "))
	if short {
		fmt.Fprint(w, "  -short: only WAN20ms, with a warm-up of 3 RTTs (a smoke run).\n")
	}
}

// fmtBinary writes n bytes in KiB or MiB (the chart's fmtBytes is decimal).
func fmtBinary(n float64) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%.2f MiB", n/(1<<20))
	}
	return fmt.Sprintf("%.0f KiB", n/(1<<10))
}
