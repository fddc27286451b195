package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// Sockets: N physical sockets, each carrying one logical
// connection that does one round trip and then idles. What does one idle
// socket end cost, server side and client side apart: goroutines (the
// library's, beside the workload's own) and heap+stack bytes? Do the idle
// sockets survive keepalives, answering one more round trip each? How
// long does it take to connect them all, and how much memory on the way?
//
// The server and the client fleet are two child processes (sockets_end.go)
// of the process that runs the cell, re-executions of its own binary, so
// each end is measured alone, against a baseline taken in its process
// before any socket existed.

// SocketsWorkload is one group of rows of the Sockets table.
type SocketsWorkload struct {
	Name string
	N    int // physical sockets, one logical connection each
}

// SocketsWorkloads are run by the compare command with -all or an -only
// that matches their name; -short keeps the first.
var SocketsWorkloads = []SocketsWorkload{
	{"Sockets1k", 1_000},
	{"Sockets10k", 10_000},
}

const (
	// SocketsKeepAlive is every transport's keepalive interval in the
	// workload (tcpconn's and smux's timeouts are three intervals, yamux's
	// ping waits that long for its answer; raw has no keepalive).
	SocketsKeepAlive = time.Second
	// SocketsIdle is how long the sockets idle between the measurement's
	// round trips: two and a half keepalive intervals, so that every
	// transport's keepalive has run at least twice, and well under any
	// transport's keepalive or idle timeout.
	SocketsIdle = SocketsKeepAlive * 5 / 2
	// SocketWorkers is how many sockets a client phase works on at once:
	// enough to overlap dials and round trips on two cores, few enough
	// that the listen backlog (SOMAXCONN, 4096 on Linux) never overflows.
	SocketWorkers = 64
)

// askLimit bounds the answer to a command that does not work on every
// socket (the phases that do are bounded by phaseLimit in the child). A
// measurement is a garbage collection, which took seconds in a server
// whose idle sockets kept both cores busy.
const askLimit = 2 * time.Minute

// SocketEnd is what one end of the workload holds per idle socket, above
// its process's baseline.
type SocketEnd struct {
	Goroutines float64 // all of them, per socket
	Library    float64 // Goroutines less the workload's own: the transport's
	Heap       float64 // live heap bytes per socket, as the last GC marked them
	Stack      float64 // goroutine stack bytes per socket (StackInuse)
	Peak       int64   // heap in use, high water while connecting, whole process
}

// SocketsResult is one cell of the Sockets table.
type SocketsResult struct {
	Transport      string
	N              int
	Server, Client SocketEnd
	Connect        time.Duration // first dial to the last first round trip (client clock)
	Answered       int           // sockets that answered a round trip after SocketsIdle
	Notes          []string      // anything that went wrong short of a failure
}

// Run runs the workload over one transport (one of SocketsTransports). An
// error means the cell has no figures: a child failed or did not answer in
// time, or not every socket did its first round trip.
func (w SocketsWorkload) Run(transport string) (SocketsResult, error) {
	spec := endSpec{Role: serverRole, Transport: transport, N: w.N, KeepAlive: SocketsKeepAlive}
	srv, err := startEnd(spec)
	if err != nil {
		return SocketsResult{}, err
	}
	hello, err := srv.ask("", askLimit)
	if err != nil {
		return SocketsResult{}, srv.failed(err)
	}
	spec.Role, spec.Addr = clientsRole, hello.Addr
	cl, err := startEnd(spec)
	if err != nil {
		return SocketsResult{}, srv.failed(err)
	}
	run := socketsRun{srv: srv, cl: cl, n: w.N}
	r := run.steps()
	r.Transport = transport
	for _, p := range []*endProcess{cl, srv} {
		if err := p.stop(); err != nil && run.err == nil {
			run.err = err
		}
	}
	return r, run.err
}

// socketsRun is the sequence of one cell: after a failed step the others
// do nothing, and Run stops both children whatever happened.
type socketsRun struct {
	srv, cl *endProcess
	n       int
	err     error
}

func (s *socketsRun) ask(p *endProcess, cmd string, limit time.Duration) endReport {
	if s.err != nil {
		return endReport{}
	}
	rep, err := p.ask(cmd, limit)
	if err != nil {
		s.err = p.failed(err)
	}
	return rep
}

