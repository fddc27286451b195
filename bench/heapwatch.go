package bench

import (
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"
)

// heapInUse is what the heap holds in spans: live and not yet swept
// objects plus the free room inside their spans (MemStats.HeapInuse), read
// through runtime/metrics, which does not stop the world.
func heapInUse() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/unused:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64() + s[1].Value.Uint64()
}

// liveHeap collects garbage and returns the bytes of the objects left.
func liveHeap() uint64 {
	runtime.GC()
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// heapWatch samples heapInUse every heapSampleEvery and keeps its
// high-water mark; past limit it calls over once, so that a measurement
// that would exhaust the machine is cut short.
type heapWatch struct {
	peak     atomic.Uint64
	stop     chan struct{}
	done     chan struct{}
	overOnce sync.Once
}

// heapSampleEvery is short enough that a heap growing at a few GB/s
// passes the limit by tens of MB at most before the watch reacts.
const heapSampleEvery = 10 * time.Millisecond

func watchHeap(limit uint64, over func(inUse uint64)) *heapWatch {
	h := &heapWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		t := time.NewTicker(heapSampleEvery)
		defer t.Stop()
		for {
			v := heapInUse()
			if v > h.peak.Load() {
				h.peak.Store(v)
			}
			if v > limit {
				h.overOnce.Do(func() { over(v) })
			}
			select {
			case <-h.stop:
				return
			case <-t.C:
			}
		}
	}()
	return h
}

// end stops sampling and returns the high-water mark.
func (h *heapWatch) end() uint64 {
	close(h.stop)
	<-h.done
	return h.peak.Load()
}
