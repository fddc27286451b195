package bench

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"runtime"
	"runtime/metrics"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// The two ends of a Sockets cell, each a process of its own (10,000 socket
// pairs need 20,000 descriptors, a common per-process limit): the
// server, a listener on 127.0.0.1 and every socket it accepts, and the
// client fleet, every socket dialled to it. The parent (sockets.go) starts
// them with socketsEnv set and drives them with one-word commands on stdin;
// each command is answered with one JSON line on stdout.

// socketsEnv holds the endSpec of a child process.
const socketsEnv = "TCPCONN_BENCH_SOCKETS_END"

const (
	serverRole  = "server"
	clientsRole = "clients"
)

// endSpec is what the parent asks a child process to be.
type endSpec struct {
	Role      string        `json:"role"`
	Transport string        `json:"transport"`
	N         int           `json:"n"`
	Addr      string        `json:"addr,omitempty"` // the server's, for the clients
	KeepAlive time.Duration `json:"keepAlive"`
}

// The commands, in the order the parent gives them. A child that reads
// the end of stdin without cmdClose closes everything and exits with an
// error (the parent is gone).
const (
	cmdConnect = "connect" // clients: dial every socket, one round trip on each
	cmdPeak    = "peak"    // server: the heap's high water since the baseline
	cmdMeasure = "measure" // both: the footprint above the baseline
	cmdAgain   = "again"   // clients: one more round trip on every socket
	cmdClose   = "close"   // both: close everything, count what is left; then exit
)

// endReport is a child's answer; each command fills its own fields.
type endReport struct {
	Addr    string        `json:"addr,omitempty"`  // the server's first line, once it listens
	Done    int           `json:"done,omitempty"`  // round trips answered in the phase
	Wall    time.Duration `json:"wall,omitempty"`  // the phase's wall time
	Peak    int64         `json:"peak,omitempty"`  // heap in use, high water above the baseline
	Above   *footprint    `json:"above,omitempty"` // cmdMeasure
	Accepts int           `json:"accepts,omitempty"`
	Lost    int           `json:"lost,omitempty"` // server: logical connections that failed, not closed by it
	Left    int           `json:"left,omitempty"` // goroutines above the baseline after close
	Err     string        `json:"err,omitempty"`  // the first failure seen
}

const (
	// phaseLimit bounds one phase of the client fleet; past it every
	// socket is closed so that blocked calls return and the phase reports
	// what it got.
	phaseLimit = 2 * time.Minute
	// endLimit bounds a child's whole life, should its parent hang.
	endLimit = 10 * time.Minute
	// settleLimit bounds the wait for goroutines to end after close.
	settleLimit = 30 * time.Second
)

// IsSocketsEndProcess says whether this process was started as an end of
// a Sockets cell; a program that runs the workload calls it first thing
// and then RunSocketsEndProcess.
func IsSocketsEndProcess() bool { return os.Getenv(socketsEnv) != "" }

// RunSocketsEndProcess runs the end the parent asked for and returns the
// process's exit code.
func RunSocketsEndProcess() int {
	spec := os.Getenv(socketsEnv)
	time.AfterFunc(endLimit, func() {
		fmt.Fprintf(os.Stderr, "sockets %s: still running after %v, exiting\n", spec, endLimit)
		os.Exit(3)
	})
	if err := runEnd(spec, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "sockets %s: %v\n", spec, err)
		return 1
	}
	return 0
}

func runEnd(specJSON string, in io.Reader, out io.Writer) error {
	var spec endSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		return err
	}
	peer, err := socketPeerFor(spec.Transport, spec.KeepAlive)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(out)
	var handlers map[string]func() endReport
	switch spec.Role {
	case serverRole:
		s, err := startSocketServer(peer)
		if err != nil {
			return err
		}
		if err := enc.Encode(endReport{Addr: s.ln.Addr().String()}); err != nil {
			s.close()
			return err
		}
		handlers = map[string]func() endReport{cmdPeak: s.peak, cmdMeasure: s.measure, cmdClose: s.close}
	case clientsRole:
		f := newClientFleet(peer, spec)
		handlers = map[string]func() endReport{cmdConnect: f.connect, cmdMeasure: f.measure, cmdAgain: f.again, cmdClose: f.close}
	default:
		return fmt.Errorf("no role %q", spec.Role)
	}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		handle, ok := handlers[sc.Text()]
		if !ok {
			handlers[cmdClose]()
			return fmt.Errorf("no command %q for the %s", sc.Text(), spec.Role)
		}
		if err := enc.Encode(handle()); err != nil {
			handlers[cmdClose]()
			return err
		}
		if sc.Text() == cmdClose {
			return nil
		}
	}
	handlers[cmdClose]()
	return errors.New("stdin ended before the close command")
}

