package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/pulsyflux/tcp-conn/bench"
)

// The Budget table: how much of the server's heap a fleet of
// well-behaved clients can occupy with messages the server never claims
// (bench.MeasureFleet). One run per fleet size: the fill is deterministic
// up to scheduling, and each run moves gigabytes.

// budgetGoal is the library's target for the heap's rise under this
// fleet, by fleet size.
var budgetGoal = map[int]uint64{50: 512 << 20, 200: 600 << 20}

// budgetSizes parses -budget-sockets; empty means 50, and 200 too with -all.
func budgetSizes(list string, all bool) ([]int, error) {
	if list == "" {
		if all {
			return []int{50, 200}, nil
		}
		return []int{50}, nil
	}
	var ns []int
	for _, f := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-budget-sockets: %q is not a positive number", f)
		}
		ns = append(ns, n)
	}
	return ns, nil
}

// runBudget measures each fleet size in turn; a size that could not run is
// reported in the table and the rest still run.
func runBudget(sizes []int, heapStop uint64, overBound bool, start time.Time) []budgetRun {
	var runs []budgetRun
	for _, n := range sizes {
		cfg := bench.DefaultFleetConfig(n)
		cfg.HeapStop, cfg.AllowOverBound = heapStop, overBound
		fmt.Fprintf(os.Stderr, "[%s] Budget: %d sockets x %d logical connections, %d KiB messages...", clock(time.Since(start)), n, cfg.IDsPerSocket, cfg.MessageSize>>10)
		r, err := bench.MeasureFleet(cfg)
		if err != nil {
			fmt.Fprintln(os.Stderr, " failed:", err)
		} else {
			fmt.Fprintf(os.Stderr, " heap +%d MiB at peak\n", r.PeakRise()>>20)
		}
		runs = append(runs, budgetRun{r, err})
	}
	return runs
}

// budgetRun is one fleet size's result, or why it could not run.
type budgetRun struct {
	res bench.FleetResult // res.Config is set either way
	err error
}

func printBudget(w io.Writer, runs []budgetRun, heapStop uint64) {
	fmt.Fprintf(w, "\nMemory budget: a fleet of client sockets, each with 70 logical connections the server never\nclaims, sends 60 KiB messages within the credit granted; the server wraps each socket with one ID, \"x\":\n")
	const left, right = "%7s %7s %8s %8s %10s %10s %9s %17s", " %7s %8s %8s %8s\n"
	const row = left + right
	fmt.Fprintf(w, left+"   %s\n", "", "", "sent", "accepted", "heap rise", "heap rise", "live per", "goal", "bystander on \"x\" during the fill")
	fmt.Fprintf(w, row, "sockets", "fill", "MB", "MB", "peak", "live", "socket", "(on the peak)", "trips", "p50", "p99", "max")
	var notes []string
	for _, run := range runs {
		r, n := run.res, run.res.Config.Sockets
		if run.err != nil {
			fmt.Fprintf(w, "%7d FAILED: %v\n", n, run.err)
			continue
		}
		fill, live, perSocket := "-", "-", "-"
		if r.Fill > 0 {
			fill = fmtSeconds(r.Fill)
		}
		if r.HeapLive > 0 {
			live = fmt.Sprintf("+%d MiB", r.LiveRise()>>20)
			perSocket = fmt.Sprintf("%.1f MiB", float64(r.LiveRise())/float64(n)/(1<<20))
		}
		goal := "-"
		if g, ok := budgetGoal[n]; ok {
			verdict := "met"
			if r.PeakRise() >= g {
				verdict = "missed"
			}
			goal = fmt.Sprintf("< %d MiB: %s", g>>20, verdict)
		}
		by := r.Bystander
		sent := "-"
		if r.SentBytes > 0 {
			sent = fmt.Sprintf("%.0f", float64(r.SentBytes)/1e6)
		}
		fmt.Fprintf(w, row, strconv.Itoa(n), fill, sent, fmt.Sprintf("%.0f", float64(r.AcceptedBytes)/1e6),
			fmt.Sprintf("+%d MiB", r.PeakRise()>>20), live, perSocket, goal,
			strconv.Itoa(by.RoundTrips), fmtNs(float64(by.P50)), fmtNs(float64(by.P99)), fmtNs(float64(by.Max)))
		if r.Stopped != "" {
			notes = append(notes, fmt.Sprintf("%d sockets: cut short: %s", n, r.Stopped))
		}
		if by.Err != "" {
			notes = append(notes, fmt.Sprintf("%d sockets: the bystander's round trip failed: %s", n, by.Err))
		}
		if len(r.SendErrors) > 0 {
			notes = append(notes, fmt.Sprintf("%d sockets: fleet Sends that failed: %v", n, r.SendErrors))
		}
	}
	for _, note := range notes {
		fmt.Fprintln(w, "  "+note)
	}
	fmt.Fprintf(w, `  The server (this process) wraps each accepted socket with WrapConnectionWithID(sock, "x", 0) and
  echoes on "x"; the fleet (a child process, this program re-executed, so the server's heap holds only
  the server) opens one tcpconn.Client per socket and 70 IDs on it, and sends on every ID with
  SendContext until no Send has succeeded for 2 s: it never breaks the protocol, it takes all
  the credit it is given. Everything runs at the default Config.
  fill       from the fleet's start to its last Send that returned nil.
  sent MB    payload of the fleet's Sends that returned nil; accepted MB, what the server received
             on the fleet's sockets (LinkStats.BytesIn); 1 MB = 10^6 bytes.
  heap rise  peak: the high-water mark of the server process's heap in use (live and not yet swept
             objects plus the free room in their spans; runtime/metrics every 10 ms) above its level
             before the attack; live: the live heap after a GC once the fill stalled, above the same
             before the attack; live per socket: that divided by the sockets.
  goal       the library's target for the rise with its process-wide Budget: < 512 MiB for 50
             sockets, < 600 MiB for 200 (checked on the peak).
  bystander  1 KiB round trips on "x", back to back, over one more socket of the same server,
             started between the fleet's start and its last successful Send: count and latency
             percentiles (nearest rank).
  Bounds: a fleet whose documented worst case, sockets x (LinkWindow + MaxMessageSize), exceeds
  16 GiB is refused without -budget-over-bound; a run is cut short when the heap in use passes
  %d MiB (-budget-stop-gib), or after 3 min.
`, heapStop>>20)
}

func fmtSeconds(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }

// budgetLines writes each completed run in go test -bench form, so that
// benchstat can compare runs before and after a change.
func budgetLines(w io.Writer, runs []budgetRun, suffix string) {
	for _, run := range runs {
		r := run.res
		if run.err != nil || r.Stopped != "" {
			continue
		}
		fmt.Fprintf(w, "BenchmarkBudget/sockets=%d%s\t1\t%d ns/op\t%.1f peak-rise-MiB\t%.1f live-rise-MiB\t%.0f accepted-MB\t%.0f bystander-p50-us\t%.0f bystander-p99-us\n",
			r.Config.Sockets, suffix, r.Fill.Nanoseconds(), float64(r.PeakRise())/(1<<20), float64(r.LiveRise())/(1<<20),
			float64(r.AcceptedBytes)/1e6, float64(r.Bystander.P50)/1e3, float64(r.Bystander.P99)/1e3)
	}
}
