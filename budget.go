// SPDX-License-Identifier: MIT

package tcpconn

import (
	"fmt"
	"sync/atomic"
	"time"
)

// Budget bounds the receive credit that links sharing it grant beyond their
// starting windows, and so the bytes their peers can make this process
// hold. Every link starts with Config.LinkWindow of credit, which it may
// always use; it grows its window (window auto-tuning, and room for a
// message larger than the window), and gives link credit back early for
// messages that wait for their readers (README, "Flow control"), only with
// bytes reserved from its Budget, and gives them back when its window
// shrinks, the messages are read, or it closes. When the budget is spent, windows
// stop growing and large ones shrink as their readers consume: senders feel
// backpressure (credit is withheld), nothing is dropped.
//
// A Budget is shared by every link whose Config names it; links with no
// Budget in their Config share DefaultBudget, the process's. Give a
// Listener or Client its own (Config.Budget) to isolate it. It is safe for
// concurrent use.
type Budget struct {
	limit int64
	used  atomic.Int64
}

// DefaultBudgetBytes is DefaultBudget's limit: room for a few wide-area
// bulk streams at their largest windows, while a fleet of sockets whose
// messages are never read holds its LinkWindow (plus one message) each
// beyond it (50 such sockets: +89 to +115 MiB of heap, PERFORMANCE.md).
const DefaultBudgetBytes = 256 << 20

// DefaultBudget is shared by every link whose Config has no Budget.
var DefaultBudget = NewBudget(DefaultBudgetBytes)

// NewBudget returns a Budget of limit bytes. A limit of 0 lets no link
// window grow past its LinkWindow.
func NewBudget(limit int64) *Budget {
	if limit < 0 {
		panic(fmt.Sprintf("tcpconn: NewBudget(%d): negative limit", limit))
	}
	return &Budget{limit: limit}
}

// Limit returns the budget's size in bytes.
func (b *Budget) Limit() int64 { return b.limit }

// InUse returns the bytes currently reserved by the links sharing b.
func (b *Budget) InUse() int64 { return b.used.Load() }

// reserve takes n bytes if they fit.
func (b *Budget) reserve(n int64) bool {
	for {
		u := b.used.Load()
		if u+n > b.limit {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			return true
		}
	}
}

func (b *Budget) release(n int64) { b.used.Add(-n) }

// tight reports that windows should shrink: less than an eighth is left.
func (b *Budget) tight() bool { return b.used.Load() > b.limit-b.limit/8 }

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
// 0 until returnStep is owed, then what is owed, adjusted by the window's
// growth or shrinkage when half of it has gone back since its last tuning.
func (w *recvWindow) consumed(n int64, how windowTuning) int64 {
	size := w.size.Load()
	if w.owed.Add(n) < returnStep(size) {
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
	return windowTuning{max: max, rtt: l.minRTT.Load(), minRTT: minRTT, budget: budget, link: l}
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
