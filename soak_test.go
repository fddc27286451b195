// SPDX-License-Identifier: MIT

package tcpconn

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The soak test. By default a short version runs (1,000 logical connections,
// 4 messages each, a few seconds); the long one runs for a duration:
//
//	go test -race -run TestSoak -soak .                  (60 s)
//	TCPCONN_SOAK=1 TCPCONN_SOAK_DURATION=10m go test -run TestSoak -timeout 0 .
var soakFlag = flag.Bool("soak", false, "run the long soak test (TCPCONN_SOAK=1 does the same)")

func soakDuration() time.Duration { return longRun(*soakFlag, "TCPCONN_SOAK", 0) }

// longRun is how long a test with a long version runs: short unless its
// flag or env (set to anything) asks for the long one, which lasts
// env_DURATION, or a minute.
func longRun(flagSet bool, env string, short time.Duration) time.Duration {
	if !flagSet && os.Getenv(env) == "" {
		return short
	}
	if d, err := time.ParseDuration(os.Getenv(env + "_DURATION")); err == nil {
		return d
	}
	return time.Minute
}

// soakSize: mostly small messages, some medium, a few up to 1 MiB.
func soakSize(rng *rand.Rand) int {
	switch p := rng.IntN(100); {
	case p < 90:
		return rng.IntN(4 << 10)
	case p < 99:
		return rng.IntN(64 << 10)
	default:
		return rng.IntN(1<<20 - sealedHeader + 1)
	}
}

func TestSoak(t *testing.T) {
	const conns, links = 1000, 4
	long := soakDuration()
	perConn := 4 // short version
	if testing.Short() {
		perConn = 1
	}
	runtime.GC()
	baseG := runtime.NumGoroutine()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	baseHeap := ms.HeapAlloc
	heap := watchHeap()

	// All 1,000 IDs open at once: the accept backlog must hold them (beyond
	// it, new IDs are refused by design).
	srv, err := Listen("tcp", "127.0.0.1:0", &Config{AcceptBacklog: conns})
	if err != nil {
		t.Fatal(err)
	}
	stopServer := serveListener(t, srv, echoHandler)

	cfgs := make([]*Config, links)
	for i := range cfgs {
		cfgs[i] = &Config{}
	}
	clients := make([]*Connection, conns)
	for i := range clients {
		c, err := Dial(testContext(t), srv.Addr().String(), WithID(fmt.Sprintf("soak-%04d", i)), WithConfig(cfgs[i%links]))
		if err != nil {
			t.Fatal(err)
		}
		clients[i] = c
	}

	start := time.Now()
	deadline := start.Add(long)
	// One context for every sender and receiver: the run's length plus the
	// usual bound (testContext alone would end a long run after 20 s).
	ctx, cancel := context.WithTimeout(context.Background(), long+testTimeout)
	defer cancel()
	var msgs, bytes atomic.Int64
	var wg sync.WaitGroup
	for i, c := range clients {
		sentSum := make(chan uint32, 1)
		sentN := make(chan uint32, 1)
		wg.Add(2)
		go func() { // sender
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 42))
			var sum, seq uint32
			for {
				seq++
				// Whether this message is the last is decided, and told to
				// the receiver, before it is sent: by the time its echo
				// arrives the receiver knows to stop there (and to check
				// that nothing follows).
				last := seq >= uint32(perConn) && (long == 0 || !time.Now().Before(deadline))
				if last {
					sentN <- seq
				}
				msg := sealMsg(rng, seq, soakSize(rng))
				if err := c.SendContext(ctx, msg); err != nil {
					t.Errorf("%s: send %d: %v", c.ID(), seq, err)
					if !last {
						sentN <- seq - 1
					}
					break
				}
				sum = crc32.Update(sum, crc32.IEEETable, msg)
				if last {
					break
				}
			}
			sentSum <- sum
		}()
		go func() { // receiver: exactly once, intact, in order
			defer wg.Done()
			var sum, want uint32
			n := uint32(1<<32 - 1)
			if long == 0 {
				n = uint32(perConn) // known up front: do not wait for the sender to say so
			}
			for want < n {
				select {
				case n = <-sentN:
					continue
				default:
				}
				if want == n {
					break
				}
				b, err := c.ReceiveContext(ctx)
				if err != nil {
					t.Errorf("%s: receive after %d: %v", c.ID(), want, err)
					return
				}
				seq, err := openMsg(b)
				if err != nil || seq != want+1 {
					t.Errorf("%s: got seq %d (%v), want %d", c.ID(), seq, err, want+1)
					return
				}
				want = seq
				sum = crc32.Update(sum, crc32.IEEETable, b)
				msgs.Add(1)
				bytes.Add(int64(len(b)))
			}
			if s := <-sentSum; s != sum {
				t.Errorf("%s: running checksum sent %08x, received %08x", c.ID(), s, sum)
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	st := ReadStats()

	// Nothing after the last expected message: every receiver stopped at
	// its count, so a duplicate or extra message would sit unnoticed. All
	// echoes are in by now; one quiet window for all connections at once
	// must end every Receive with DeadlineExceeded. (Skipped after a
	// failure: a receiver that gave up early leaves messages behind.)
	const quiet = 200 * time.Millisecond
	var extras atomic.Int64
	if !t.Failed() {
		quietCtx, quietCancel := context.WithTimeout(ctx, quiet)
		for _, c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				b, err := c.ReceiveContext(quietCtx)
				if !errors.Is(err, context.DeadlineExceeded) {
					extras.Add(1)
					seq, serr := openMsg(b)
					t.Errorf("%s: after the last expected message, Receive returned %d bytes (seq %d, %v), error %v; want nothing", c.ID(), len(b), seq, serr, err)
				}
			}()
		}
		wg.Wait()
		quietCancel()
	}

	for _, c := range clients {
		c.Close()
	}
	stopServer()
	high := heap.end()
	var leftG int
	var leftHeap uint64
	eventually(t, "goroutines and heap back to baseline", func() bool {
		runtime.GC()
		runtime.ReadMemStats(&ms)
		leftG, leftHeap = runtime.NumGoroutine(), ms.HeapAlloc
		return leftG <= baseG && leftHeap <= baseHeap+8<<20
	})
	t.Logf("figures: soak (%v): %d logical connections over %d links, %d messages echoed exactly once in order (%d bytes each way, sizes 0..1 MiB), running CRC-32 equal on every connection, %v, %.0f msg/s; %d extra messages within %v after the last expected one; heap high-water +%.1f MiB; after close: %d goroutines (baseline %d), heap %+.1f MiB vs baseline; stats %+v",
		map[bool]string{true: "long", false: "short"}[long > 0], conns, links, msgs.Load(), bytes.Load(), took.Round(time.Millisecond),
		float64(msgs.Load())/took.Seconds(), extras.Load(), quiet, float64(high)/(1<<20), leftG, baseG, (float64(leftHeap)-float64(baseHeap))/(1<<20), st)
}
