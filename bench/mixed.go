package bench

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Head-of-line blocking and fairness on one socket.
//
// Mixed: connection 0 does probeSize echo round trips (the probe) while
// connection 1 sends bulk messages back to back to a server that drains and
// checks them. Once the first bulk message has arrived, up to 200
// unmeasured probes run (at most 1 s); then b.Loop times probes: an op is
// one probe round trip, so ns/op is the mean probe latency. Reported:
// p50-us, p99-us, max-us of the measured probes, and bulk-MB/s, the bulk
// bytes the server received and checked while they ran (1 MB = 10^6 bytes).
//
// Fair: connections 0 and 1 both send bulk messages back to back; after a
// 200 ms warm-up, b.Loop counts delivered messages (an op is one message,
// either connection; MB/s is the total). Reported: slow-MB/s and fast-MB/s,
// the two connections' delivered rates over the same window, and slow/fast.
//
// Bulk messages are w.Size bytes; -short (CI's smoke run) divides the size
// by 16 and shortens the warm-ups, see bulkSize and warmup.
//
// The server tells the roles apart by the connection index stamped in each
// connection's first message, so every transport serves them alike (one
// handler goroutine per logical connection: perConn).

const probeSize = 1 << 10

// mixedMinPass is the least pass compare gives a Mixed workload
// (MinBenchtime): a p99 needs enough slow probes, and with passes of
// 300 ms the floor's own p99 moved between 160 and 640 µs from run to
// run, where passes of 1 s agreed far better.
const mixedMinPass = time.Second

// bulkSize is w.Size, or a sixteenth of it with -short: CI's smoke run
// only checks that the workloads work, and a 16 MiB message takes tens of
// milliseconds to build, send and check.
func (w Workload) bulkSize() int {
	if testing.Short() {
		return w.Size / 16
	}
	return w.Size
}

// warmup returns how many unmeasured probes to do (at most, within limit)
// and how long Fair warms up; -short shrinks both for CI's smoke run.
func warmup() (probes int, limit, fair time.Duration) {
	if testing.Short() {
		return 10, 20 * time.Millisecond, 10 * time.Millisecond
	}
	return 200, time.Second, 200 * time.Millisecond
}

// drain receives on c, whose first message first has already been
// received, checking every message against newMessage(size) stamped with
// the connection index of the first message and sequence numbers from 0,
// and calls got(idx) after each one.
func drain(c Conn, first []byte, size int, got func(idx uint64)) error {
	if len(first) < hdrLen {
		return fmt.Errorf("first message of %d bytes", len(first))
	}
	idx := binary.BigEndian.Uint64(first[:8])
	want := newMessage(size)
	m := first
	for seq := uint64(0); ; seq++ {
		stamp(want, idx, seq)
		if err := check(m, want); err != nil {
			return err
		}
		got(idx)
		var err error
		if m, err = c.Receive(); err != nil {
			return err
		}
	}
}

// sender sends size-byte messages stamped (idx, 0, 1, ...) on c back to
// back until stop is closed or Send fails; a failure while e is not being
// torn down fails the run.
func sender(e *env, c Conn, idx uint64, size int, stop <-chan struct{}, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		msg := newMessage(size)
		for seq := uint64(0); ; seq++ {
			select {
			case <-stop:
				return
			default:
			}
			stamp(msg, idx, seq)
			if err := c.Send(msg); err != nil {
				if !e.closing.Load() {
					e.fail(fmt.Errorf("bulk conn %d: send: %w", idx, err))
				}
				return
			}
		}
	}()
}

// stopSenders ends the senders: closing everything unblocks a Send waiting
// for credit or socket space, so the wait cannot hang.
func stopSenders(e *env, stop chan struct{}, wg *sync.WaitGroup) {
	close(stop)
	e.abort()
	wg.Wait()
}

