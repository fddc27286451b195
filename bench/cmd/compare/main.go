// Command compare runs every workload over every transport with
// testing.Benchmark and prints one table, with the ratio to raw and, beside
// the tcpconn rows, the seed's published numbers. It also writes an SVG.
//
//	cd bench && go run ./cmd/compare [-benchtime 1s] [-count 1] [-only re] [-short] [-svg results/chart.svg]
package main

import (
	"flag"
	"fmt"
	"math"
	"os"
	"regexp"
	"sort"
	"testing"
	"time"

	"github.com/pulsyflux/tcp-conn/bench"
)

// seed holds the seed README's numbers (ns/op), measured on another machine.
var seed = map[string]float64{
	"RTT100B":     32.8e3,
	"RTT200KB":    264e3,
	"RTT1MB":      5.2e6,
	"SendOnly1KB": 7.6e3,
	"RecvOnly1KB": 8.0e3,
	"Mux16x1KB":   34.2e3, // the seed's "Multiple connections"
}

const seedLabel = "seed (i5-12400F, Windows, other machine)"

// result is the median of -count runs of one workload over one transport.
type result struct {
	ns, mbs, allocs float64
	extra           map[string]float64
	failed          string
}

func main() {
	testing.Init()
	benchtime := flag.Duration("benchtime", time.Second, "target run time of each benchmark")
	count := flag.Int("count", 1, "runs of each benchmark (the table shows the median)")
	only := flag.String("only", "", "run only workloads or transports matching this regexp (matched against \"Workload/transport\")")
	short := flag.Bool("short", false, "skip the memory workloads")
	svg := flag.String("svg", "results/chart.svg", "write the chart here (empty: no chart)")
	flag.Parse()
	re, err := regexp.Compile(*only)
	if err != nil {
		fmt.Fprintln(os.Stderr, "compare: -only:", err)
		os.Exit(2)
	}
	if err := flag.Set("test.benchtime", benchtime.String()); err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(2)
	}

	transports := bench.Transports()
	results := map[string]map[string]result{} // workload -> transport -> result
	start := time.Now()
	for _, w := range bench.Workloads {
		if *short && w.Kind == bench.Memory {
			continue
		}
		for _, tr := range transports {
			if !re.MatchString(w.Name + "/" + tr.Name) {
				continue
			}
			fmt.Fprintf(os.Stderr, "%-12s %-14s ", w.Name, tr.Name)
			r := measure(w, tr, *count)
			if r.failed != "" {
				fmt.Fprintln(os.Stderr, r.failed)
			} else {
				fmt.Fprintf(os.Stderr, "%s\n", fmtNs(r.ns))
			}
			if results[w.Name] == nil {
				results[w.Name] = map[string]result{}
			}
			results[w.Name][tr.Name] = r
		}
	}
	printTable(results, transports)
	fmt.Printf("\n%d runs per cell (median), -benchtime %v, total %v\n", *count, *benchtime, time.Since(start).Round(time.Second))
	if *svg != "" && len(results) > 0 {
		if err := os.WriteFile(*svg, []byte(chart(results, transports)), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "compare:", err)
			os.Exit(1)
		}
		fmt.Println("chart:", *svg)
	}
}

func measure(w bench.Workload, tr bench.Transport, count int) result {
	var rs []testing.BenchmarkResult
	for range count {
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
			return result{failed: msg}
		}
		rs = append(rs, r)
	}
	out := result{extra: map[string]float64{}}
	out.ns = median(rs, func(r testing.BenchmarkResult) float64 { return float64(r.T.Nanoseconds()) / float64(r.N) })
	out.allocs = median(rs, func(r testing.BenchmarkResult) float64 { return float64(r.AllocsPerOp()) })
	if rs[0].Bytes > 0 {
		out.mbs = median(rs, func(r testing.BenchmarkResult) float64 {
			return float64(r.Bytes) * float64(r.N) / r.T.Seconds() / 1e6
		})
	}
	for k := range rs[0].Extra {
		out.extra[k] = median(rs, func(r testing.BenchmarkResult) float64 { return r.Extra[k] })
	}
	return out
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

