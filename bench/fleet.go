package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	tcpconn "github.com/pulsyflux/tcp-conn"
)

// A fleet of well-behaved clients against a server that never claims what
// they send: the server wraps each accepted socket with one ID, "x", as the
// original TCP-Conn README's server example does, and the fleet's logical
// connections use other IDs, so every message they send is kept for an ID
// nobody holds, within the credit the server grants. What the server's
// heap rises by is what its windows and its Budget let a fleet make it
// hold. A bystander on one more socket of the same server does round trips
// on "x" meanwhile.

// FleetConfig describes one fleet attack.
type FleetConfig struct {
	Sockets      int           // attacker sockets, one tcpconn.Client each
	IDsPerSocket int           // logical connections per socket, never claimed
	MessageSize  int           // bytes per message
	Quiet        time.Duration // the fill has stalled once no Send succeeded for this long
	FillLimit    time.Duration // the attack ends after this long even if Sends still succeed
	// HeapStop cuts the attack short once the server's heap in use passes
	// it: the fleet is killed and its sockets closed.
	HeapStop uint64
	// AllowOverBound lets an attack run whose documented worst case,
	// Sockets x (LinkWindow + MaxMessageSize), exceeds fleetBoundLimit.
	AllowOverBound bool
}

// DefaultFleetConfig is the Budget workload's attack with n sockets: 70 logical
// connections each (more than LinkWindow / StreamWindow, so the link
// window, not the streams', is what binds), 60 KiB messages.
func DefaultFleetConfig(n int) FleetConfig {
	return FleetConfig{
		Sockets:      n,
		IDsPerSocket: 70,
		MessageSize:  60 << 10,
		Quiet:        2 * time.Second,
		FillLimit:    3 * time.Minute,
		HeapStop:     12 << 30,
	}
}

// fleetBoundLimit is the documented worst case a fleet may run into
// without AllowOverBound: enough for 200 sockets at the default windows,
// well below this machine's 24 GiB.
const fleetBoundLimit = 16 << 30

// FleetResult is what one attack measured in the server's process.
type FleetResult struct {
	Config        FleetConfig    // the attack, also when MeasureFleet failed
	Fill          time.Duration  // from the fleet's start to its last Send that returned nil
	SentBytes     uint64         // payload of the fleet's Sends that returned nil
	AcceptedBytes uint64         // payload the server received on the fleet's sockets
	HeapBase      uint64         // server's heap in use before the attack, after a GC
	HeapPeak      uint64         // its high-water mark during the attack (sampled every 10 ms)
	LiveBase      uint64         // live heap before the attack, after a GC
	HeapLive      uint64         // live heap once the fill stalled, after a GC
	Stopped       string         // why the attack was cut short; "" if the fill stalled by itself
	SendErrors    map[string]int // the fleet's failed Sends, by error
	Bystander     BystanderFigures
}

// BystanderFigures are the bystander's round trips from the fleet's start
// until its last Send that returned nil (until the attack was cut short, if
// it was).
type BystanderFigures struct {
	RoundTrips    int
	P50, P99, Max time.Duration
	Err           string // the first failed round trip, if one failed
}

// PeakRise and LiveRise are the heap's rise over its level before the
// attack: the high-water mark of the heap in use, and the live heap after
// the fill.
func (r FleetResult) PeakRise() uint64 { return sub0(r.HeapPeak, r.HeapBase) }
func (r FleetResult) LiveRise() uint64 { return sub0(r.HeapLive, r.LiveBase) }

func sub0(a, b uint64) uint64 {
	if a < b {
		return 0
	}
	return a - b
}

// fleetServer accepts sockets and wraps each with ID "x", echoing what
// arrives on it (only the bystander sends there) through ReceiveAppend, so
// that the echo makes no garbage to blur the heap's high-water mark.
type fleetServer struct {
	ln    net.Listener
	mu    sync.Mutex
	socks []net.Conn
	wg    sync.WaitGroup
}

func startFleetServer() (*fleetServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &fleetServer{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			sock, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.socks = append(s.socks, sock)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				c := tcpconn.WrapConnectionWithID(sock, "x", 0)
				defer c.Close()
				var buf []byte
				for {
					var err error
					if buf, err = c.ReceiveAppend(context.Background(), buf[:0]); err != nil {
						return
					}
					if c.Send(buf) != nil {
						return
					}
				}
			}()
		}
	}()
	return s, nil
}