func (w Workload) mixed(b *testing.B, tr Transport) {
	size := w.bulkSize()
	var drained atomic.Int64 // bulk bytes received and checked by the server
	flowing := make(chan struct{})
	var flowOnce sync.Once
	e := setup(b, tr, 2, true, func(c Conn) error {
		first, err := c.Receive()
		if err != nil {
			return err
		}
		if len(first) < hdrLen {
			return fmt.Errorf("first message of %d bytes", len(first))
		}
		switch idx := binary.BigEndian.Uint64(first[:8]); idx {
		case 0:
			if err := c.Send(first); err != nil {
				return err
			}
			return echo(c)
		case 1:
			return drain(c, first, size, func(uint64) {
				drained.Add(int64(size))
				flowOnce.Do(func() { close(flowing) })
			})
		default:
			return fmt.Errorf("message from connection %d", idx)
		}
	})
	probe := e.conns[0]
	stop := make(chan struct{})
	var wg sync.WaitGroup
	sender(e, e.conns[1], 1, size, stop, &wg)

	select {
	case <-flowing:
	case <-e.failed:
		stopSenders(e, stop, &wg)
		e.fatalf("bulk flow did not start")
	case <-time.After(10 * time.Second):
		stopSenders(e, stop, &wg)
		e.fatalf("no bulk message delivered after 10s")
	}
	msg := newMessage(probeSize)
	seq := uint64(0)
	probeOnce := func() (time.Duration, error) {
		stamp(msg, 0, seq)
		seq++
		t := time.Now()
		err := roundTrip(probe, msg)
		return time.Since(t), err
	}
	nWarm, limit, _ := warmup()
	for t0 := time.Now(); seq < uint64(nWarm) && time.Since(t0) < limit; {
		if _, err := probeOnce(); err != nil {
			stopSenders(e, stop, &wg)
			e.fatalf("warm-up probe: %v", err)
		}
	}

	lat := make([]time.Duration, 0, 4096)
	bytes0, t0 := drained.Load(), time.Now()
	for b.Loop() {
		d, err := probeOnce()
		if err != nil {
			b.StopTimer()
			stopSenders(e, stop, &wg)
			e.fatalf("probe: %v", err)
		}
		lat = append(lat, d)
	}
	elapsed, bytes1 := time.Since(t0), drained.Load()
	stopSenders(e, stop, &wg)
	e.finish()

	slices.Sort(lat)
	us := func(d time.Duration) float64 { return float64(d) / 1e3 }
	b.ReportMetric(us(percentile(lat, 0.50)), "p50-us")
	b.ReportMetric(us(percentile(lat, 0.99)), "p99-us")
	b.ReportMetric(us(lat[len(lat)-1]), "max-us")
	b.ReportMetric(float64(bytes1-bytes0)/elapsed.Seconds()/1e6, "bulk-MB/s")
}

// percentile is the nearest-rank percentile of sorted, non-empty v.
func percentile(v []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p*float64(len(v)))) - 1
	return v[max(0, min(i, len(v)-1))]
}

// countNotes is the timed loop of a bulk workload: an op is one note (a
// message the server checked); a failure ends the senders (end) and the
// benchmark.
func countNotes(b *testing.B, e *env, note <-chan struct{}, end func()) {
	for b.Loop() {
		select {
		case <-note:
		case <-e.failed:
			b.StopTimer()
			end()
			e.fatalf("bulk failed")
		}
	}
}

// discardFor consumes notes for d, then empties the channel, so that the
// timed loop after it counts only deliveries that happen during it; false
// if the run failed meanwhile.
func discardFor(e *env, note <-chan struct{}, d time.Duration) bool {
	for deadline := time.After(d); ; {
		select {
		case <-note:
			continue
		case <-e.failed:
			return false
		case <-deadline:
		}
		break
	}
	for len(note) > 0 {
		<-note
	}
	return true
}

func (w Workload) fair(b *testing.B, tr Transport) {
	size := w.bulkSize()
	var got [2]atomic.Int64 // bytes received and checked, per connection
	note := make(chan struct{}, 1024)
	quit := make(chan struct{}) // lets drains blocked on note go at teardown
	e := setup(b, tr, 2, true, func(c Conn) error {
		first, err := c.Receive()
		if err != nil {
			return err
		}
		if len(first) < hdrLen || binary.BigEndian.Uint64(first[:8]) > 1 {
			return fmt.Errorf("unexpected first message (%d bytes)", len(first))
		}
		return drain(c, first, size, func(idx uint64) {
			got[idx].Add(int64(size))
			select {
			case note <- struct{}{}:
			case <-quit:
			}
		})
	})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	sender(e, e.conns[0], 0, size, stop, &wg)
	sender(e, e.conns[1], 1, size, stop, &wg)
	end := func() {
		close(quit)
		stopSenders(e, stop, &wg)
	}

	_, _, warm := warmup()
	if !discardFor(e, note, warm) {
		end()
		e.fatalf("warm-up failed")
	}
	b.SetBytes(int64(size))
	a0, b0, t0 := got[0].Load(), got[1].Load(), time.Now()
	countNotes(b, e, note, end)
	elapsed := time.Since(t0).Seconds()
	a1, b1 := got[0].Load(), got[1].Load()
	end()
	e.finish()

	r0, r1 := float64(a1-a0)/elapsed/1e6, float64(b1-b0)/elapsed/1e6
	slow, fast := min(r0, r1), max(r0, r1)
	b.ReportMetric(slow, "slow-MB/s")
	b.ReportMetric(fast, "fast-MB/s")
	ratio := 0.0
	if fast > 0 {
		ratio = slow / fast
	}
	b.ReportMetric(ratio, "slow/fast")
}
