package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/pulsyflux/tcp-conn/bench"
)

// The Replicas table: one client over a fleet of replicas behind one name
// (bench.MeasureReplicas), through a scale-up, a planned drain and a
// killed replica, on tcpconn and then on gRPC (bench.MeasureReplicasGRPC).
// One run of each: its phases are seconds long each.

// replicasRun is the run of each system, tcpconn's first.
type replicasRun struct {
	systems []replicasSystemRun
}

// replicasSystemRun is one system's result, or why it could not run.
type replicasSystemRun struct {
	res bench.ReplicasResult
	err error
}

func runReplicas(start time.Time) *replicasRun {
	cfg := bench.DefaultReplicasConfig()
	run := &replicasRun{}
	for _, system := range []struct {
		name    string
		measure func(bench.ReplicasConfig) (bench.ReplicasResult, error)
	}{{"tcpconn", bench.MeasureReplicas}, {"grpc", bench.MeasureReplicasGRPC}} {
		fmt.Fprintf(os.Stderr, "[%s] Replicas/%s: %d replicas, %d IDs, %d round trips/s...", clock(time.Since(start)), system.name, cfg.Replicas, cfg.IDs, cfg.Rate)
		r, err := system.measure(cfg)
		if err != nil {
			fmt.Fprintln(os.Stderr, " failed:", err)
		} else {
			fmt.Fprintln(os.Stderr, " done")
		}
		run.systems = append(run.systems, replicasSystemRun{r, err})
	}
	return run
}

func printReplicas(w io.Writer, run *replicasRun) {
	c := bench.DefaultReplicasConfig()
	if len(run.systems) > 0 {
		c = run.systems[0].res.Config
	}
	fmt.Fprintf(w, "\nReplicas: %d IDs doing %d round trips/s over %d replicas behind one name (a DNS server on loopback,\nTTL 1 s), then %d added, %d drained (out of DNS, then GOAWAY), 1 killed (left in DNS) and back; goals are tcpconn's:\n",
		c.IDs, c.Rate, c.Replicas, c.Added, c.Drained)
	for _, s := range run.systems {
		printReplicasSystem(w, s)
	}
}

// printReplicasSystem prints one system's block, in the same rows for
// every system.
func printReplicasSystem(w io.Writer, s replicasSystemRun) {
	r, c := s.res, s.res.Config
	units := "IDs"
	switch r.Kind {
	case "grpc":
		units = "streams"
		fmt.Fprintf(w, "gRPC: one ClientConn on dns:/// (A records, one port; lookups only after a lost connection, at most\nevery 30 s), round_robin, one bidirectional stream per ID; drain GracefulStop, then Stop after %v; kill Stop:\n", c.MaxLinkAge)
	default:
		fmt.Fprintf(w, "tcpconn: one Client on srv:/// (SRV records), lookups every %v; the replicas' MaxLinkAge %v (grace\nthe same); drain Listener.Shutdown; kill Listener.Close:\n", c.ResolveInterval, c.MaxLinkAge)
	}
	if s.err != nil {
		fmt.Fprintf(w, "  FAILED: %v\n", s.err)
	}
	scaleUp := fmt.Sprintf(": not within %v", r.ScaleUpLimit)
	if r.ScaleUp > 0 {
		scaleUp = " after " + r.ScaleUp.Round(time.Millisecond).String()
	}
	rows := [][3]string{
		{"spread (busiest / mean)", fmt.Sprintf("%s %.2fx, messages %.2fx; round trip p99 %v", units, r.SpreadIDs, r.SpreadMessages, r.SteadyP99.Round(time.Microsecond)), "<= 1.15x"},
		{fmt.Sprintf("scale-up %d -> %d", c.Replicas, c.Replicas+c.Added), fmt.Sprintf("the new replicas reach 0.8x their mean share%s (smallest %.2fx)", scaleUp, r.ScaleUpShare), fmt.Sprintf("<= %v", c.ResolveInterval+c.MaxLinkAge)},
		{fmt.Sprintf("planned drain of %d", c.Drained), fmt.Sprintf("%d round trips failed (%d %s), p99 %v, slowest drain %v", r.DrainErrors, r.DrainFailedIDs, units, r.DrainP99.Round(time.Microsecond), r.DrainShutdown.Round(time.Millisecond)), "0 errors, p99 <= 2x steady"},
		{"1 replica killed", fmt.Sprintf("%d round trips failed (%d %s), each ID answered again within %v", r.KillFailed, r.KillFailedIDs, units, r.KillRecovery.Round(time.Millisecond)), "<= 1 s"},
		{"its return", fmt.Sprintf("%.1f %% of IDs where they were before (placement at rest %v after the drain)", 100*r.Returned, r.Settle.Round(100*time.Millisecond)), ">= 95 %"},
		{"DNS queries for the name", fmt.Sprintf("%d over the run of %v", r.Lookups, r.Elapsed.Round(100*time.Millisecond)), ""},
	}
	fmt.Fprintf(w, "  %-24s %-82s %s\n", "", "", "goal")
	for _, row := range rows {
		fmt.Fprintln(w, strings.TrimRight(fmt.Sprintf("  %-24s %-82s %s", row[0], row[1], row[2]), " "))
	}
}

func replicasLines(w io.Writer, run *replicasRun, suffix string) {
	if run == nil {
		return
	}
	for _, s := range run.systems {
		if s.err != nil {
			continue
		}
		r := s.res
		fmt.Fprintf(w, "BenchmarkReplicas/replicas=%d/transport=%s%s\t1\t%d ns/op\t%.3f spread-ids\t%.3f spread-msgs\t%.0f scaleup-ms\t%d drain-errors\t%.0f drain-p99-us\t%.0f steady-p99-us\t%d kill-failed\t%.0f kill-recovery-ms\t%.3f returned\t%d dns-queries\n",
			r.Config.Replicas, r.Kind, suffix, r.Elapsed.Nanoseconds(), r.SpreadIDs, r.SpreadMessages, float64(r.ScaleUp)/1e6, r.DrainErrors,
			float64(r.DrainP99)/1e3, float64(r.SteadyP99)/1e3, r.KillFailed, float64(r.KillRecovery)/1e6, r.Returned, r.Lookups)
	}
}