func printTable(results map[string]map[string]result, transports []bench.Transport) {
	fmt.Printf("\n%-12s %-14s %12s %10s %10s %9s  %s\n", "workload", "transport", "time/op", "MB/s", "allocs/op", "vs raw", "notes")
	for _, w := range bench.Workloads {
		row := results[w.Name]
		if row == nil {
			continue
		}
		raw, haveRaw := row["raw"]
		for _, tr := range transports {
			r, ok := row[tr.Name]
			if !ok {
				continue
			}
			if r.failed != "" {
				fmt.Printf("%-12s %-14s %s\n", w.Name, tr.Name, r.failed)
				continue
			}
			mbs, ratio := "-", "-"
			if r.mbs > 0 {
				mbs = fmt.Sprintf("%.1f", r.mbs)
			}
			if haveRaw && raw.failed == "" && raw.ns > 0 {
				ratio = fmt.Sprintf("%.2fx", r.ns/raw.ns)
			}
			note := ""
			if v, ok := r.extra["heapB/conn"]; ok {
				note = fmt.Sprintf("%.0f heapB/conn, %.2f goroutines/conn (client+server, per logical conn)", v, r.extra["goroutines/conn"])
			}
			if s, ok := seed[w.Name]; ok && tr.Name == "tcpconn" {
				note = fmt.Sprintf("%s: %s", seedLabel, fmtNs(s))
			}
			fmt.Printf("%-12s %-14s %12s %10s %10.0f %9s  %s\n", w.Name, tr.Name, fmtNs(r.ns), mbs, r.allocs, ratio, note)
		}
	}
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

// ---------------------------------------------------------------------------
// SVG: two panels, hand-written.

var colors = map[string]string{"raw": "#555555", "yamux": "#1f77b4", "smux": "#2ca02c", "tcpconn": "#d62728"}

type point struct {
	x, y float64
}

func chart(results map[string]map[string]result, transports []bench.Transport) string {
	latency := []struct {
		name string
		size float64
	}{{"RTT100B", 100}, {"RTT1KB", 1 << 10}, {"RTT200KB", 200 << 10}, {"RTT1MB", 1 << 20}}
	conns := []struct {
		name string
		n    float64
	}{{"RTT1KB", 1}, {"Mux16x1KB", 16}, {"Mux256x1KB", 256}}

	lat := map[string][]point{}
	thr := map[string][]point{}
	for _, tr := range transports {
		for _, l := range latency {
			if r, ok := results[l.name][tr.Name]; ok && r.failed == "" {
				lat[tr.Name] = append(lat[tr.Name], point{l.size, r.ns / 1e3})
			}
		}
		for _, c := range conns {
			if r, ok := results[c.name][tr.Name]; ok && r.failed == "" {
				thr[tr.Name] = append(thr[tr.Name], point{c.n, 1e9 / r.ns})
			}
		}
	}
	s := `<svg xmlns="http://www.w3.org/2000/svg" width="960" height="420" font-family="sans-serif" font-size="12">` + "\n"
	s += `<rect width="960" height="420" fill="white"/>` + "\n"
	s += panel(20, "Round-trip latency vs message size (log-log)", "message size (bytes)", "µs per round trip", lat, transports)
	s += panel(490, "Round trips per second vs logical connections (1 KiB)", "logical connections on one socket", "round trips / s", thr, transports)
	return s + "</svg>\n"
}

// panel draws one log-log plot at horizontal offset x0.
func panel(x0 float64, title, xlabel, ylabel string, series map[string][]point, transports []bench.Transport) string {
	const w, h, top, left, bottom = 450.0, 300.0, 50.0, 60.0, 60.0
	pw := w - left - 10
	var xs, ys []float64
	for _, pts := range series {
		for _, p := range pts {
			xs = append(xs, p.x)
			ys = append(ys, p.y)
		}
	}
	s := fmt.Sprintf(`<text x="%.0f" y="25" font-weight="bold">%s</text>`+"\n", x0, title)
	if len(xs) == 0 {
		return s
	}
	xlo, xhi := decades(xs)
	ylo, yhi := decades(ys)
	px := func(v float64) float64 { return x0 + left + (math.Log10(v)-xlo)/(xhi-xlo)*pw }
	py := func(v float64) float64 { return top + h - (math.Log10(v)-ylo)/(yhi-ylo)*h }
	s += fmt.Sprintf(`<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="none" stroke="#999"/>`+"\n", x0+left, top, pw, h)
	for d := xlo; d <= xhi; d++ {
		x := px(math.Pow(10, d))
		s += fmt.Sprintf(`<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#eee"/><text x="%.1f" y="%.0f" text-anchor="middle">1e%.0f</text>`+"\n", x, top, x, top+h, x, top+h+15, d)
	}
	for d := ylo; d <= yhi; d++ {
		y := py(math.Pow(10, d))
		s += fmt.Sprintf(`<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#eee"/><text x="%.0f" y="%.1f" text-anchor="end">1e%.0f</text>`+"\n", x0+left, y, x0+left+pw, y, x0+left-4, y+4, d)
	}
	s += fmt.Sprintf(`<text x="%.0f" y="%.0f" text-anchor="middle">%s</text>`+"\n", x0+left+pw/2, top+h+35, xlabel)
	s += fmt.Sprintf(`<text x="%.0f" y="%.0f" text-anchor="middle" transform="rotate(-90 %.0f %.0f)">%s</text>`+"\n", x0+15, top+h/2, x0+15, top+h/2, ylabel)
	for i, tr := range transports {
		pts := series[tr.Name]
		if len(pts) == 0 {
			continue
		}
		c := colors[tr.Name]
		path := ""
		for j, p := range pts {
			cmd := "L"
			if j == 0 {
				cmd = "M"
			}
			path += fmt.Sprintf("%s%.1f,%.1f ", cmd, px(p.x), py(p.y))
			s += fmt.Sprintf(`<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", px(p.x), py(p.y), c)
		}
		s += fmt.Sprintf(`<path d="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", path, c)
		lx := x0 + left + float64(i)*90
		s += fmt.Sprintf(`<rect x="%.0f" y="%.0f" width="12" height="12" fill="%s"/><text x="%.0f" y="%.0f">%s</text>`+"\n", lx, top+h+45, c, lx+16, top+h+56, tr.Name)
	}
	return s
}

// decades returns the log10 range, whole decades, that covers vs.
func decades(vs []float64) (lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, v := range vs {
		lo = math.Min(lo, math.Floor(math.Log10(v)))
		hi = math.Max(hi, math.Ceil(math.Log10(v)))
	}
	if hi == lo {
		hi++
	}
	return lo, hi
}
