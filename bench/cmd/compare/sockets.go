package main

import (
	"fmt"
	"io"
	"os"
	"regexp"
	"time"

	"github.com/pulsyflux/tcp-conn/bench"
)

// The Sockets table: what an idle physical socket costs at each
// end. bench.SocketsWorkload.Run does the work in two child processes;
// here are the choice of cells, the runs and the table.

// socketsCell is one Sockets workload over one transport: one pass.
type socketsCell struct {
	w         bench.SocketsWorkload
	transport string
	r         bench.SocketsResult
	failed    string
}

// socketsCells returns the cells to run. Like the other slow tables they
// run with -all or an -only that names them: an -only whose match on
// "Workload/transport" starts within the workload's name, so that -only
// Sockets10k/yamux runs that one cell and -only tcpconn none. -short keeps
// the first workload.
func socketsCells(re *regexp.Regexp, only string, all, short bool) []*socketsCell {
	var cells []*socketsCell
	for i, w := range bench.SocketsWorkloads {
		if short && i > 0 {
			continue
		}
		for _, tr := range bench.SocketsTransports {
			loc := re.FindStringIndex(w.Name + "/" + tr)
			if loc != nil && (all || only != "" && loc[0] < len(w.Name)) {
				cells = append(cells, &socketsCell{w: w, transport: tr})
			}
		}
	}
	return cells
}

func runSockets(cells []*socketsCell, start time.Time) {
	for i, c := range cells {
		fmt.Fprintf(os.Stderr, "[%s] sockets %d/%d %-11s %s:", clock(time.Since(start)), i+1, len(cells), c.w.Name, c.transport)
		r, err := c.w.Run(c.transport)
		if err != nil {
			c.failed = "FAILED: " + err.Error()
			fmt.Fprintln(os.Stderr, " failed")
			continue
		}
		c.r = r
		fmt.Fprintf(os.Stderr, " connect %s, %d/%d answered\n", fmtNs(float64(r.Connect)), r.Answered, r.N)
	}
}

// The library's target per idle socket end.
const (
	goalKiB        = 10
	goalGoroutines = 1
)

func printSockets(w io.Writer, cells []*socketsCell, short bool) {
	fmt.Fprintf(w, "\nSockets: N physical sockets, one logical connection each, idle after one round trip (keepalive %v, idle %v):\n", bench.SocketsKeepAlive, bench.SocketsIdle)
	fmt.Fprintf(w, "%-12s %-9s %-6s %10s %7s %8s %9s %7s %4s %8s %10s %11s\n",
		"workload", "transport", "end", "goroutines", "library", "heap KiB", "stack KiB", "KiB/end", "goal", "peak MiB", "connect", "answered")
	var notes []string
	for _, c := range cells {
		if c.failed != "" {
			fmt.Fprintf(w, "%-12s %-9s %s\n", c.w.Name, c.transport, c.failed)
			continue
		}
		for _, end := range []struct {
			name string
			e    bench.SocketEnd
			tail string
		}{
			{"server", c.r.Server, fmt.Sprintf(" %10s %11s", fmtNs(float64(c.r.Connect)), fmt.Sprintf("%d/%d", c.r.Answered, c.r.N))},
			{"client", c.r.Client, ""},
		} {
			e := end.e
			kib := (e.Heap + e.Stack) / 1024
			goal := "no"
			if kib <= goalKiB && e.Library <= goalGoroutines {
				goal = "yes"
			}
			fmt.Fprintf(w, "%-12s %-9s %-6s %10.2f %7.2f %8.1f %9.1f %7.1f %4s %8.1f%s\n",
				c.w.Name, c.transport, end.name, e.Goroutines, e.Library, e.Heap/1024, e.Stack/1024, kib, goal, float64(e.Peak)/(1<<20), end.tail)
		}
		for _, n := range c.r.Notes {
			notes = append(notes, fmt.Sprintf("%s %s: %s", c.w.Name, c.transport, n))
		}
	}
	for _, n := range notes {
		fmt.Fprintf(w, "  NOTE %s\n", n)
	}
	fmt.Fprintf(w, `  Each cell is one pass (-count does not apply): the server and the client fleet are two fresh
  processes (re-executions of this binary) on 127.0.0.1, one listening port. Every client socket
  dials and does one 16-byte echo round trip; then all idle %v, are measured, and each does one
  more round trip. Keepalive every %v in yamux, smux and tcpconn (timeouts three intervals); raw
  has none. tcpconn: one Client per client socket, Wrap (catch-all) per server socket.
  end         server: the accepted sockets; client: the dialled ones.
  goroutines  per socket, above a baseline taken in that process before any socket existed.
  library     goroutines less the workload's own: on the server one per socket (it wraps the
              socket, then echoes) and one accept loop; none on the client.
  heap, stack per socket, above the baseline, right after runtime.GC: the live heap (what it
              marked, /gc/heap/live:bytes) and goroutine stacks (StackInuse), 1 KiB = 1024 bytes.
              The server's stack includes its echo goroutine's; raw is the floor: the socket and
              the workload's own cost.
  KiB/end     heap + stack. goal: at most %d KiB and %d library goroutine per idle socket end.
  peak MiB    the high water of that process's heap in use while connecting, above the baseline
              (HeapInuse, every 10 ms, as in the Budget table: garbage not yet collected counts).
  connect     first dial to the last socket's first round trip, on the client's clock (dial,
              accept, wrap, handshakes, round trip; %d sockets at a time).
  answered    sockets that answered the round trip after the idle period.
`, bench.SocketsIdle, bench.SocketsKeepAlive, goalKiB, goalGoroutines, bench.SocketWorkers)
	if short {
		fmt.Fprintf(w, "  -short: %s only.\n", bench.SocketsWorkloads[0].Name)
	}
}

// socketsLines writes each completed cell in go test -bench form (ns/op is
// the connect time), so that benchstat can compare runs before and after a
// change.
func socketsLines(w io.Writer, cells []*socketsCell, suffix string) {
	for _, c := range cells {
		if c.failed != "" {
			continue
		}
		r := c.r
		fmt.Fprintf(w, "Benchmark%s/transport=%s%s\t1\t%d ns/op", c.w.Name, c.transport, suffix, r.Connect.Nanoseconds())
		for _, end := range []struct {
			name string
			e    bench.SocketEnd
		}{{"server", r.Server}, {"client", r.Client}} {
			fmt.Fprintf(w, "\t%.2f %s-lib-goroutines/socket\t%.0f %s-B/socket\t%.1f %s-peak-MiB",
				end.e.Library, end.name, end.e.Heap+end.e.Stack, end.name, float64(end.e.Peak)/(1<<20), end.name)
		}
		fmt.Fprintf(w, "\t%d answered\n", r.Answered)
	}
}
