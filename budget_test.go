// SPDX-License-Identifier: MIT

package tcpconn

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestRecvWindowTuning drives one window through a credit return with a
// chosen pace and budget.
func TestRecvWindowTuning(t *testing.T) {
	const base, max, rtt = 1 << 20, 8 << 20, int64(10 * time.Millisecond)
	tests := []struct {
		name     string
		size     int64         // the window before the return
		since    time.Duration // since the last return
		budget   int64         // its limit; -1: a stream's window (no budget)
		used     int64         // already reserved by others
		wantSize int64
		wantUsed int64 // reserved afterwards, others' included
	}{
		{"half consumed within 2 RTTs: doubles", base, 10 * time.Millisecond, 64 << 20, 0, 2 * base, base},
		{"round trip under growMinRTT (loopback): stays", base, time.Microsecond, 64 << 20, 0, base, 0},
		{"round trip not measured yet: stays", base, 10 * time.Millisecond, 64 << 20, 0, base, 0},
		{"a stream grows without a budget", base, 10 * time.Millisecond, -1, 0, 2 * base, 0},
		{"slow reader: stays", base, 100 * time.Millisecond, 64 << 20, 0, base, 0},
		{"at its maximum: stays", max, 10 * time.Millisecond, 64 << 20, max - base, max, max - base},
		{"near its maximum: up to it", 6 << 20, 10 * time.Millisecond, 64 << 20, 5 << 20, max, 7 << 20},
		{"budget spent: stays", base, 10 * time.Millisecond, 8 << 20, 8<<20 - base/2, base, 8<<20 - base/2},
		{"budget tight: a grown window halves", 4 * base, 10 * time.Millisecond, 8 << 20, 8 << 20, 2 * base, 8<<20 - 2*base},
		{"budget tight: a window at its base stays", base, 10 * time.Millisecond, 8 << 20, 8 << 20, base, 8 << 20},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b *Budget
			if tc.budget >= 0 {
				b = NewBudget(tc.budget)
				b.used.Store(tc.used)
			}
			var w recvWindow
			w.init(base, nanotime())
			w.size.Store(tc.size)
			w.epoch.Store(nanotime() - int64(tc.since))
			owed := tc.size / 2
			how := windowTuning{max: max, rtt: rtt, minRTT: int64(growMinRTT), budget: b}
			switch {
			case strings.HasPrefix(tc.name, "round trip under"):
				how.rtt = int64(50 * time.Microsecond)
			case strings.HasPrefix(tc.name, "round trip not"):
				how.rtt = 0
			}
			got := w.consumed(owed, how, false)
			if size := w.size.Load(); size != tc.wantSize {
				t.Errorf("window %d -> %d, want %d", tc.size, size, tc.wantSize)
			}
			if want := owed + tc.wantSize - tc.size; got != want {
				t.Errorf("credit returned %d, want %d (owed %d, window change %d)", got, want, owed, tc.wantSize-tc.size)
			}
			if b != nil && b.InUse() != tc.wantUsed {
				t.Errorf("budget in use %d, want %d", b.InUse(), tc.wantUsed)
			}
		})
	}
}

// TestRecvWindowReleaseOnce: a closed link gives back exactly what it
// borrowed, once, and borrows nothing after.
func TestRecvWindowReleaseOnce(t *testing.T) {
	b := NewBudget(64 << 20)
	var w recvWindow
	w.init(1<<20, nanotime())
	how := windowTuning{max: 16 << 20, rtt: int64(time.Second), minRTT: int64(growMinRTT), budget: b}
	for range 3 {
		w.epoch.Store(nanotime())
		w.consumed(w.size.Load()/2, how, false)
	}
	if w.size.Load() != 8<<20 || b.InUse() != 7<<20 {
		t.Fatalf("after 3 fast returns: window %d, budget in use %d; want 8 MiB and 7 MiB", w.size.Load(), b.InUse())
	}
	w.release(b)
	w.release(b)
	if got := w.consumed(8<<20, how, false); got != 8<<20 || b.InUse() != 0 {
		t.Fatalf("after release: returned %d, budget in use %d; want the owed 8 MiB and 0", got, b.InUse())
	}
}

// TestBudgetNeverOverspent: concurrent reservations never exceed the limit.
func TestBudgetNeverOverspent(t *testing.T) {
	b := NewBudget(1000)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 10_000 {
				if b.reserve(7) {
					if u := b.InUse(); u > b.Limit() {
						t.Errorf("in use %d over the limit %d", u, b.Limit())
					}
					b.release(7)
				}
			}
		})
	}
	wg.Wait()
	if b.InUse() != 0 {
		t.Fatalf("in use %d after every reservation was released", b.InUse())
	}
}

