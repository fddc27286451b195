// SPDX-License-Identifier: MIT

package tcpconn

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The randomized test: used as a demanding user would, through proxies
// that cut, reset and stall the sockets. A short run is part of the suite;
// the long one runs for a duration:
//
//	go test -race -run TestRandomizedUse -random .                  (60 s)
//	TCPCONN_RANDOM=1 TCPCONN_RANDOM_DURATION=10m go test -run TestRandomizedUse -timeout 0 .
var randomFlag = flag.Bool("random", false, "run the long randomized test (TCPCONN_RANDOM=1 does the same)")

func randomDuration() time.Duration {
	short := 3 * time.Second
	if testing.Short() {
		short = time.Second
	}
	return longRun(*randomFlag, "TCPCONN_RANDOM", short)
}

// Shape of the run.
const (
	randomLinks  = 3 // client sockets, each through its own fault proxy
	randomEchoes = 4 // echoed IDs per socket, each with a sender and a receiver
	// faultGrace: a probe that starts within this long of a fault on its
	// socket (reconnects, redials, drained stalls) is not held to probeLimit.
	faultGrace = time.Second
	// randomStuck: how long after the run's end its senders may still be
	// busy (each waits at most 2 s for a Send, but a plain Send waits for
	// credit as long as it takes).
	randomStuck = time.Minute
)

// probeLimit is how long a probe's Send may wait on a socket no fault
// touched: its reader reads at once, so only credit held by the IDs
// beside it (head-of-line blocking) could make it wait this long.
// probeRoundTripLimit bounds its round trip, which also queues behind the
// bulk bytes of its neighbours in the kernel's and the proxy's buffers.
func probeLimit() time.Duration {
	if raceEnabled {
		return 300 * time.Millisecond // the race detector slows everything 5-10x
	}
	return 100 * time.Millisecond
}

func probeRoundTripLimit() time.Duration { return 10 * probeLimit() }

// probeRecord keeps the worst probe wait and counts the slow ones.
type probeRecord struct {
	n, slow atomic.Int64
	worst   atomic.Int64
}

// check records one probe wait of took ns against limit; it reports
// whether it was too slow.
func (p *probeRecord) check(took int64, limit time.Duration) bool {
	p.n.Add(1)
	for w := p.worst.Load(); took > w && !p.worst.CompareAndSwap(w, took); w = p.worst.Load() {
	}
	if time.Duration(took) > limit {
		p.slow.Add(1)
		return true
	}
	return false
}

// randomSize: mostly small messages, some medium, a few large (up to
// 1 MiB, in parts).
func randomSize(rng *rand.Rand) int {
	switch p := rng.IntN(100); {
	case p < 85:
		return rng.IntN(2 << 10)
	case p < 98:
		return rng.IntN(64 << 10)
	default:
		return rng.IntN(1<<20 - sealedHeader + 1)
	}
}

// sentLedger records, per sequence number of one echoed ID, what the
// sender knows of its fate: whether it may have been lost.
type sentLedger struct {
	mu   sync.Mutex
	sent map[uint32]sentRecord
}

type sentRecord struct {
	on        *link // the socket Send committed it to
	uncertain bool  // Send erred, or the socket changed during it
	skipped   bool  // never sent (its context ended first)
}

func (g *sentLedger) record(seq uint32, r sentRecord) {
	g.mu.Lock()
	g.sent[seq] = r
	g.mu.Unlock()
}

// mayBeLost reports whether seq may be missing: at most once across a
// loss, exactly once on a socket that lives.
func (g *sentLedger) mayBeLost(seq uint32) bool {
	g.mu.Lock()
	r, ok := g.sent[seq]
	g.mu.Unlock()
	return ok && (r.skipped || r.uncertain || r.on == nil || r.on.failed())
}

// randomCall sends with Send or SendContext, at random.
func randomSend(rng *rand.Rand, c *Connection, msg []byte) error {
	if rng.IntN(2) == 0 {
		return c.Send(msg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(20+rng.IntN(200))*time.Millisecond)
	defer cancel()
	return c.SendContext(ctx, msg)
}

// randomReceive receives with Receive, ReceiveContext or ReceiveAppend,
// at random; a deadline that passes returns context.DeadlineExceeded.
func randomReceive(rng *rand.Rand, c *Connection, buf []byte) ([]byte, error) {
	switch rng.IntN(3) {
	case 0:
		return c.Receive()
	case 1:
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(5+rng.IntN(100))*time.Millisecond)
		defer cancel()
		return c.ReceiveContext(ctx)
	default:
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(5+rng.IntN(100))*time.Millisecond)
		defer cancel()
		return c.ReceiveAppend(ctx, buf[:0])
	}
}