// footprint is what a process holds, as the workload counts it, right
// after runtime.GC: goroutines, the live heap and goroutine stacks
// (StackInuse).
//
// The live heap is what that collection marked (runtime/metrics
// /gc/heap/live:bytes): reachable objects only. HeapAlloc (and liveHeap's
// heap objects, the same figure) adds what was allocated while the
// collection ran, which varies with how long it ran:
// tcpconn's server of 4,000 idle sockets took 2 to 9 s per collection and
// showed up to 9 % more, of 10,000 twice as much. HeapInuse would add the
// free slots of partly used spans as well.
type footprint struct {
	Goroutines int   `json:"goroutines"`
	Heap       int64 `json:"heap"`
	Stack      int64 `json:"stack"`
}

func measureFootprint() footprint {
	runtime.GC()
	live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(live)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return footprint{runtime.NumGoroutine(), int64(live[0].Value.Uint64()), int64(ms.StackInuse)}
}

func (f footprint) minus(b footprint) footprint {
	return footprint{f.Goroutines - b.Goroutines, f.Heap - b.Heap, f.Stack - b.Stack}
}

// endBase is what both ends share: the baseline, taken before any socket
// exists, and a watch of the heap in use from then until endPeak.
type endBase struct {
	base     footprint
	baseHeap uint64 // heapInUse at the baseline
	watch    *heapWatch
}

func (b *endBase) begin() {
	b.base = measureFootprint()
	b.baseHeap = heapInUse()
	b.watch = watchHeap(math.MaxUint64, nil)
}

// endPeak stops the watch, once, and returns the high water of the heap in
// use above the baseline (0 after the first call).
func (b *endBase) endPeak() int64 {
	if b.watch == nil {
		return 0
	}
	peak := b.watch.end()
	b.watch = nil
	return int64(sub0(peak, b.baseHeap))
}

func (b *endBase) above() *footprint {
	f := measureFootprint().minus(b.base)
	return &f
}

