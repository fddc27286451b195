package main

import (
	"fmt"
	"math"
	"strings"

	"github.com/pulsyflux/tcp-conn/bench"
)

// SVG: two log-log panels side by side and one legend under both,
// hand-written.

type style struct{ color, dash string }

var styles = map[string]style{
	"raw":            {"#555555", ""},
	"yamux":          {"#1f77b4", ""},
	"smux":           {"#2ca02c", ""},
	"grpc":           {"#9467bd", ""},
	"tcpconn":        {"#d62728", ""},
	"tcpconn-pooled": {"#ff7f0e", "6 3"},
}

func styleOf(name string) style {
	if s, ok := styles[name]; ok {
		return s
	}
	return style{"#999999", "2 2"}
}

type point struct {
	x, y float64
}

const (
	chartW, chartH = 1000.0, 480.0
	panelW         = chartW / 2
)

func chart(results map[string]map[string]*result, transports []bench.Transport, subtitle string) string {
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
	var shown []string
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
		if len(lat[tr.Name])+len(thr[tr.Name]) > 0 {
			shown = append(shown, tr.Name)
		}
	}
	var s strings.Builder
	fmt.Fprintf(&s, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="12">`+"\n", chartW, chartH, chartW, chartH)
	fmt.Fprintf(&s, `<rect width="%.0f" height="%.0f" fill="white"/>`+"\n", chartW, chartH)
	fmt.Fprintf(&s, `<text x="%.0f" y="24" font-size="15" font-weight="bold" text-anchor="middle">tcpconn beside raw TCP, yamux, smux and gRPC</text>`+"\n", chartW/2)
	fmt.Fprintf(&s, `<text x="%.0f" y="42" fill="#666" text-anchor="middle">%s</text>`+"\n", chartW/2, esc(subtitle))
	panel(&s, 0, "Round-trip time vs message size", "lower is better",
		"message size (bytes)", "time per round trip", lat, transports, fmtBytes, fmtMicros)
	panel(&s, panelW, "Round trips per second vs logical connections", "1 KiB messages, all on one socket; higher is better",
		"logical connections on one socket", "round trips / s (aggregate)", thr, transports, fmtSI, fmtSI)
	legend(&s, shown)
	s.WriteString("</svg>\n")
	return s.String()
}

// panel draws one log-log plot in the half of the chart starting at x0.
func panel(s *strings.Builder, x0 float64, title, sub, xlabel, ylabel string, series map[string][]point, transports []bench.Transport, xtick, ytick func(float64) string) {
	const top, h, left, right = 100.0, 290.0, 78.0, 24.0
	pw := panelW - left - right
	cx := x0 + left + pw/2
	fmt.Fprintf(s, `<text x="%.0f" y="68" font-size="13" font-weight="bold" text-anchor="middle">%s</text>`+"\n", cx, esc(title))
	fmt.Fprintf(s, `<text x="%.0f" y="85" fill="#666" text-anchor="middle">%s</text>`+"\n", cx, esc(sub))
	var xs, ys []float64
	for _, pts := range series {
		for _, p := range pts {
			xs = append(xs, p.x)
			ys = append(ys, p.y)
		}
	}
	if len(xs) == 0 {
		fmt.Fprintf(s, `<text x="%.0f" y="%.0f" fill="#666" text-anchor="middle">(no data in this run)</text>`+"\n", cx, top+h/2)
		return
	}
	xlo, xhi := decades(xs)
	ylo, yhi := decades(ys)
	px := func(v float64) float64 { return x0 + left + (math.Log10(v)-xlo)/(xhi-xlo)*pw }
	py := func(v float64) float64 { return top + h - (math.Log10(v)-ylo)/(yhi-ylo)*h }
	for d := xlo; d <= xhi; d++ {
		x := px(math.Pow(10, d))
		fmt.Fprintf(s, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#e4e4e4"/><text x="%.1f" y="%.0f" text-anchor="middle">%s</text>`+"\n", x, top, x, top+h, x, top+h+16, xtick(math.Pow(10, d)))
	}
	for d := ylo; d <= yhi; d++ {
		y := py(math.Pow(10, d))
		fmt.Fprintf(s, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#e4e4e4"/><text x="%.0f" y="%.1f" text-anchor="end">%s</text>`+"\n", x0+left, y, x0+left+pw, y, x0+left-6, y+4, ytick(math.Pow(10, d)))
	}
	fmt.Fprintf(s, `<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="none" stroke="#999"/>`+"\n", x0+left, top, pw, h)
	fmt.Fprintf(s, `<text x="%.0f" y="%.0f" text-anchor="middle">%s (log scale)</text>`+"\n", cx, top+h+36, esc(xlabel))
	fmt.Fprintf(s, `<text x="%.0f" y="%.0f" text-anchor="middle" transform="rotate(-90 %.0f %.0f)">%s (log scale)</text>`+"\n", x0+16, top+h/2, x0+16, top+h/2, esc(ylabel))
	for _, tr := range transports {
		pts := series[tr.Name]
		if len(pts) == 0 {
			continue
		}
		st := styleOf(tr.Name)
		var path strings.Builder
		for j, p := range pts {
			cmd := "L"
			if j == 0 {
				cmd = "M"
			}
			fmt.Fprintf(&path, "%s%.1f,%.1f ", cmd, px(p.x), py(p.y))
		}
		dash := ""
		if st.dash != "" {
			dash = fmt.Sprintf(` stroke-dasharray="%s"`, st.dash)
		}
		fmt.Fprintf(s, `<path d="%s" fill="none" stroke="%s" stroke-width="2"%s/>`+"\n", strings.TrimSpace(path.String()), st.color, dash)
		for _, p := range pts {
			fmt.Fprintf(s, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"/>`+"\n", px(p.x), py(p.y), st.color)
		}
	}
}

// legend draws one row, centred under both panels; widths are estimated
// at 7.5 px per character of 12 px sans-serif, generously.
func legend(s *strings.Builder, names []string) {
	const y, swatch, gap = chartH - 28, 26.0, 28.0
	width := func(n string) float64 { return swatch + 6 + 7.5*float64(len(n)) }
	total := -gap
	for _, n := range names {
		total += width(n) + gap
	}
	x := (chartW - total) / 2
	for _, n := range names {
		st := styleOf(n)
		dash := ""
		if st.dash != "" {
			dash = fmt.Sprintf(` stroke-dasharray="%s"`, st.dash)
		}
		fmt.Fprintf(s, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="%s" stroke-width="2"%s/><circle cx="%.0f" cy="%.0f" r="3.5" fill="%s"/><text x="%.0f" y="%.0f">%s</text>`+"\n",
			x, y, x+swatch, y, st.color, dash, x+swatch/2, y, st.color, x+swatch+6, y+4, esc(n))
		x += width(n) + gap
	}
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

// fmtSI writes a power of ten as 1, 10, 100, 1k, ... 1G, or 0.1, 0.01, ...
func fmtSI(v float64) string {
	for _, u := range []struct {
		f float64
		s string
	}{{1e9, "G"}, {1e6, "M"}, {1e3, "k"}} {
		if v >= u.f {
			return fmt.Sprintf("%g%s", v/u.f, u.s)
		}
	}
	return fmt.Sprintf("%g", v)
}

func fmtBytes(v float64) string {
	s := fmtSI(v)
	if last := s[len(s)-1]; last >= 'A' && last <= 'z' {
		return s[:len(s)-1] + " " + s[len(s)-1:] + "B"
	}
	return s + " B"
}

// fmtMicros writes a power of ten of microseconds as 1 µs, 10 ms, ...
func fmtMicros(us float64) string {
	switch {
	case us >= 1e6:
		return fmt.Sprintf("%g s", us/1e6)
	case us >= 1e3:
		return fmt.Sprintf("%g ms", us/1e3)
	case us >= 1:
		return fmt.Sprintf("%g µs", us)
	}
	return fmt.Sprintf("%g ns", us*1e3)
}

func esc(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
