package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/pulsyflux/tcp-conn/bench"
)

// The Replicas table: one Client over a fleet of replicas behind an SRV
// name (bench.MeasureReplicas), through a scale-up, a planned drain and a
// killed replica. One run: its phases are seconds long each.

// replicasRun is the run's result, or why it could not run.
type replicasRun struct {
	res bench.ReplicasResult
	err error
}

func runReplicas(start time.Time) *replicasRun {
	cfg := bench.DefaultReplicasConfig()
	fmt.Fprintf(os.Stderr, "[%s] Replicas: %d replicas, %d IDs, %d round trips/s...", clock(time.Since(start)), cfg.Replicas, cfg.IDs, cfg.Rate)
	r, err := bench.MeasureReplicas(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, " failed:", err)
	} else {
		fmt.Fprintln(os.Stderr, " done")
	}
	return &replicasRun{r, err}
}

func printReplicas(w io.Writer, run *replicasRun) {
	r, c := run.res, run.res.Config
	fmt.Fprintf(w, "\nReplicas: one Client, %d IDs doing %d round trips/s over %d replicas behind an SRV name (a DNS server\non loopback, TTL 1 s); lookups every %v; the replicas' MaxLinkAge %v (grace the same):\n",
		c.IDs, c.Rate, c.Replicas, c.ResolveInterval, c.MaxLinkAge)
	if run.err != nil {
		fmt.Fprintf(w, "  FAILED: %v\n", run.err)
	}
	scaleUp := "not within the limit"
	if r.ScaleUp > 0 {
		scaleUp = r.ScaleUp.Round(time.Millisecond).String()
	}
	rows := [][3]string{
		{"spread (busiest / mean)", fmt.Sprintf("IDs %.2fx, messages %.2fx; round trip p99 %v", r.SpreadIDs, r.SpreadMessages, r.SteadyP99.Round(time.Microsecond)), "<= 1.15x"},
		{fmt.Sprintf("scale-up %d -> %d", c.Replicas, c.Replicas+c.Added), fmt.Sprintf("the new replicas >= 0.8x their mean share after %s (smallest %.2fx)", scaleUp, r.ScaleUpShare), fmt.Sprintf("<= %v", c.ResolveInterval+c.MaxLinkAge)},
		{fmt.Sprintf("planned drain of %d", c.Drained), fmt.Sprintf("%d errors, p99 %v, slowest Shutdown %v", r.DrainErrors, r.DrainP99.Round(time.Microsecond), r.DrainShutdown.Round(time.Millisecond)), "0 errors, p99 <= 2x steady"},
		{"1 replica killed", fmt.Sprintf("%d round trips failed, each ID answered again within %v", r.KillFailed, r.KillRecovery.Round(time.Millisecond)), "<= 1 s"},
		{"its return", fmt.Sprintf("%.1f %% of IDs where they were before", 100*r.Returned), ">= 95 %"},
	}
	fmt.Fprintf(w, "  %-24s %-78s %s\n", "", "", "goal")
	for _, row := range rows {
		fmt.Fprintf(w, "  %-24s %-78s %s\n", row[0], row[1], row[2])
	}
}

func replicasLines(w io.Writer, run *replicasRun, suffix string) {
	if run == nil || run.err != nil {
		return
	}
	r := run.res
	fmt.Fprintf(w, "BenchmarkReplicas/replicas=%d%s\t1\t%d ns/op\t%.3f spread-ids\t%.3f spread-msgs\t%.0f scaleup-ms\t%d drain-errors\t%.0f drain-p99-us\t%.0f steady-p99-us\t%d kill-failed\t%.0f kill-recovery-ms\t%.3f returned\n",
		r.Config.Replicas, suffix, r.Elapsed.Nanoseconds(), r.SpreadIDs, r.SpreadMessages, float64(r.ScaleUp)/1e6, r.DrainErrors,
		float64(r.DrainP99)/1e3, float64(r.SteadyP99)/1e3, r.KillFailed, float64(r.KillRecovery)/1e6, r.Returned)
}
