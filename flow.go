// SPDX-License-Identifier: MIT

package tcpconn

import (
	"sync/atomic"
	"time"
)

// Flow control, the parts that own its state. Each logical connection and
// each link has an inflow (what the peer may still send, and the window
// that credit is given back into, with its growth rule) and an outflow
// (what this side has spent of the peer's window). The rules for when
// credit goes back are in stream.go (a record's messages) and demux.go
// (the link's); README "Flow control" and PROTOCOL.md state them.

// inflow is the receive side of one window: the peer's credit as this
// side sees it, charged as frames arrive and granted as credit goes back.
type inflow struct {
	credit atomic.Int64 // the peer may send while positive
	window recvWindow
}

func (f *inflow) init(size, now int64) {
	f.credit.Store(size)
	f.window.init(size, now)
}

// charge takes cost from the credit. ok is false if the credit was not
// positive, which only a broken or hostile peer does; spent: it is not
// positive now (the peer waits for credit).
func (f *inflow) charge(cost int64) (ok, spent bool) {
	left := f.credit.Add(-cost)
	return left+cost > 0, left <= 0
}

// grant gives v bytes of credit back (the caller sends the WINDOW).
func (f *inflow) grant(v int64) { f.credit.Add(v) }

// linkInflow is a link's inflow with what it holds from its Budget for
// messages that wait for their readers (holdQueued).
type linkInflow struct {
	inflow
	budget *Budget      // what the window grows with, and what held messages are reserved from
	held   atomic.Int64 // bytes of queued messages held from budget
}

// hold reserves cost bytes from the Budget for a queued message, if the
// link holds less than limit that way and the Budget has room.
func (f *linkInflow) hold(cost, limit int64) bool {
	if f.held.Add(cost) > limit {
		f.held.Add(-cost)
		return false
	}
	if !f.budget.reserve(cost) {
		f.held.Add(-cost)
		return false
	}
	return true
}

// unhold gives n bytes held by hold back to the Budget.
func (f *linkInflow) unhold(n int64) {
	f.held.Add(-n)
	f.budget.release(n)
}

// outflow is the send side of one window: credit used minus credit
// returned. The peer's window (its HELLO's, grown or shrunk by its
// WINDOWs) minus spent is what may still be sent. Guarded by the link's
// write lock.
type outflow struct {
	spent int64
}

// open reports whether a frame may start: credit is positive (one frame
// may overdraw it, never more).
func (o *outflow) open(window int64) bool { return o.spent < window }

func (o *outflow) take(n int64) { o.spent += n }

// give applies a WINDOW of inc bytes; it reports false if the credit
// would exceed the largest window, which only a broken or hostile peer
// sends.
func (o *outflow) give(inc uint32, window int64) bool {
	o.spent -= int64(inc)
	return window-o.spent <= maxWindow
}

// recvWindow is the receive window of a stream or a link: how much credit
// its peer may have outstanding. It starts at the window announced in the
// HELLO (Config.StreamWindow, LinkWindow) and is tuned each time half of
// it has gone back (in returnStep pieces): doubled, up to its maximum, when
// that half was consumed within growWithin round trips (the sender is limited by
// the window, not by the reader), as QUIC and go-yamux tune theirs; halved
// back towards where it started when its Budget is tight. A link's growth
// is reserved from its Budget; a stream's is bounded by its link's window
// and needs none.
//
// "Consumed fast" is a sign of a window-limited sender only when the bytes
// were not waiting for the reader: one that drains bytes queued in its
// socket buffer consumes at memory speed, and growing its window only
// queues more bulk bytes ahead of small messages (a small message's p99
// beside a bulk stream grows with the bulk window; PERFORMANCE.md). So a window grows only when the path's
// smallest measured round trip is at least growMinRTT (on a shorter one the
// window a link starts with, 2 MiB, already carries 200 MB/s or more),
// and, where the kernel tells (Linux), when less than a quarter of the
// window waits unread in the socket: round trips measured under load are
// inflated by the very queue they would grow (2 ms on loopback beside a
// 16 MiB bulk stream).
type recvWindow struct {
	base int64        // the announced window: growth is counted above it
	size atomic.Int64 // the current window; windowReleased once released
	owed atomic.Int64 // consumed since the last credit return
	// sinceTune: credit returned since the window was last tuned, which
	// happens once half of it went back.
	sinceTune atomic.Int64
	epoch     atomic.Int64 // nanotime of the last credit return
}