// TestBudgetBoundsAFleet: a fleet of sockets, each first reading fast on
// the one ID the server serves (which grows its link window) and then
// filling every credit it gets on IDs nobody claims, makes the server hold
// at most the budget plus a per-socket constant; a bystander keeps
// working throughout, loses nothing, and everything borrowed is given back
// once the sockets close.
func TestBudgetBoundsAFleet(t *testing.T) {
	sockets := 200
	if testing.Short() {
		sockets = 50
	}
	const (
		msgSize = 60 << 10
		ids     = 8
	)
	budget := NewBudget(8 << 20)
	srvCfg := &Config{StreamWindow: InitialWindow, LinkWindow: 2 * InitialWindow, MaxLinkWindow: 4 << 20, MaxStreamWindow: 4 << 20, Budget: budget,
		growMinRTT: 1} // windows grow on loopback too
	ln := listenTCP(t)
	serveConns(t, ln, func(conn net.Conn) {
		c, err := Wrap(conn, WithID("x"), WithConfig(srvCfg))
		if err != nil {
			return
		}
		echoLoop(c)
	})
	addr := ln.Addr().String()
	bystander := mustDial(t, addr, WithID("x"), WithConfig(&Config{}))
	mustRoundTrip(t, bystander, []byte("before"))

	before := liveHeap()
	msg := make([]byte, msgSize) // shared: Send does not write to it
	var wg sync.WaitGroup
	errs := make(chan error, sockets)
	clients := make([]*Client, sockets)
	for i := range clients {
		cl, err := NewClient(nil)
		if err != nil {
			t.Fatal(err)
		}
		clients[i] = cl
		t.Cleanup(func() { cl.Close() })
	}
	ctx := testContext(t)
	for _, cl := range clients {
		wg.Go(func() {
			if err := attackWithinCredit(ctx, cl, addr, ids, msg); err != nil {
				errs <- err
			}
		})
	}
	// The bystander's round trips while the fleet fills.
	attacked := make(chan struct{})
	go func() { wg.Wait(); close(attacked) }()
	for i := 0; ; i++ {
		mustRoundTrip(t, bystander, []byte(fmt.Sprint("during ", i)))
		select {
		case <-attacked:
		default:
			continue
		}
		break
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// What the server holds once the fill stalled, with the fleet's own
	// ends (clients in this process) counted too: per socket, the link
	// window and one message in flight, plus both ends' records and
	// buffers (a generous 64 KiB each), on top of the budget. Without the
	// budget, the 30 fast round trips grow each link's window to 1 MiB or
	// more, and the fleet fills that (measured: +86 MiB for 200 sockets
	// with 20 round trips, where the bound is 57 MiB).
	rise := liveHeap() - before
	bound := budget.Limit() + int64(sockets)*(int64(srvCfg.LinkWindow)+msgSize+2*64<<10)
	t.Logf("%d sockets: live heap rise %.1f MiB (bound %.1f MiB), budget in use %.1f MiB", sockets, mib(rise), mib(bound), mib(budget.InUse()))
	if rise > bound {
		t.Errorf("the live heap rose %.1f MiB, over the budget + per-socket bound of %.1f MiB", mib(rise), mib(bound))
	}
	for _, cl := range clients {
		cl.Close()
	}
	eventually(t, "the fleet's links to give back what they borrowed", func() bool { return budget.InUse() == 0 })
	mustRoundTrip(t, bystander, []byte("after"))
}

// attackWithinCredit reads fast on "x" (so the server grows the link's
// window), then sends msg on ids IDs nobody claims until no more credit
// comes.
func attackWithinCredit(ctx context.Context, cl *Client, addr string, ids int, msg []byte) error {
	x, err := cl.Dial(ctx, addr, WithID("x"))
	if err != nil {
		return err
	}
	for range 30 {
		if err := roundTrip(ctx, x, msg); err != nil {
			return fmt.Errorf("echo on x: %w", err)
		}
	}
	var wg sync.WaitGroup
	for i := range ids {
		c := cl.Open(addr, WithID(fmt.Sprint("unclaimed-", i)))
		wg.Go(func() {
			for {
				sctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
				err := c.SendContext(sctx, msg)
				cancel()
				if err != nil {
					return // credit withheld (or refused): the fill stalled
				}
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return errors.New("the fill did not stall before the test's deadline")
	}
	return nil
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// liveHeap is the live heap after a collection.
func liveHeap() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// TestRecvWindowReturnSteps: credit goes back in returnStep pieces (half
// of a small window, an eighth of a grown one), and the window is tuned
// once half of it went back, whatever the steps.
func TestRecvWindowReturnSteps(t *testing.T) {
	for _, tc := range []struct {
		size, step int64
	}{
		{256 << 10, 128 << 10},
		{1 << 20, 512 << 10},
		{4 << 20, 1 << 20},
		{64 << 20, 8 << 20},
	} {
		t.Run(fmt.Sprint(tc.size>>10, "KiB"), func(t *testing.T) {
			var w recvWindow
			w.init(tc.size, nanotime())
			// A round trip of an hour: half the window is consumed well
			// within two, so the window doubles at the tuning.
			how := windowTuning{max: 1 << 30, rtt: int64(time.Hour), minRTT: 1}
			var returns []int64
			for consumed := int64(0); consumed < tc.size/2; consumed += 16 << 10 {
				if v := w.consumed(16<<10, how, false); v != 0 {
					returns = append(returns, v)
				}
			}
			want := make([]int64, tc.size/2/tc.step)
			for i := range want {
				want[i] = tc.step
			}
			want[len(want)-1] += tc.size // the tuning's growth rides on the last
			if !slices.Equal(returns, want) {
				t.Errorf("credit returned %v, want %v", returns, want)
			}
			if got := w.size.Load(); got != 2*tc.size {
				t.Errorf("window %d after half of it was consumed, want %d", got, 2*tc.size)
			}
		})
	}
}
