package main

import (
	"fmt"
	"io"
	"math"
	"strings"
	"testing"

	"github.com/pulsyflux/tcp-conn/bench"
)

// The tables and the chart of the head-of-line and fairness workloads, and
// the TLS table's legend.

const tlsLegend = `  In these rows every transport runs over TLS 1.3: raw is u32 length + payload on a plain
  *tls.Conn (the floor), yamux, smux and grpc run on a *tls.Conn (grpc with insecure
  credentials: the socket is already TLS), tcpconn dials with Config.TLSConfig and the server
  wraps tls.Server(sock) with WrapConnection. vs raw is the ratio to raw TLS.
`

// spreadOf is (largest - smallest) / median of f over the passes of r.
func spreadOf(r *result, f func(float64) float64, key string) float64 {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, x := range r.runs {
		v := f(x.Extra[key])
		lo, hi = min(lo, v), max(hi, v)
	}
	m := f(r.extra[key])
	if m == 0 {
		return 0
	}
	return (hi - lo) / m
}

func identity(v float64) float64 { return v }

func fmtRatio(v, floor float64) string {
	if floor <= 0 || v < 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", v/floor)
}

// shortNote is printed under the Mixed and Fair tables of a -short run.
const shortNote = "  -short: the bulk messages were 1/16 of the size in the workload's name and the warm-ups\n  shorter (a smoke run: do not compare these numbers with full runs).\n"

func printHOL(w io.Writer, workloads []bench.Workload, results map[string]map[string]*result, cells map[string][]bench.Transport, short bool) {
	fmt.Fprintf(w, "\nHead-of-line blocking: 1 KiB echo probes beside a bulk sender on the same socket (floor: two sockets):\n")
	fmt.Fprintf(w, "%-12s %-14s %7s %9s %9s %9s %7s %9s %7s %7s\n", "workload", "transport", "probes", "p50", "p99", "max", "spread", "bulk MB/s", "p99 vs", "bulk vs")
	fmt.Fprintf(w, "%-12s %-14s %7s %9s %9s %9s %7s %9s %7s %7s\n", "", "", "", "", "", "", "(p99)", "", "floor", "floor")
	eachResult(w, workloads, results, cells, func(wl bench.Workload, tr bench.Transport, r *result) {
		p99vs, bulkvs := "-", "-"
		floorName := "floor"
		if tr.NewSlices && !tr.SocketPerConn {
			floorName = "floor-alloc" // the same receive contract; floor-alloc itself against floor
		}
		if floor := results[wl.Name][floorName]; floor != nil && floor.failed == "" {
			p99vs = fmtRatio(r.extra["p99-us"], floor.extra["p99-us"])
			bulkvs = fmtRatio(r.extra["bulk-MB/s"], floor.extra["bulk-MB/s"])
		}
		spread := "-"
		if r.passes > 1 {
			spread = fmt.Sprintf("%.0f%%", 100*spreadOf(r, identity, "p99-us"))
		}
		probes := median(r.runs, func(x testing.BenchmarkResult) float64 { return float64(x.N) })
		fmt.Fprintf(w, "%-12s %-14s %7.0f %9s %9s %9s %7s %9.0f %7s %7s\n", wl.Name, tr.Name, probes,
			fmtNs(1e3*r.extra["p50-us"]), fmtNs(1e3*r.extra["p99-us"]), fmtNs(1e3*r.extra["max-us"]), spread, r.extra["bulk-MB/s"], p99vs, bulkvs)
	})
	fmt.Fprint(w, `  passes     at least 1 s each (-short: -benchtime), whatever -benchtime says: a p99 needs
             enough slow probes.
  probes     measured probe round trips in one pass (median over passes); each pass first waits
             for the first bulk message to arrive, then does up to 200 unmeasured probes (at most
             1 s; with -short 10, at most 20 ms).
  p50..max   probe round-trip latency percentiles of one pass (nearest rank), median over passes.
  spread     (largest - smallest) / median of the passes' p99.
  bulk MB/s  bulk payload the server received and checked while the probes ran, 1 MB = 10^6 bytes.
  vs floor   ratio to floor: the same two flows on two sockets of their own (plain TCP, or TLS in
             TLSMixed*), so only the CPU and the kernel are shared. raw is the minimal mux (one
             writev per whole message under a mutex); yamux, smux, grpc, tcpconn as in the main
             table. floor-alloc is the floor receiving each message into a new slice, as
             tcpconn's Receive returns one: the tcpconn row is compared with it, every other row
             (floor-alloc's own included) with floor, whose receivers reuse one buffer.
`)
	if short {
		fmt.Fprint(w, shortNote)
	}
}