// closeSockets ends every accepted socket, which frees what the server
// holds for them; close also waits for the server's goroutines.
func (s *fleetServer) closeSockets() {
	s.ln.Close()
	s.mu.Lock()
	for _, c := range s.socks {
		c.Close()
	}
	s.mu.Unlock()
}

func (s *fleetServer) close() {
	s.closeSockets()
	s.wg.Wait()
}

// acceptedExcept sums the payload received by the server's links except
// the one whose peer is at addr (the bystander's).
func acceptedExcept(addr string) uint64 {
	var n uint64
	for _, l := range tcpconn.ReadLinkStats() {
		if !l.Client && l.RemoteAddr != addr {
			n += l.BytesIn
		}
	}
	return n
}

// MeasureFleet runs one attack against a server in this process, the fleet
// in a child process (this program again, see IsAttackerProcess), and
// returns what the server's heap did. It ends by itself: when the fill
// stalls, when FillLimit passes, or when the heap passes HeapStop.
func MeasureFleet(cfg FleetConfig) (FleetResult, error) {
	res := FleetResult{Config: cfg}
	dc := tcpconn.DefaultConfig()
	perSocket := uint64(dc.LinkWindow + dc.MaxMessageSize)
	if worst := uint64(cfg.Sockets) * perSocket; worst > fleetBoundLimit && !cfg.AllowOverBound {
		return res, fmt.Errorf("%d sockets x %d MiB (LinkWindow + MaxMessageSize) is %d GiB, over %d GiB: refused without AllowOverBound (compare: -budget-over-bound)",
			cfg.Sockets, perSocket>>20, worst>>30, fleetBoundLimit>>30)
	}
	srv, err := startFleetServer()
	if err != nil {
		return res, err
	}
	defer srv.close()
	addr := srv.ln.Addr().String()

	by, err := startBystander(addr)
	if err != nil {
		return res, err
	}
	defer by.close()

	debug.FreeOSMemory()
	res.LiveBase = liveHeap()
	res.HeapBase = heapInUse()

	spec, _ := json.Marshal(attackSpec{Addr: addr, Sockets: cfg.Sockets, IDsPerSocket: cfg.IDsPerSocket,
		MessageSize: cfg.MessageSize, Quiet: cfg.Quiet, FillLimit: cfg.FillLimit})
	exe, err := runningExecutable()
	if err != nil {
		return res, err
	}
	child := exec.Command(exe)
	child.Env = append(os.Environ(), attackerEnv+"="+string(spec))
	child.Stderr = os.Stderr
	toChild, err := child.StdinPipe()
	if err != nil {
		return res, err
	}
	fromChild, err := child.StdoutPipe()
	if err != nil {
		return res, err
	}

	if err := child.Start(); err != nil {
		return res, err
	}
	// An attack cut short says why, when, and what the server had accepted
	// by then (its sockets may be closed right after).
	type cut struct {
		why      string
		at       time.Time
		accepted uint64
	}
	cuts := make(chan cut, 1)
	cutShort := func(why string) {
		select {
		case cuts <- cut{why, time.Now(), acceptedExcept(by.localAddr)}:
		default: // the first reason stands
		}
	}
	watch := watchHeap(cfg.HeapStop, func(inUse uint64) {
		cutShort(fmt.Sprintf("heap in use passed %d MiB (%d MiB)", cfg.HeapStop>>20, inUse>>20))
		// Stop the growth at once: with the sockets closed the server
		// drops what it held for them.
		child.Process.Kill()
		srv.closeSockets()
	})
	by.measure()
	reports := make(chan attackReport, 1)
	go func() {
		var rep attackReport
		line, err := bufio.NewReader(fromChild).ReadBytes('\n')
		if err == nil && json.Unmarshal(line, &rep) == nil {
			reports <- rep
			return
		}
		cutShort("the fleet ended without a report")
	}()

	var until time.Time // the end of what the bystander's figures cover
	select {
	case rep := <-reports:
		res.Fill, res.SentBytes, res.SendErrors = rep.FillEnd.Sub(rep.Start), rep.SentBytes, rep.Errors
		until = rep.FillEnd
		if !rep.Stalled {
			res.Stopped = fmt.Sprintf("Sends still succeeded after %v", cfg.FillLimit)
		}
		res.AcceptedBytes = acceptedExcept(by.localAddr)
		res.HeapLive = liveHeap()
	case c := <-cuts:
		res.Stopped, res.AcceptedBytes, until = c.why, c.accepted, c.at
	case <-time.After(cfg.FillLimit + time.Minute):
		res.Stopped, res.AcceptedBytes, until = "no report from the fleet in time", acceptedExcept(by.localAddr), time.Now()
	}
	res.Bystander = by.stop(until)
	res.HeapPeak = watch.end()

	toChild.Close() // the fleet closes its sockets and exits
	exited := make(chan error, 1)
	go func() { exited <- child.Wait() }()
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		child.Process.Kill()
		<-exited
	}
	return res, nil
}

