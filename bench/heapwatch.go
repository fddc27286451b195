package bench

import (
	"runtime"
	"runtime/metrics"
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

// quiesce waits, at most quiesceLimit, for what earlier runs left to end
// (a closed tcpconn link reads on until its peer's FIN, a peer's streams
// wind down on goroutines of their own), so that a baseline read next
// does not count memory about to be freed, and returns the live heap
// then (settledHeap). It returns once neither the goroutine count nor the
// live heap has fallen for quiescePolls polls in a row.
func quiesce() uint64 {
	deadline := time.Now().Add(quiesceLimit)
	goroutines, heap := runtime.NumGoroutine(), settledHeap()
	last := heap
	for steady := 0; steady < quiescePolls && time.Now().Before(deadline); {
		time.Sleep(quiescePoll)
		g := runtime.NumGoroutine()
		last = settledHeap()
		steady++
		if g < goroutines || last < heap-heap/100 {
			steady = 0
		}
		goroutines, heap = min(g, goroutines), min(last, heap)
	}
	return last
}

// settledHeap collects garbage (liveHeap) until a collection frees less
// than 1 % of the heap (at least twice: a sync.Pool's objects survive one
// collection in its victim cache, and pools of earlier runs would
// otherwise be counted in a baseline and freed during the measurement),
// at most settleGCs times, and returns the bytes of live heap objects.
func settledHeap() uint64 {
	h := liveHeap()
	for i := 1; i < settleGCs; i++ {
		prev := h
		if h = liveHeap(); h > prev-prev/100 {
			break
		}
	}
	return h
}

const (
	quiesceLimit = 5 * time.Second
	quiescePoll  = 20 * time.Millisecond
	quiescePolls = 5
	settleGCs    = 5
)

// heapWatch samples heapInUse every heapSampleEvery and keeps its
// high-water mark; past limit it calls over once, so that a measurement
// that would exhaust the machine is cut short.
type heapWatch struct {
	peak uint64 // written by the sampler only; read after done
	stop chan struct{}
	done chan struct{}
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
		called := false
		for {
			v := heapInUse()
			h.peak = max(h.peak, v)
			if v > limit && !called {
				called = true
				over(v)
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
	return h.peak
}
