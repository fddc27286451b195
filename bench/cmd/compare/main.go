// Command compare runs every workload over every transport with
// testing.Benchmark, several passes per cell, and prints tables of medians
// with legends: the main one with the ratio to raw and, beside the tcpconn
// rows, the original TCP-Conn README's published numbers; round trips over
// TLS with the ratio to raw TLS; head-of-line blocking (a probe beside a
// bulk sender, ratios to the two-socket floor); fairness of two bulk
// senders; with -all or an -only naming them, one bulk flow over a delayed
// path (WAN), the heap a fleet of clients can occupy on a server (Budget)
// and what an idle socket costs at each end (Sockets). The tables, the raw
// benchmark lines and SVG charts go into a fresh folder,
// results/run-YYYYMMDD-HHMMSS by default.
//
//	cd bench && go run ./cmd/compare [-count 5] [-benchtime 300ms] [-only re] [-short | -all] [-out dir] [-svg file]
//	                                 [-budget-sockets 50,200] [-budget-stop-gib 12] [-budget-over-bound]
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pulsyflux/tcp-conn/bench"
)

// original holds the original TCP-Conn README's numbers (ns/op), measured
// on another machine.
var original = map[string]float64{
	"RTT100B":     32.8e3,
	"RTT200KB":    264e3,
	"RTT1MB":      5.2e6,
	"SendOnly1KB": 7.6e3,
	"RecvOnly1KB": 8.0e3,
	"Mux16x1KB":   34.2e3, // its "Multiple connections"
}

// slow are the tables left out unless -all or an -only that names them:
// each pass of Memory100k opens 100,000 logical connections first (several
// seconds a cell here); the WAN ones span 30 round trips of a delayed path
// after a warm-up of 10 (seconds a cell at 100 ms); Budget moves gigabytes;
// Sockets opens up to 10,000 sockets per cell, each pair of processes idling
// for seconds.
var slow = map[string]bool{"Memory100k": true, "WAN20ms": true, "WAN100ms": true, "Budget": true, "Sockets": true}

// result is the median of the passes of one workload over one transport.
type result struct {
	ns, mbs, allocs float64
	spread          float64 // (slowest - fastest pass) / median, of ns/op
	passes          int
	extra           map[string]float64
	failed          string
	runs            []testing.BenchmarkResult
}