const (
	// growWithin: a window half consumed within this many round trips is
	// doubled (QUIC's factor).
	growWithin = 2
	// windowReleased marks a link window given back to its Budget.
	windowReleased = -1
	// maxWindow is the largest credit a window may grow to (the protocol's
	// bound: a WINDOW past it is an error).
	maxWindow = 1<<31 - 1
	// growMinRTT: see recvWindow. It is well above loopback's round trip
	// even when that is sampled as a bulk flow starts (1-2 ms), so loopback
	// links never grow.
	growMinRTT = 5 * time.Millisecond
	// returnStepFloor: see returnStep. Windows of up to 2 MiB return half.
	returnStepFloor = 1 << 20
)

// windowTuning is how one window may change: its maximum, the link's
// smallest measured round trip (0: none yet, which does not grow), the
// shortest round trip that grows windows, and the Budget growth is
// reserved from (nil for a stream's window).
type windowTuning struct {
	max, rtt, minRTT int64
	budget           *Budget
	link             *link // asked whether its reader is behind; nil in tests
}

func (w *recvWindow) init(base, now int64) {
	w.base = base
	w.size.Store(base)
	w.epoch.Store(now)
}

// consumed records n bytes consumed and returns the credit to grant now:
// 0 until returnStep is owed (or, starved, anything: the peer's credit is
// spent), then what is owed, adjusted by the window's growth or shrinkage
// when half of it has gone back since its last tuning.
func (w *recvWindow) consumed(n int64, how windowTuning, starved bool) int64 {
	size := w.size.Load()
	if w.owed.Add(n) < returnStep(size) && !starved {
		return 0
	}
	v := w.owed.Swap(0)
	if v <= 0 {
		return 0
	}
	if w.sinceTune.Add(v) < size/2 || w.sinceTune.Swap(0) <= 0 {
		return v
	}
	return v + w.tune(v, how)
}

// returnStep is how much of a window of size bytes is owed before credit
// goes back: half of a small window, so that a stream of small messages
// sends few WINDOW frames (128 KiB steps cost RecvOnly and Stream ~25 %,
// PERFORMANCE.md), and an eighth of a grown one, at least
// returnStepFloor. A sender can keep a window minus the credit owed in
// flight: with half of 64 MiB owed, a 20 ms path carried 1.7 GB/s at most.
func returnStep(size int64) int64 {
	return min(size/2, max(size/8, returnStepFloor))
}

// tune resizes the window at a credit return of owed bytes and returns the
// change.
func (w *recvWindow) tune(owed int64, how windowTuning) int64 {
	now := nanotime()
	elapsed := now - w.epoch.Swap(now)
	size := w.size.Load()
	budget := how.budget
	switch {
	case size <= 0: // released: the link is gone
		return 0
	case budget != nil && size > w.base && budget.tight():
		shrink := min(size/2, size-w.base, owed)
		if w.size.CompareAndSwap(size, size-shrink) {
			budget.release(shrink)
			return -shrink
		}
	case size < how.max && how.rtt >= how.minRTT && how.rtt > 0 && elapsed < growWithin*how.rtt &&
		(how.link == nil || !how.link.readerBehind(size)):
		grow := min(size, how.max-size)
		if budget != nil && !budget.reserve(grow) {
			return 0
		}
		if w.size.CompareAndSwap(size, size+grow) {
			return grow
		}
		if budget != nil {
			budget.release(grow)
		}
	}
	return 0
}

// release gives a link window's growth back to budget, once.
func (w *recvWindow) release(budget *Budget) {
	if size := w.size.Swap(windowReleased); size > w.base {
		budget.release(size - w.base)
	}
}

// tuning is how a window of l with this maximum may change.
func (l *link) tuning(max int64, budget *Budget) windowTuning {
	minRTT := int64(growMinRTT)
	if l.cfg.growMinRTT != 0 {
		minRTT = int64(l.cfg.growMinRTT) // tests: grow on loopback
	}
	return windowTuning{max: max, rtt: l.keepAlive.minRTT.Load(), minRTT: minRTT, budget: budget, link: l}
}

// readerBehind reports that more than a quarter of window waits unread in
// the socket (Linux; elsewhere it cannot tell and reports false).
func (l *link) readerBehind(window int64) bool {
	if l.sock == nil {
		return false
	}
	n, ok := unreadBytes(l.sock)
	return ok && int64(n) > window/4
}