func printFair(w io.Writer, workloads []bench.Workload, results map[string]map[string]*result, cells map[string][]bench.Transport, short bool) {
	fmt.Fprintf(w, "\nFairness: two bulk senders on one socket, back to back:\n")
	fmt.Fprintf(w, "%-12s %-14s %10s %10s %9s %7s %10s\n", "workload", "transport", "slow MB/s", "fast MB/s", "slow/fast", "spread", "total MB/s")
	eachResult(w, workloads, results, cells, func(wl bench.Workload, tr bench.Transport, r *result) {
		spread := "-"
		if r.passes > 1 {
			spread = fmt.Sprintf("%.0f%%", 100*spreadOf(r, identity, "slow/fast"))
		}
		fmt.Fprintf(w, "%-12s %-14s %10.0f %10.0f %9.2f %7s %10.0f\n", wl.Name, tr.Name, r.extra["slow-MB/s"], r.extra["fast-MB/s"], r.extra["slow/fast"], spread, r.mbs)
	})
	fmt.Fprint(w, `  slow, fast MB/s  the two senders' payload received and checked by the server over the same
                   window (after a 200 ms warm-up, 10 ms with -short), the slower and the
                   faster; medians over passes.
  slow/fast        their ratio, per pass, median over passes (1.00 = equal shares; tcpconn's goal:
                   at least 0.80). spread: (largest - smallest) / median of the passes' ratios.
  total MB/s       both senders together (an op is one delivered message, either sender).
`)
	if short {
		fmt.Fprint(w, shortNote)
	}
}