func main() {
	if bench.IsAttackerProcess() { // the Budget table's fleet, re-executed
		os.Exit(bench.RunAttackerProcess())
	}
	if bench.IsSocketsEndProcess() { // an end of a Sockets cell, re-executed
		os.Exit(bench.RunSocketsEndProcess())
	}
	testing.Init()
	benchtime := flag.Duration("benchtime", 300*time.Millisecond, "target run time of each pass of each cell")
	count := flag.Int("count", 5, "passes of each cell; the table shows the median")
	only := flag.String("only", "", "run only workloads or transports matching this regexp (matched against \"Workload/transport\", and \"Budget\")")
	short := flag.Bool("short", false, "skip the memory workloads, WAN100ms and Sockets10k; shorter warm-up in Mixed, Fair and WAN (testing.Short)")
	all := flag.Bool("all", false, "also run Memory100k, WAN20ms, WAN100ms, Budget with 50 and 200 sockets, and Sockets1k/10k (minutes more; an -only naming one runs it too)")
	budgetSockets := flag.String("budget-sockets", "", "fleet sizes of the Budget table, comma-separated (default 50; 50,200 with -all)")
	budgetStop := flag.Float64("budget-stop-gib", 12, "cut a Budget run short when the server's heap in use passes this many GiB")
	budgetOverBound := flag.Bool("budget-over-bound", false, "run Budget fleets whose worst case, sockets x (LinkWindow + MaxMessageSize), exceeds 16 GiB")
	out := flag.String("out", "", "write table.txt, bench.txt, chart.svg and hol.svg into this new or empty folder (default results/run-YYYYMMDD-HHMMSS)")
	svg := flag.String("svg", "", "also write the chart to this file")
	flag.Parse()
	re, err := regexp.Compile(*only)
	if err != nil {
		fatal(2, "-only:", err)
	}
	if *count < 1 {
		fatal(2, "-count must be at least 1")
	}
	if err := flag.Set("test.benchtime", benchtime.String()); err != nil {
		fatal(2, err)
	}
	if *short {
		if err := flag.Set("test.short", "true"); err != nil {
			fatal(2, err)
		}
	}

	start := time.Now()
	dir := *out
	if dir == "" {
		dir = filepath.Join("results", "run-"+start.Format("20060102-150405"))
	}
	if err := freshDir(dir); err != nil {
		fatal(1, err)
	}

	transports := bench.Transports()
	var workloads []bench.Workload
	cells := map[string][]bench.Transport{}
	ncells := 0
	for _, w := range bench.AllWorkloads() {
		if (*short && w.SkippedByShort()) || (slow[w.Name] && !*all && (*only == "" || !re.MatchString(w.Name))) {
			continue
		}
		for _, tr := range bench.TransportsFor(w) {
			if re.MatchString(w.Name + "/" + tr.Name) {
				cells[w.Name] = append(cells[w.Name], tr)
			}
		}
		if len(cells[w.Name]) > 0 {
			workloads = append(workloads, w)
			ncells += len(cells[w.Name])
		}
	}
	var sizes []int
	if re.MatchString("Budget") && (*all || *only != "") {
		if sizes, err = budgetSizes(*budgetSockets, *all); err != nil {
			fatal(2, err)
		}
	}
	sockets := socketsCells(re, *only, *all, *short)
	fmt.Fprintf(os.Stderr, "compare: %d cells (workload x transport), %s each, -benchtime %v; Budget with %v sockets; %s; output in %s\n", ncells, plural(*count, "pass"), *benchtime, sizes, plural(len(sockets), "Sockets cell"), dir)

	// Passes are interleaved: pass k of every transport of a workload runs
	// before pass k+1 of any, so drift on a shared machine hits all of a
	// row's cells alike.
	results := map[string]map[string]*result{} // workload -> transport -> result
	for wi, w := range workloads {
		results[w.Name] = map[string]*result{}
		for _, tr := range cells[w.Name] {
			results[w.Name][tr.Name] = &result{}
		}
		// A WAN pass must span enough round trips of its path to mean
		// something; testing.Benchmark reads the flag at each run.
		if err := flag.Set("test.benchtime", max(*benchtime, w.MinBenchtime()).String()); err != nil {
			fatal(2, err)
		}
		for pass := 1; pass <= *count; pass++ {
			fmt.Fprintf(os.Stderr, "[%s] %2d/%d %-11s pass %d/%d:", clock(time.Since(start)), wi+1, len(workloads), w.Name, pass, *count)
			for _, tr := range cells[w.Name] {
				r := results[w.Name][tr.Name]
				if r.failed != "" {
					continue
				}
				fmt.Fprintf(os.Stderr, " %s", tr.Name)
				br, msg := runOnce(w, tr)
				if msg != "" {
					r.failed = msg
					fmt.Fprint(os.Stderr, "(failed)")
					continue
				}
				r.runs = append(r.runs, br)
			}
			fmt.Fprintln(os.Stderr)
		}
		for _, r := range results[w.Name] {
			summarize(r)
		}
	}
	heapStop := uint64(*budgetStop * (1 << 30))
	budget := runBudget(sizes, heapStop, *budgetOverBound, start)
	runSockets(sockets, start)
	var replicas *replicasRun
	if (*all || *only != "") && re.MatchString("Replicas") {
		replicas = runReplicas(start)
	}
	elapsed := time.Since(start).Round(time.Second)

	var mainW, tlsW, holW, fairW, wanW []bench.Workload
	for _, w := range workloads {
		switch {
		case w.Kind == bench.Mixed:
			holW = append(holW, w)
		case w.Kind == bench.Fair:
			fairW = append(fairW, w)
		case w.Kind == bench.WAN:
			wanW = append(wanW, w)
		case w.TLS:
			tlsW = append(tlsW, w)
		default:
			mainW = append(mainW, w)
		}
	}
	var table bytes.Buffer
	if len(mainW) > 0 {
		printTable(&table, mainW, results, cells)
	}
	if len(workloads) > 0 {
		printLegend(&table, results, *count, *benchtime, slow, *all, *short, *only)
	}
	if len(tlsW) > 0 {
		fmt.Fprintf(&table, "\nOver TLS 1.3 (loopback, self-signed P-256 certificate, handshakes outside the timer):\n")
		printTable(&table, tlsW, results, cells)
		fmt.Fprint(&table, tlsLegend)
	}
	if len(holW) > 0 {
		printHOL(&table, holW, results, cells, *short)
	}
	if len(fairW) > 0 {
		printFair(&table, fairW, results, cells, *short)
	}
	if len(wanW) > 0 {
		printWAN(&table, wanW, results, cells, *benchtime, *short)
	}
	if len(budget) > 0 {
		printBudget(&table, budget, heapStop)
	}
	if len(sockets) > 0 {
		printSockets(&table, sockets, *short)
	}
	if replicas != nil {
		printReplicas(&table, replicas)
	}
	fmt.Fprintf(&table, "\ntotal %v; command: compare %s\n", elapsed, strings.Join(os.Args[1:], " "))
	os.Stdout.Write(table.Bytes())

	var lines bytes.Buffer
	benchLines(&lines, workloads, results, cells, *count)
	budgetLines(&lines, budget, procSuffix())
	socketsLines(&lines, sockets, procSuffix())
	replicasLines(&lines, replicas, procSuffix())
	files := map[string][]byte{"table.txt": table.Bytes(), "bench.txt": lines.Bytes()}
	conditions := fmt.Sprintf("-benchtime %v, %s/%s, GOMAXPROCS %d, one process over 127.0.0.1", *benchtime, runtime.GOOS, runtime.GOARCH, runtime.GOMAXPROCS(0))
	if len(mainW) > 0 {
		files["chart.svg"] = []byte(chart(results, transports, "each point is "+medianOf(*count)+", "+conditions))
	}
	if len(holW) > 0 {
		sub := "each bar is " + medianOf(*count) + ", " + conditions
		if *short {
			sub += "; -short: bulk messages 1/16 of the named size"
		}
		files["hol.svg"] = []byte(holChart(holW, results, cells, sub))
	}
	for _, name := range []string{"table.txt", "bench.txt", "chart.svg", "hol.svg"} {
		if b, ok := files[name]; ok {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				fatal(1, err)
			}
		}
	}
	fmt.Printf("results: %s/ (table.txt, bench.txt for benchstat -col /transport, chart.svg, hol.svg)\n", dir)
	if *svg != "" && files["chart.svg"] != nil {
		if err := os.WriteFile(*svg, files["chart.svg"], 0o644); err != nil {
			fatal(1, err)
		}
		fmt.Println("chart:", *svg)
	}
}