// settle waits, at most settleLimit, for the goroutine count to fall back
// to the baseline's, polling as goleak does, and returns how many are left
// above it.
func (b *endBase) settle() int {
	deadline := time.Now().Add(settleLimit)
	for {
		left := runtime.NumGoroutine() - b.base.Goroutines
		if left <= 0 || time.Now().After(deadline) {
			return max(left, 0)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// firstError keeps the first of many failures, and counts them.
type firstError struct {
	mu    sync.Mutex
	n     int
	first error
}

func (f *firstError) add(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n++; f.first == nil {
		f.first = err
	}
}

func (f *firstError) get() (int, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.first == nil {
		return f.n, ""
	}
	return f.n, f.first.Error()
}

// socketServer accepts sockets and, in one goroutine per socket, wraps it
// and echoes on its logical connection: besides the library's, the
// workload's goroutines are the accept loop and that one per socket
// (serverAppFixed, serverAppPerSocket).
type socketServer struct {
	endBase
	peer    socketPeer
	ln      net.Listener
	accepts atomic.Int32
	lost    firstError // logical connections that failed (after the clients close, all do)

	mu      sync.Mutex
	closing bool
	socks   []net.Conn
	conns   []Conn
	wg      sync.WaitGroup // the accept loop and every socket's goroutine
}

const (
	serverAppFixed     = 1
	serverAppPerSocket = 1
)

func startSocketServer(peer socketPeer) (*socketServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &socketServer{peer: peer, ln: ln}
	s.begin()
	s.wg.Add(1)
	go s.acceptLoop()
	return s, nil
}

func (s *socketServer) acceptLoop() {
	defer s.wg.Done()
	for {
		sock, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.accepts.Add(1)
		if !s.track(sock, nil) {
			sock.Close()
			return
		}
		s.wg.Add(1)
		go s.serve(sock)
	}
}

// track remembers a socket or a logical connection for close; false means
// the server is closing and the caller closes it.
func (s *socketServer) track(sock net.Conn, c Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	if sock != nil {
		s.socks = append(s.socks, sock)
	}
	if c != nil {
		s.conns = append(s.conns, c)
	}
	return true
}

func (s *socketServer) serve(sock net.Conn) {
	defer s.wg.Done()
	c, err := s.peer.wrap(sock)
	if err == nil && !s.track(nil, c) {
		c.Close()
		return
	}
	if err == nil {
		err = echo(c)
	}
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if !closing {
		s.lost.add(fmt.Errorf("socket from %v: %w", sock.RemoteAddr(), err))
	}
}

func (s *socketServer) peak() endReport { return endReport{Peak: s.endPeak()} }

func (s *socketServer) measure() endReport {
	r := endReport{Above: s.above(), Accepts: int(s.accepts.Load())}
	r.Lost, r.Err = s.lost.get()
	return r
}

func (s *socketServer) close() endReport {
	s.endPeak()
	s.mu.Lock()
	s.closing = true
	conns, socks := s.conns, s.socks
	s.mu.Unlock()
	s.ln.Close()
	for _, c := range conns {
		c.Close()
	}
	for _, sock := range socks {
		sock.Close()
	}
	s.wg.Wait() // every blocked call returns once its socket is closed
	return endReport{Accepts: int(s.accepts.Load()), Left: s.settle()}
}

// clientFleet dials spec.N sockets to the server, each with one logical
// connection. Between phases it has no goroutines of its own.
type clientFleet struct {
	endBase
	peer socketPeer
	addr string

	mu      sync.Mutex
	aborted bool
	conns   []Conn // by socket index; nil until dialled; the length is fixed
}

func newClientFleet(peer socketPeer, spec endSpec) *clientFleet {
	f := &clientFleet{peer: peer, addr: spec.Addr, conns: make([]Conn, spec.N)}
	f.begin()
	return f
}

var errAborted = fmt.Errorf("aborted: the phase took longer than %v", phaseLimit)

// eachSocket runs do for every socket index on SocketWorkers goroutines
// and returns how many succeeded and the first failure. Past phaseLimit
// it closes every socket, so that blocked calls return, and starts no
// more.
func (f *clientFleet) eachSocket(do func(i int) error) (int, string) {
	limit := time.AfterFunc(phaseLimit, f.abort)
	defer limit.Stop()
	var next, done atomic.Int64
	var failed firstError
	var wg sync.WaitGroup
	for range SocketWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(f.conns) || f.isAborted() {
					return
				}
				if err := do(i); err != nil {
					failed.add(fmt.Errorf("socket %d: %w", i, err))
					continue
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	_, first := failed.get()
	switch {
	case f.isAborted() && first == "":
		first = errAborted.Error()
	case f.isAborted():
		first = errAborted.Error() + "; first failure: " + first
	}
	return int(done.Load()), first
}

func (f *clientFleet) isAborted() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.aborted
}

// roundTripOn does one checked 16-byte round trip on c stamped (i, seq).
func roundTripOn(c Conn, i, seq int) error {
	msg := make([]byte, hdrLen)
	stamp(msg, uint64(i), uint64(seq))
	return roundTrip(c, msg)
}

func (f *clientFleet) connect() endReport {
	start := time.Now()
	done, err := f.eachSocket(func(i int) error {
		c, err := f.peer.dial(f.addr)
		if err != nil {
			return err
		}
		f.mu.Lock()
		aborted := f.aborted
		if !aborted {
			f.conns[i] = c
		}
		f.mu.Unlock()
		if aborted {
			c.Close()
			return errAborted
		}
		return roundTripOn(c, i, 0)
	})
	return endReport{Done: done, Wall: time.Since(start), Peak: f.endPeak(), Err: err}
}

func (f *clientFleet) measure() endReport { return endReport{Above: f.above()} }

func (f *clientFleet) again() endReport {
	start := time.Now()
	done, err := f.eachSocket(func(i int) error {
		f.mu.Lock()
		c := f.conns[i]
		f.mu.Unlock()
		if c == nil {
			return errors.New("never connected")
		}
		if err := roundTripOn(c, i, 1); err != nil {
			return err
		}
		if r, ok := c.(redialler); ok && r.redialled() {
			return errors.New("answered over a new socket: the client dialled again after losing the idle one")
		}
		return nil
	})
	return endReport{Done: done, Wall: time.Since(start), Err: err}
}

// abort closes every socket, once; a dial that completes later is closed
// by connect.
func (f *clientFleet) abort() {
	f.mu.Lock()
	if f.aborted {
		f.mu.Unlock()
		return
	}
	f.aborted = true
	conns := slices.Clone(f.conns)
	f.mu.Unlock()
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}

func (f *clientFleet) close() endReport {
	f.endPeak()
	f.abort()
	return endReport{Left: f.settle()}
}