func TestRandomizedUse(t *testing.T) {
	run := randomDuration()
	var lastFault [randomLinks]atomic.Int64 // nanotime of the last fault per socket
	untouched := func(li int, since int64) bool { return lastFault[li].Load() < since-int64(faultGrace) }
	var sendProbes, roundTrips probeRecord
	stopServing := make(chan struct{})
	srv := mustListen(t, "127.0.0.1:0", &Config{AcceptBacklog: 1024})
	stopServer := serveListener(t, srv, func(c *Connection) {
		switch {
		case strings.HasPrefix(c.ID(), "unread-"): // claimed, never read
			<-stopServing
		case strings.HasPrefix(c.ID(), "push-"): // sends to a client that never reads
			msg := make([]byte, 16<<10)
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
				err := c.SendContext(ctx, msg)
				cancel()
				if err != nil && !errors.Is(err, context.DeadlineExceeded) {
					return
				}
				select {
				case <-stopServing:
					return
				default:
				}
			}
		case strings.HasPrefix(c.ID(), "probe-"): // echoes, timing its sends
			var li int
			fmt.Sscanf(c.ID(), "probe-%d", &li)
			for {
				b, err := c.Receive()
				if err != nil {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				start := nanotime()
				err = c.SendContext(ctx, b)
				took := nanotime() - start
				cancel()
				if err != nil && !errors.Is(err, context.DeadlineExceeded) {
					return // the socket or the ID ended
				}
				if untouched(li, start) && (err != nil || sendProbes.check(took, probeLimit())) {
					t.Errorf("server %s: a Send on a socket no fault touched waited %v (%v); the limit is %v", c.ID(), time.Duration(took), err, probeLimit())
				}
			}
		default:
			echoHandler(c)
		}
	})

	deadline := time.Now().Add(run)
	var (
		wg          sync.WaitGroup // senders, faults, probes, churn: they end at the deadline
		receivers   sync.WaitGroup // they end when their Connection closes
		delivered   atomic.Int64
		faults      atomic.Int64
		clients     []*Connection
		clientsMu   sync.Mutex
		finalChecks []func()
	)
	open := func(addr string, cfg *Config, id string) *Connection {
		c := Open(addr, WithID(id), WithConfig(cfg))
		clientsMu.Lock()
		clients = append(clients, c)
		clientsMu.Unlock()
		return c
	}

	for li := range randomLinks {
		proxy := newFaultProxy(t, srv.Addr().String())
		addr := proxy.Addr()
		cfg := fastReconnect()
		lastFault[li].Store(nanotime())

		// Faults: cut, reset or stall the socket every few hundred ms.
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(li), 1))
			for time.Now().Before(deadline) {
				time.Sleep(time.Duration(300+rng.IntN(1200)) * time.Millisecond) // fault schedule, not synchronization
				lastFault[li].Store(nanotime())
				faults.Add(1)
				switch rng.IntN(3) {
				case 0:
					proxy.killAll(false)
				case 1:
					proxy.killAll(true)
				default:
					proxy.maxDelay.Store(int64(20 * time.Millisecond))
					time.Sleep(300 * time.Millisecond) // the stall's length
					proxy.maxDelay.Store(0)
				}
				lastFault[li].Store(nanotime())
			}
		})

		// IDs nobody reads, both ways: their windows fill and stay full.
		unread := open(addr, cfg, fmt.Sprintf("unread-%d", li))
		open(addr, cfg, fmt.Sprintf("push-%d", li))
		wg.Go(func() {
			msg := make([]byte, 8<<10)
			for time.Now().Before(deadline) {
				ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
				unread.SendContext(ctx, msg) // errors: the window is full, or a fault
				cancel()
			}
		})

		// Echoed IDs: sealed messages, checked intact, in order, and
		// missing only where their socket was lost.
		for ei := range randomEchoes {
			c := open(addr, cfg, fmt.Sprintf("echo-%d-%d", li, ei))
			ledger := &sentLedger{sent: make(map[uint32]sentRecord)}
			var lastSent atomic.Uint32
			var lastGot atomic.Uint32
			wg.Go(func() { // sender
				rng := rand.New(rand.NewPCG(uint64(li), uint64(ei)))
				for seq := uint32(1); time.Now().Before(deadline); seq++ {
					msg := sealMsg(rng, seq, randomSize(rng))
					before := linkOf(c)
					err := randomSend(rng, c, msg)
					after := linkOf(c)
					switch {
					case err == nil:
						ledger.record(seq, sentRecord{on: after, uncertain: before != after})
					case errors.Is(err, context.DeadlineExceeded):
						ledger.record(seq, sentRecord{skipped: true})
					default:
						ledger.record(seq, sentRecord{uncertain: true})
					}
					lastSent.Store(seq)
				}
			})
			receivers.Go(func() { // receiver
				rng := rand.New(rand.NewPCG(uint64(li), uint64(ei)+100))
				// Half the receivers have room for the largest message:
				// lane messages are read straight into their buffers, and
				// their deadlines take the buffers back mid-message.
				buf := make([]byte, 0, 64<<10)
				if ei%2 == 1 {
					buf = make([]byte, 0, 1<<20+64<<10)
				}
				var last uint32
				for {
					b, err := randomReceive(rng, c, buf)
					if errors.Is(err, ErrClosed) {
						return
					}
					if err != nil {
						continue // a deadline, or a fault: the next call reconnects
					}
					seq, err := openMsg(b)
					if err != nil {
						t.Errorf("%s: %v", c.ID(), err)
						return
					}
					if seq <= last {
						t.Errorf("%s: seq %d after %d: duplicated or reordered", c.ID(), seq, last)
						return
					}
					for missing := last + 1; missing < seq; missing++ {
						if !ledger.mayBeLost(missing) {
							t.Errorf("%s: seq %d lost while its socket lived (got %d after %d)", c.ID(), missing, seq, last)
							return
						}
					}
					last = seq
					lastGot.Store(seq)
					delivered.Add(1)
				}
			})
			// After the faults: a last batch must arrive whole, exactly once,
			// unless the socket it went on was found dead after Send
			// returned (the last fault's): then the next batch must.
			finalChecks = append(finalChecks, func() {
				ctx := testContext(t)
				rng := rand.New(rand.NewPCG(uint64(li), uint64(ei)+200))
				seq := lastSent.Load()
				for ctx.Err() == nil {
					first := seq + 1
					for seq < first+4 && ctx.Err() == nil {
						seq++
						before := linkOf(c)
						if err := c.SendContext(ctx, sealMsg(rng, seq, 100)); err != nil {
							ledger.record(seq, sentRecord{uncertain: true})
							continue
						}
						after := linkOf(c)
						ledger.record(seq, sentRecord{on: after, uncertain: before != after})
					}
					if pollFor(5*time.Second, func() bool { return lastGot.Load() >= seq }) {
						return
					}
					for s := lastGot.Load() + 1; s <= seq; s++ {
						if !ledger.mayBeLost(s) {
							t.Errorf("%s: seq %d of the last batch not echoed, and its socket lives", c.ID(), s)
							return
						}
					}
				}
				t.Errorf("%s: no last batch echoed whole within %v", c.ID(), testTimeout)
			})
		}

		// A probe on each socket: a round trip whose reader reads at once
		// is never held up by the full windows beside it.
		probe := open(addr, cfg, fmt.Sprintf("probe-%d", li))
		wg.Go(func() {
			var seq uint32
			for time.Now().Before(deadline) {
				seq++
				msg := sealMsg(rand.New(rand.NewPCG(3, uint64(seq))), seq, 64)
				ctx, cancel := context.WithTimeout(context.Background(), 2*probeRoundTripLimit())
				start := nanotime()
				before := linkOf(probe)
				err := probe.SendContext(ctx, msg)
				sent := nanotime()
				for err == nil {
					var b []byte
					if b, err = probe.ReceiveContext(ctx); err == nil {
						if got, _ := openMsg(b); got == seq {
							break
						}
					}
				}
				cancel()
				end := nanotime()
				if !untouched(li, start) || before == nil || before != linkOf(probe) || before.failed() {
					continue
				}
				if err != nil || sendProbes.check(sent-start, probeLimit()) || roundTrips.check(end-start, probeRoundTripLimit()) {
					t.Errorf("%s: on a socket no fault touched, Send waited %v and the round trip took %v (%v); the limits are %v and %v",
						probe.ID(), time.Duration(sent-start), time.Duration(end-start), err, probeLimit(), probeRoundTripLimit())
				}
			}
		})

		// Churn: short-lived IDs opened, used and closed.
		wg.Go(func() {
			for k := 0; time.Now().Before(deadline); k++ {
				c := Open(addr, WithID(fmt.Sprintf("churn-%d-%d", li, k)), WithConfig(cfg))
				ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
				msg := []byte(c.ID())
				if err := c.SendContext(ctx, msg); err == nil {
					if b, err := c.ReceiveContext(ctx); err == nil && string(b) != string(msg) {
						t.Errorf("%s: echo %q", c.ID(), b)
					}
				}
				cancel()
				c.Close()
			}
		})
	}

	// Wait out the run: senders, faults, probes and churn end at the
	// deadline; then each echoed ID's last batch must arrive; receivers go
	// on until their Connection closes. A Send that waits for credit that
	// never comes would keep a sender past the deadline for ever: that
	// fails the test with the goroutines' stacks.
	ended := make(chan struct{})
	go func() { wg.Wait(); close(ended) }()
	select {
	case <-ended:
	case <-time.After(time.Until(deadline) + randomStuck):
		var stacks strings.Builder
		pprof.Lookup("goroutine").WriteTo(&stacks, 1)
		t.Fatalf("senders, probes or churn still busy %v after the run ended:\n%s", randomStuck, stacks.String())
	}
	var final sync.WaitGroup
	for _, check := range finalChecks {
		final.Go(check)
	}
	final.Wait()
	close(stopServing)
	clientsMu.Lock()
	for _, c := range clients {
		c.Close()
	}
	clientsMu.Unlock()
	receivers.Wait()
	stopServer()
	t.Logf("figures: randomized use (%v): %d sockets through fault proxies, %d faults, %d echoed messages checked; on untouched sockets: %d probe Sends (both ends), worst wait %v; %d probe round trips, worst %v",
		run, randomLinks, faults.Load(), delivered.Load(), sendProbes.n.Load(), time.Duration(sendProbes.worst.Load()), roundTrips.n.Load(), time.Duration(roundTrips.worst.Load()))
}