func (s *socketsRun) steps() SocketsResult {
	connected := s.ask(s.cl, cmdConnect, phaseLimit+askLimit)
	if s.err == nil && connected.Done < s.n {
		s.err = fmt.Errorf("connect: %d of %d sockets did their first round trip; first failure: %s", connected.Done, s.n, connected.Err)
	}
	serverPeak := s.ask(s.srv, cmdPeak, askLimit)
	if s.err == nil {
		// The idle period itself: a deliberate, bounded wait, not a
		// synchronisation; the keepalives run meanwhile.
		time.Sleep(SocketsIdle)
	}
	serverIdle := s.ask(s.srv, cmdMeasure, askLimit)
	clientsIdle := s.ask(s.cl, cmdMeasure, askLimit)
	again := s.ask(s.cl, cmdAgain, phaseLimit+askLimit)
	clientsClosed := s.ask(s.cl, cmdClose, exitLimit)
	serverClosed := s.ask(s.srv, cmdClose, exitLimit)
	if s.err != nil {
		return SocketsResult{}
	}
	r := SocketsResult{
		N:        s.n,
		Server:   perSocket(serverIdle.Above, s.n, serverAppFixed, serverAppPerSocket, serverPeak.Peak),
		Client:   perSocket(clientsIdle.Above, s.n, 0, 0, connected.Peak),
		Connect:  connected.Wall,
		Answered: again.Done,
	}
	if again.Done < s.n {
		r.Notes = append(r.Notes, fmt.Sprintf("%d of %d sockets did not answer after the idle period; first: %s", s.n-again.Done, s.n, again.Err))
	}
	if serverIdle.Lost > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("the server lost %d logical connections while they idled; first: %s", serverIdle.Lost, serverIdle.Err))
	}
	if serverClosed.Accepts != s.n {
		r.Notes = append(r.Notes, fmt.Sprintf("the server accepted %d sockets, not %d: a client dialled again", serverClosed.Accepts, s.n))
	}
	if serverClosed.Left > 0 || clientsClosed.Left > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("goroutines still running %v after close: server %d, clients %d", settleLimit, serverClosed.Left, clientsClosed.Left))
	}
	return r
}

// perSocket divides an end's footprint by its n sockets; appFixed and
// appPerSocket are the workload's own goroutines in that process.
func perSocket(above *footprint, n, appFixed, appPerSocket int, peak int64) SocketEnd {
	g := float64(above.Goroutines)
	return SocketEnd{
		Goroutines: g / float64(n),
		Library:    (g-float64(appFixed))/float64(n) - float64(appPerSocket),
		Heap:       float64(above.Heap) / float64(n),
		Stack:      float64(above.Stack) / float64(n),
		Peak:       peak,
	}
}

// endProcess is a running child: one end of a cell.
type endProcess struct {
	role    string
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	replies chan endReport // closed when stdout ends
	stderr  bytes.Buffer   // read only after wait
	exited  chan error     // Wait's result

	waitOnce sync.Once
	waitErr  error
}

func startEnd(spec endSpec) (*endProcess, error) {
	exe, err := runningExecutable()
	if err != nil {
		return nil, err
	}
	specJSON, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	p := &endProcess{role: spec.Role, cmd: exec.Command(exe), replies: make(chan endReport, 8), exited: make(chan error, 1)}
	p.cmd.Env = append(os.Environ(), socketsEnv+"="+string(specJSON))
	p.cmd.Stderr = &p.stderr
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("sockets %s: %w", spec.Role, err)
	}
	go func() {
		// The child answers one line per command, so the buffer never
		// fills while the parent is waiting for an answer.
		defer close(p.replies)
		dec := json.NewDecoder(stdout)
		for {
			var rep endReport
			if dec.Decode(&rep) != nil {
				return
			}
			p.replies <- rep
		}
	}()
	go func() { p.exited <- p.cmd.Wait() }()
	return p, nil
}

// ask sends cmd (none: just wait for the next answer) and waits at most
// limit for the answer.
func (p *endProcess) ask(cmd string, limit time.Duration) (endReport, error) {
	what := "its first line"
	if cmd != "" {
		what = fmt.Sprintf("the answer to %q", cmd)
		if _, err := io.WriteString(p.stdin, cmd+"\n"); err != nil {
			return endReport{}, fmt.Errorf("sockets %s: %s: %w", p.role, cmd, err)
		}
	}
	select {
	case rep, ok := <-p.replies:
		if !ok {
			return endReport{}, fmt.Errorf("sockets %s: exited before %s", p.role, what)
		}
		return rep, nil
	case <-time.After(limit):
		return endReport{}, fmt.Errorf("sockets %s: no %s within %v", p.role, what, limit)
	}
}

// stop ends the child: it exits by itself after close or at the end of
// its stdin, or is killed after exitLimit. The error names a non-zero exit
// and the end of the child's stderr.
func (p *endProcess) stop() error {
	p.stdin.Close()
	if err := p.wait(); err != nil {
		return fmt.Errorf("sockets %s: %w%s", p.role, err, p.stderrTail())
	}
	return nil
}

// failed kills the child after an error and adds what it said on stderr.
func (p *endProcess) failed(err error) error {
	p.stdin.Close()
	p.cmd.Process.Kill()
	p.wait()
	return fmt.Errorf("%w%s", err, p.stderrTail())
}

// exitLimit bounds the wait for a child to exit once its stdin is closed:
// it closes every socket first (settleLimit) and then exits.
const exitLimit = settleLimit + askLimit

// wait returns the child's exit, killing it past exitLimit; once.
func (p *endProcess) wait() error {
	p.waitOnce.Do(func() {
		select {
		case p.waitErr = <-p.exited:
		case <-time.After(exitLimit):
			p.cmd.Process.Kill()
			p.waitErr = fmt.Errorf("killed after %v: %w", exitLimit, <-p.exited)
		}
	})
	return p.waitErr
}

func (p *endProcess) stderrTail() string {
	s := strings.TrimSpace(p.stderr.String())
	if s == "" {
		return ""
	}
	if len(s) > 2000 {
		s = "..." + s[len(s)-2000:]
	}
	return "; stderr: " + s
}