// runningExecutable names this process's program for a re-exec. On Linux
// that is /proc/self/exe, the file that is running even if its path has
// been replaced meanwhile (a rebuilt binary in a shared /tmp).
func runningExecutable() (string, error) {
	if runtime.GOOS == "linux" {
		if _, err := os.Stat("/proc/self/exe"); err == nil {
			return "/proc/self/exe", nil
		}
	}
	return os.Executable()
}

// bystander does 1 KiB round trips on ID "x" over a socket of its own
// while the fleet attacks, back to back, timing each. It receives with
// ReceiveAppend into one buffer, so it makes no garbage in the server's
// process.
type bystander struct {
	client    *tcpconn.Client
	conn      *tcpconn.Connection
	localAddr string // its socket's address, as the server sees the peer
	buf       []byte

	mu      sync.Mutex
	trips   []trip
	err     error // the round trip that failed, which ended the loop
	errAt   time.Time
	begin   chan struct{} // closed by measure
	measure func()
	halt    chan struct{}
	done    chan struct{}
}

// trip is one timed round trip.
type trip struct {
	start time.Time
	took  time.Duration
}

// bystanderPatience bounds one round trip, so that a server that stopped
// answering fails the bystander instead of hanging the measurement.
const bystanderPatience = 10 * time.Second

func startBystander(addr string) (*bystander, error) {
	cl, err := tcpconn.NewClient(nil)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), bystanderPatience)
	defer cancel()
	c, err := cl.Dial(ctx, addr, tcpconn.WithID("x"))
	if err != nil {
		cl.Close()
		return nil, err
	}
	b := &bystander{client: cl, conn: c, begin: make(chan struct{}), halt: make(chan struct{}), done: make(chan struct{})}
	if links := cl.Links(); len(links) == 1 {
		b.localAddr = links[0].LocalAddr
	}
	var once sync.Once
	b.measure = func() { once.Do(func() { close(b.begin) }) }
	msg := newMessage(1 << 10)
	for seq := range 10 { // warm up
		stamp(msg, 0, uint64(seq))
		if err := b.roundTrip(msg); err != nil {
			cl.Close()
			return nil, err
		}
	}
	go b.loop(msg)
	return b, nil
}

// loop does round trips from measure until stop.
func (b *bystander) loop(msg []byte) {
	defer close(b.done)
	select {
	case <-b.begin:
	case <-b.halt:
		return
	}
	for seq := uint64(10); ; seq++ {
		select {
		case <-b.halt:
			return
		default:
		}
		stamp(msg, 0, seq)
		t := time.Now()
		err := b.roundTrip(msg)
		took := time.Since(t)
		b.mu.Lock()
		if err != nil {
			b.err, b.errAt = err, t
		} else {
			b.trips = append(b.trips, trip{t, took})
		}
		b.mu.Unlock()
		if err != nil {
			return
		}
	}
}

func (b *bystander) roundTrip(msg []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), bystanderPatience)
	defer cancel()
	if err := b.conn.SendContext(ctx, msg); err != nil {
		return err
	}
	var err error
	if b.buf, err = b.conn.ReceiveAppend(ctx, b.buf[:0]); err != nil {
		return err
	}
	return check(b.buf, msg)
}

// stop ends the round trips and summarises those that started before
// until (all of them if until is zero): a round trip cut by the attack's
// teardown is not the attack's doing.
func (b *bystander) stop(until time.Time) BystanderFigures {
	select {
	case <-b.halt:
	default:
		close(b.halt)
	}
	<-b.done
	b.mu.Lock()
	defer b.mu.Unlock()
	var lat []time.Duration
	for _, t := range b.trips {
		if until.IsZero() || t.start.Before(until) {
			lat = append(lat, t.took)
		}
	}
	f := BystanderFigures{RoundTrips: len(lat)}
	if b.err != nil && (until.IsZero() || b.errAt.Before(until)) {
		f.Err = b.err.Error()
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		f.P50, f.P99, f.Max = percentile(lat, 0.50), percentile(lat, 0.99), lat[len(lat)-1]
	}
	return f
}

func (b *bystander) close() {
	b.stop(time.Time{})
	b.client.Close()
}