// holChart draws, per Mixed workload, one row per transport: probe p50
// (dot) and p99 (bar) on a log scale on the left, bulk MB/s on the right.
func holChart(workloads []bench.Workload, results map[string]map[string]*result, cells map[string][]bench.Transport, subtitle string) string {
	const (
		w, rowH, groupH, top  = 1000.0, 20.0, 26.0, 104.0
		labelX, latX0, latX1  = 150.0, 160.0, 620.0
		bulkX0, bulkX1        = 680.0, 960.0
		legendH, bottomMargin = 40.0, 20.0
	)
	type row struct {
		group, name     string
		p50, p99, bulk  float64
		failed, heading bool
	}
	var rows []row
	var lats []float64
	maxBulk := 0.0
	for _, wl := range workloads {
		rows = append(rows, row{group: wl.Name, heading: true})
		for _, tr := range cells[wl.Name] {
			r, ok := results[wl.Name][tr.Name]
			if !ok {
				continue
			}
			if r.failed != "" {
				rows = append(rows, row{name: tr.Name, failed: true})
				continue
			}
			x := row{name: tr.Name, p50: r.extra["p50-us"], p99: r.extra["p99-us"], bulk: r.extra["bulk-MB/s"]}
			rows = append(rows, x)
			lats = append(lats, x.p50, x.p99)
			maxBulk = max(maxBulk, x.bulk)
		}
	}
	h := top + legendH + bottomMargin
	for _, r := range rows {
		if r.heading {
			h += groupH
		} else {
			h += rowH
		}
	}
	var s strings.Builder
	fmt.Fprintf(&s, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="12">`+"\n", w, h, w, h)
	fmt.Fprintf(&s, `<rect width="%.0f" height="%.0f" fill="white"/>`+"\n", w, h)
	fmt.Fprintf(&s, `<text x="%.0f" y="24" font-size="15" font-weight="bold" text-anchor="middle">Head-of-line blocking: a 1 KiB probe beside a bulk sender on one socket</text>`+"\n", w/2)
	fmt.Fprintf(&s, `<text x="%.0f" y="42" fill="#666" text-anchor="middle">%s</text>`+"\n", w/2, esc(subtitle))
	fmt.Fprintf(&s, `<text x="%.0f" y="64" font-weight="bold" text-anchor="middle">probe round trip: p50 (dot), p99 (bar), log scale; lower is better</text>`+"\n", (latX0+latX1)/2)
	fmt.Fprintf(&s, `<text x="%.0f" y="64" font-weight="bold" text-anchor="middle">bulk MB/s meanwhile; higher is better</text>`+"\n", (bulkX0+bulkX1)/2)
	if len(lats) == 0 {
		s.WriteString("</svg>\n")
		return s.String()
	}
	lo, hi := decades(lats)
	px := func(us float64) float64 { return latX0 + (math.Log10(us)-lo)/(hi-lo)*(latX1-latX0) }
	bulkMax := niceCeil(maxBulk)
	bx := func(v float64) float64 { return bulkX0 + v/bulkMax*(bulkX1-bulkX0) }
	plotBottom := h - legendH - bottomMargin
	for d := lo; d <= hi; d++ {
		x := px(math.Pow(10, d))
		fmt.Fprintf(&s, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#e4e4e4"/><text x="%.1f" y="%.0f" text-anchor="middle">%s</text>`+"\n", x, top-4, x, plotBottom, x, top-10, fmtMicros(math.Pow(10, d)))
	}
	for i := 0; i <= 4; i++ {
		v := bulkMax * float64(i) / 4
		x := bx(v)
		fmt.Fprintf(&s, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#e4e4e4"/><text x="%.1f" y="%.0f" text-anchor="middle">%.0f</text>`+"\n", x, top-4, x, plotBottom, x, top-10, v)
	}
	y := top
	for _, r := range rows {
		if r.heading {
			fmt.Fprintf(&s, `<text x="8" y="%.0f" font-weight="bold">%s</text>`+"\n", y+18, esc(r.group))
			y += groupH
			continue
		}
		st := styleOf(r.name)
		cy := y + rowH/2
		fmt.Fprintf(&s, `<text x="%.0f" y="%.0f" text-anchor="end">%s</text>`+"\n", labelX, cy+4, esc(r.name))
		if r.failed {
			fmt.Fprintf(&s, `<text x="%.0f" y="%.0f" fill="#666">(failed or skipped)</text>`+"\n", latX0+4, cy+4)
			y += rowH
			continue
		}
		fmt.Fprintf(&s, `<rect x="%.0f" y="%.1f" width="%.1f" height="%.0f" fill="%s" fill-opacity="0.75"/>`+"\n", latX0, y+3, px(r.p99)-latX0, rowH-6, st.color)
		fmt.Fprintf(&s, `<circle cx="%.1f" cy="%.1f" r="4" fill="black"/>`+"\n", px(r.p50), cy)
		fmt.Fprintf(&s, `<text x="%.1f" y="%.1f" fill="#333" font-size="11">%s</text>`+"\n", px(r.p99)+4, cy+4, fmtNs(r.p99*1e3))
		fmt.Fprintf(&s, `<rect x="%.0f" y="%.1f" width="%.1f" height="%.0f" fill="%s" fill-opacity="0.75"/>`+"\n", bulkX0, y+3, bx(r.bulk)-bulkX0, rowH-6, st.color)
		fmt.Fprintf(&s, `<text x="%.1f" y="%.1f" fill="#333" font-size="11">%.0f</text>`+"\n", bx(r.bulk)+4, cy+4, r.bulk)
		y += rowH
	}
	fmt.Fprintf(&s, `<text x="%.0f" y="%.0f" fill="#666" text-anchor="middle">floor: probe and bulk on two sockets (no multiplexing); raw: minimal mux, one writev per message under a mutex</text>`+"\n", w/2, h-bottomMargin-8)
	s.WriteString("</svg>\n")
	return s.String()
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}