func fatal(code int, args ...any) {
	fmt.Fprintln(os.Stderr, append([]any{"compare:"}, args...)...)
	os.Exit(code)
}

// freshDir creates dir, or accepts it if it exists and is empty, so that a
// run never writes over earlier results or tracked files.
func freshDir(dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	err := os.Mkdir(dir, 0o755)
	if !errors.Is(err, os.ErrExist) {
		return err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	if len(ents) > 0 {
		return fmt.Errorf("-out %s: folder is not empty; name a new one", dir)
	}
	return nil
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	if strings.HasSuffix(word, "s") {
		return fmt.Sprintf("%d %ses", n, word)
	}
	return fmt.Sprintf("%d %ss", n, word)
}

func medianOf(passes int) string {
	if passes == 1 {
		return "a single pass, not a median"
	}
	return "the median of " + plural(passes, "pass")
}

func clock(d time.Duration) string {
	d = d.Round(time.Second)
	return fmt.Sprintf("%d:%02d", int(d.Minutes()), int(d.Seconds())%60)
}

// runOnce runs one pass of one cell; msg is non-empty if it failed or was
// skipped.
func runOnce(w bench.Workload, tr bench.Transport) (testing.BenchmarkResult, string) {
	bench.LastFailure() // forget an earlier run's message
	var failed, skipped bool
	r := testing.Benchmark(func(b *testing.B) {
		defer func() { failed, skipped = b.Failed(), b.Skipped() }()
		w.Run(b, tr)
	})
	if failed || skipped || r.N == 0 {
		msg := bench.LastFailure()
		if msg == "" {
			msg = "benchmark failed"
		}
		if !skipped {
			msg = "FAILED: " + msg
		}
		return r, msg
	}
	return r, ""
}

func nsPerOp(r testing.BenchmarkResult) float64 { return float64(r.T.Nanoseconds()) / float64(r.N) }

func summarize(r *result) {
	rs := r.runs
	r.passes = len(rs)
	if r.failed != "" || len(rs) == 0 {
		return
	}
	r.extra = map[string]float64{}
	r.ns = median(rs, nsPerOp)
	lo, hi := nsPerOp(rs[0]), nsPerOp(rs[0])
	for _, x := range rs {
		lo, hi = min(lo, nsPerOp(x)), max(hi, nsPerOp(x))
	}
	r.spread = (hi - lo) / r.ns
	r.allocs = median(rs, func(r testing.BenchmarkResult) float64 { return float64(r.AllocsPerOp()) })
	if rs[0].Bytes > 0 {
		r.mbs = median(rs, func(r testing.BenchmarkResult) float64 {
			return float64(r.Bytes) * float64(r.N) / r.T.Seconds() / 1e6
		})
	}
	for k := range rs[0].Extra {
		r.extra[k] = median(rs, func(r testing.BenchmarkResult) float64 { return r.Extra[k] })
	}
}

func median(rs []testing.BenchmarkResult, f func(testing.BenchmarkResult) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// eachResult calls row for every cell of the text tables that has a result,
// in table order; a cell that failed gets its failure line instead.
func eachResult(w io.Writer, workloads []bench.Workload, results map[string]map[string]*result, cells map[string][]bench.Transport, row func(wl bench.Workload, tr bench.Transport, r *result)) {
	for _, wl := range workloads {
		for _, tr := range cells[wl.Name] {
			r, ok := results[wl.Name][tr.Name]
			if !ok {
				continue
			}
			if r.failed != "" {
				fmt.Fprintf(w, "%-12s %-14s %s\n", wl.Name, tr.Name, r.failed)
				continue
			}
			row(wl, tr, r)
		}
	}
}

func printTable(w io.Writer, workloads []bench.Workload, results map[string]map[string]*result, cells map[string][]bench.Transport) {
	fmt.Fprintf(w, "\n%-12s %-14s %10s %7s %9s %9s %7s  %s\n", "workload", "transport", "time/op", "spread", "MB/s", "allocs/op", "vs raw", "notes")
	eachResult(w, workloads, results, cells, func(wl bench.Workload, tr bench.Transport, r *result) {
		raw := results[wl.Name]["raw"]
		mbs, ratio := "-", "-"
		if r.mbs > 0 {
			mbs = fmt.Sprintf("%.1f", r.mbs)
		}
		if raw != nil && raw.failed == "" && raw.ns > 0 {
			ratio = fmt.Sprintf("%.2fx", r.ns/raw.ns)
		}
		note := ""
		if v, ok := r.extra["heapB/conn"]; ok {
			note = fmt.Sprintf("%.0f heapB/conn, %.2f goroutines/conn", v, r.extra["goroutines/conn"])
		}
		if s, ok := original[wl.Name]; ok && tr.Name == "tcpconn" {
			note = "original " + fmtNs(s)
		}
		spread := "-"
		if r.passes > 1 {
			spread = fmt.Sprintf("%.0f%%", 100*r.spread)
		}
		fmt.Fprintf(w, "%-12s %-14s %10s %7s %9s %9.0f %7s  %s\n", wl.Name, tr.Name, fmtNs(r.ns), spread, mbs, r.allocs, ratio, note)
	})
}

// printLegend explains the table; the pass count it states is the one the
// cells actually have.
func printLegend(w io.Writer, results map[string]map[string]*result, count int, benchtime time.Duration, slow map[string]bool, all, short bool, only string) {
	passes := map[int]int{}
	for _, row := range results {
		for _, r := range row {
			if r.failed == "" {
				passes[r.passes]++
			}
		}
	}
	var ps []string
	for p, n := range passes {
		ps = append(ps, fmt.Sprintf("%s: the median of %s", plural(n, "cell"), plural(p, "pass")))
	}
	sort.Strings(ps)
	what := strings.Join(ps, "; ")
	switch len(passes) {
	case 0:
		what = "No cell completed"
	case 1:
		for p := range passes {
			what = "Every cell is " + medianOf(p)
		}
	}
	fmt.Fprintf(w, `
Legend. %s (-count %d); a pass is one testing.Benchmark run
of about -benchtime %v, and passes alternate between transports. One process: client and
server talk over 127.0.0.1 and share the machine's cores; compare within a row.
  time/op    median time per op (ns, µs, ms), lower is better. An op is one round trip for
             RTT*, Mux* (aggregate over 16/256 goroutines) and Memory*, one delivered message
             for SendOnly1KB, RecvOnly1KB and Stream64KB.
  spread     (slowest pass - fastest pass) / median time/op: how much the passes disagree.
  MB/s       message payload per second, 1 MB = 10^6 bytes (one direction for round trips).
  allocs/op  heap allocations per op, client and server together (same process).
  vs raw     time/op divided by raw's time/op in the same workload: below 1.00x is faster.
  notes      original: the original TCP-Conn README's time for that workload, measured on an
             i5-12400F under Windows, for orientation only. Memory*: live heap bytes and goroutines per idle
             logical connection, client and server sides together.
  raw             u32 length + payload on a plain TCP socket, one write per message, reads
                  through a 64 KiB bufio.Reader; in the Mux* and Memory* rows a minimal
                  hand-written mux on one socket (no flow control).
  yamux, smux     hashicorp/yamux and xtaci/smux, one stream per logical connection.
  grpc            google.golang.org/grpc: one bidirectional stream per logical connection on
                  one ClientConn (one HTTP/2 connection), each message one gRPC message (plain
                  bytes, no protobuf); gRPC's defaults but the receive limit, raised to 32 MiB.
  tcpconn         this library through the original TCP-Conn API; Receive returns a new slice
                  per message.
  tcpconn-pooled  the same, receiving with ReceiveAppend into one reused buffer per connection.
`, what, count, benchtime)
	var skipped []string
	if short {
		skipped = append(skipped, "Memory* and WAN100ms (-short)")
	} else if !all && only == "" {
		for name := range slow {
			if _, ran := results[name]; !ran {
				skipped = append(skipped, name+" (add -all)")
			}
		}
	}
	if len(skipped) > 0 {
		sort.Strings(skipped)
		fmt.Fprintf(w, "Not run: %s.\n", strings.Join(skipped, ", "))
	}
}

// benchLines writes every pass in go test -bench form, named like the
// benchmarks in bench_test.go, so that benchstat -col /transport reads it.
func benchLines(w io.Writer, workloads []bench.Workload, results map[string]map[string]*result, cells map[string][]bench.Transport, count int) {
	fmt.Fprintf(w, "goos: %s\ngoarch: %s\npkg: github.com/pulsyflux/tcp-conn/bench\n", runtime.GOOS, runtime.GOARCH)
	if cpu := cpuName(); cpu != "" {
		fmt.Fprintf(w, "cpu: %s\n", cpu)
	}
	suffix := procSuffix()
	for pass := range count {
		for _, wl := range workloads {
			for _, tr := range cells[wl.Name] {
				r, ok := results[wl.Name][tr.Name]
				if !ok || pass >= len(r.runs) || r.failed != "" {
					continue
				}
				br := r.runs[pass]
				fmt.Fprintf(w, "Benchmark%s/transport=%s%s\t%s\t%s\n", wl.Name, tr.Name, suffix, br.String(), br.MemString())
			}
		}
	}
}

// procSuffix is what go test appends to benchmark names: -GOMAXPROCS,
// unless that is 1.
func procSuffix() string {
	if p := runtime.GOMAXPROCS(0); p != 1 {
		return fmt.Sprintf("-%d", p)
	}
	return ""
}

func cpuName() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func fmtNs(ns float64) string {
	switch {
	case ns >= 1e6:
		return fmt.Sprintf("%.2f ms", ns/1e6)
	case ns >= 1e3:
		return fmt.Sprintf("%.1f µs", ns/1e3)
	}
	return fmt.Sprintf("%.0f ns", ns)
}
