package bench

import (
	"errors"
	"fmt"
	tcpconn "github.com/pulsyflux/tcp-conn"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// watchdog bounds one run of a workload: past it everything is closed so
// blocked calls return and the benchmark fails instead of hanging.
const watchdog = 3 * time.Minute

// teardownLimit bounds the wait for server goroutines after close.
const teardownLimit = 2 * time.Minute

// env is one client and one server of a transport, connected over one
// accepted socket on 127.0.0.1.
type env struct {
	b       *testing.B
	conns   []Conn
	closeCl func() error

	ln          net.Listener
	path        io.Closer // a delayProxy between client and server, if any
	accepts     atomic.Int32
	lanes       atomic.Int32 // accepted sockets that became a tcpconn link's bulk lane
	wantAccepts int32        // 1, or n for a SocketPerConn transport
	mu          sync.Mutex
	socks       []net.Conn
	acceptWG    sync.WaitGroup
	serveWG     sync.WaitGroup

	closing   atomic.Bool
	abortOnce sync.Once
	errMu     sync.Mutex
	err       error         // first failure seen by a server handler or the watchdog
	failed    chan struct{} // closed when err is set
	timer     *time.Timer
}

// setup listens, dials n logical connections, and serves each server-side
// Conn with handle. A non-nil error from handle fails the run unless the
// env is being torn down.
func setup(b *testing.B, tr Transport, n int, perConn bool, handle func(Conn) error) *env {
	b.Helper()
	return setupDelayed(b, tr, n, perConn, 0, handle)
}

// setupDelayed is setup with the client dialling through a delayProxy that
// adds rtt to every round trip (none if rtt is 0).
func setupDelayed(b *testing.B, tr Transport, n int, perConn bool, rtt time.Duration, handle func(Conn) error) *env {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	e := &env{b: b, ln: ln, failed: make(chan struct{}), wantAccepts: 1}
	dialAddr := ln.Addr().String()
	if rtt > 0 {
		p, err := newDelayProxy(dialAddr, rtt/2)
		if err != nil {
			ln.Close()
			b.Fatal(err)
		}
		e.path, dialAddr = p, p.Addr()
	}
	if tr.SocketPerConn {
		e.wantAccepts = int32(n)
	}
	ready := make(chan struct{})
	var readyOnce sync.Once // a SocketPerConn transport serves n sockets
	e.acceptWG.Add(1)
	go func() {
		defer e.acceptWG.Done()
		for {
			sock, err := ln.Accept()
			if err != nil {
				return
			}
			e.accepts.Add(1)
			e.mu.Lock()
			e.socks = append(e.socks, sock)
			e.mu.Unlock()
			e.serveWG.Add(1)
			go func() {
				defer e.serveWG.Done()
				var lane atomic.Bool
				tr.Serve(sock, n, perConn, func() { readyOnce.Do(func() { close(ready) }) }, func(c Conn) {
					err := handle(c)
					// The socket joined its link as its bulk lane, or was
					// about to when the teardown cut its handshake (a lane
					// is opened mid-run; one that never got its HELLO or
					// LANE through carried no message either).
					if errors.Is(err, tcpconn.ErrBulkLane) || e.closing.Load() && errors.Is(err, tcpconn.ErrHandshake) {
						lane.Store(true)
						return
					}
					if err != nil && !e.closing.Load() {
						e.fail(fmt.Errorf("server: %w", err))
					}
				})
				if lane.Load() {
					e.lanes.Add(1)
				}
			}()
		}
	}()
	e.conns, e.closeCl, err = tr.Dial(dialAddr, n)
	if err != nil {
		ln.Close()
		if e.path != nil {
			e.path.Close()
		}
		b.Fatal(err)
	}
	if !tr.LazyDial {
		select {
		case <-ready:
		case <-time.After(10 * time.Second):
			e.teardown()
			b.Fatal("server not ready after 10s")
		}
	}
	e.timer = time.AfterFunc(watchdog, func() { e.fail(errors.New("watchdog: run took too long")) })
	return e
}

// fail records the first error and closes both sides so that every blocked
// call returns.
func (e *env) fail(err error) {
	e.errMu.Lock()
	if e.err == nil {
		e.err = err
		close(e.failed)
	}
	e.errMu.Unlock()
	e.abort()
}

func (e *env) failure() error {
	e.errMu.Lock()
	defer e.errMu.Unlock()
	return e.err
}

func (e *env) abort() {
	e.abortOnce.Do(func() {
		e.closing.Store(true)
		e.closeCl()
		e.ln.Close()
		e.mu.Lock()
		for _, s := range e.socks {
			s.Close()
		}
		e.mu.Unlock()
	})
}

// fatalf fails the benchmark, naming a server-side failure if there was one.
func (e *env) fatalf(format string, args ...any) {
	e.b.Helper()
	msg := fmt.Sprintf(format, args...)
	if err := e.failure(); err != nil {
		msg += " (" + err.Error() + ")"
	}
	e.teardown()
	recordFailure(msg)
	e.b.Fatal(msg)
}

// teardown closes everything, waits for every goroutine the env started,
// and checks that exactly one socket was accepted (n for SocketPerConn),
// besides tcpconn's bulk lane.
func (e *env) teardown() {
	if e.timer != nil {
		e.timer.Stop()
	}
	accepts := e.accepts.Load()
	e.abort()
	e.acceptWG.Wait()
	done := make(chan struct{})
	go func() { e.serveWG.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(teardownLimit):
		e.b.Errorf("server goroutines still running %v after close", teardownLimit)
	}
	accepts -= e.lanes.Load() // a lane is its link's second socket, not a connection of its own
	if e.path != nil {
		e.path.Close()
	}
	if accepts != e.wantAccepts {
		msg := fmt.Sprintf("want exactly %d TCP accept(s), got %d", e.wantAccepts, accepts)
		recordFailure(msg)
		e.b.Error(msg)
	}
}

// finish tears down and fails the benchmark if a server handler failed.
func (e *env) finish() {
	e.b.Helper()
	e.teardown()
	if err := e.failure(); err != nil {
		recordFailure(err.Error())
		e.b.Fatal(err)
	}
}

var (
	failMu      sync.Mutex
	lastFailure string
)

func recordFailure(msg string) {
	failMu.Lock()
	lastFailure = msg
	failMu.Unlock()
}

// LastFailure returns and forgets the message of the most recent failed or
// skipped run, for the compare command (testing.Benchmark does not return it).
func LastFailure() string {
	failMu.Lock()
	defer failMu.Unlock()
	msg := lastFailure
	lastFailure = ""
	return msg
}
