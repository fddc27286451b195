package bench

import (
	"sync"
	"testing"
	"time"
)

// WAN: one logical connection sends w.Size-byte messages back to back to a
// server that drains and checks them, through a delayProxy that adds
// w.PathRTT to every round trip (delayproxy.go). After the first message
// has arrived and a warm-up of wanWarmupRTTs round trips, b.Loop counts
// delivered messages: an op is one message, MB/s the throughput.
//
// A protocol with flow control moves at most its window per round trip,
// so what this measures is the window each transport keeps in flight
// (tcpconn's StreamWindow, 1 MiB by default: about 52 MB/s at 20 ms,
// 10 MB/s at 100 ms). raw, which has none, shows what the path carries.

// wanWarmupRTTs is long enough for a window that doubles every round trip
// to grow from 64 KiB to 64 MiB, so auto-tuned windows are measured at
// their steady state. -short makes it 3 (a smoke run).
const wanWarmupRTTs = 10

// wanMeasuredRTTs is the least number of round trips a pass should span:
// a windowed flow arrives in bursts, one window per round trip, so a pass
// of k round trips is off by up to one burst in k.
const wanMeasuredRTTs = 30

// MinBenchtime is the least -benchtime that gives w a meaningful pass:
// wanMeasuredRTTs round trips for the WAN workloads, mixedMinPass for the
// Mixed ones (but with -short), 0 for the others.
func (w Workload) MinBenchtime() time.Duration {
	switch {
	case w.Kind == WAN:
		return wanMeasuredRTTs * w.PathRTT
	case w.Kind == Mixed && !testing.Short():
		return mixedMinPass
	}
	return 0
}

func (w Workload) wan(b *testing.B, tr Transport) {
	note := make(chan struct{}, 1024) // one per message the server checked
	quit := make(chan struct{})       // lets the drain go at teardown
	e := setupDelayed(b, tr, 1, false, w.PathRTT, func(c Conn) error {
		first, err := c.Receive()
		if err != nil {
			return err
		}
		return drain(c, first, w.Size, func(uint64) {
			select {
			case note <- struct{}{}:
			case <-quit:
			}
		})
	})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	sender(e, e.conns[0], 0, w.Size, stop, &wg)
	end := func() {
		close(quit)
		stopSenders(e, stop, &wg)
	}

	select {
	case <-note:
	case <-e.failed:
		end()
		e.fatalf("first message failed")
	case <-time.After(10*time.Second + 10*w.PathRTT):
		end()
		e.fatalf("no message delivered after %v", 10*time.Second+10*w.PathRTT)
	}
	warm := wanWarmupRTTs * w.PathRTT
	if testing.Short() {
		warm = 3 * w.PathRTT
	}
	if !discardFor(e, note, warm) {
		end()
		e.fatalf("warm-up failed")
	}
	b.SetBytes(int64(w.Size))
	countNotes(b, e, note, end)
	end()
	e.finish()
}
