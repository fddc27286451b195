// SPDX-License-Identifier: MIT

package tcpconn

import (
	"context"
	"slices"
	"sync"
)

// fifo is a queue that reuses its slice; it drops a burst's worth of slots
// once drained so an idle connection does not keep them.
type fifo[T any] struct {
	items []T
	head  int
}

func (q *fifo[T]) len() int { return len(q.items) - q.head }

func (q *fifo[T]) push(v T) { q.items = append(q.items, v) }

func (q *fifo[T]) pop() (T, bool) {
	var zero T
	if q.head == len(q.items) {
		return zero, false
	}
	v := q.items[q.head]
	q.items[q.head] = zero
	q.head++
	if q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
		if cap(q.items) > 64 {
			q.items = nil
		}
	}
	return v, true
}

// inbox is what receivers wait on: a stream's queue or a link's catch-all.
// It holds the lock, the error that ends it, and the receivers parked on
// it, oldest first. Each message wakes one parked receiver; an error wakes
// all. A receiver that gives up after it was woken passes its wake-up on
// (unpark), so no message is left waiting while a receiver sleeps.
type inbox struct {
	link    *link
	mu      sync.Mutex
	waiters []*waiter // guarded by mu
	err     error     // why no more messages will come; queued ones stay readable
}

// waiter is one parked receiver; ch (capacity 1) carries its wake-up.
type waiter struct {
	ch      chan struct{}
	canLend bool // its receiver could lend its buffer to the lane (laneloan.go)
}

// waiterFree recycles waiters so that parking does not allocate
// (bufpool.go's freeList survives garbage collections).
var waiterFree = newFreeList[*waiter](256)

func getWaiter() *waiter {
	if w, ok := waiterFree.tryGet(); ok {
		return w
	}
	return &waiter{ch: make(chan struct{}, 1)}
}

// source is an inbox with its queue discipline.
type source interface {
	box() *inbox
	popLocked() (*stream, message, bool) // the message and the record it came from
	hasMessageLocked() bool
}

func (b *inbox) box() *inbox { return b }

// parkLocked lines a new waiter up.
func (b *inbox) parkLocked() *waiter {
	w := getWaiter()
	b.waiters = append(b.waiters, w)
	b.link.token.parked.Add(1)
	return w
}

// unlineLocked takes the i-th parked receiver out of line.
func (b *inbox) unlineLocked(i int) *waiter {
	w := b.waiters[i]
	b.waiters = slices.Delete(b.waiters, i, i+1)
	b.link.token.parked.Add(-1)
	return w
}

// wakeLocked wakes the oldest parked receiver, if any.
func (b *inbox) wakeLocked() bool {
	if len(b.waiters) == 0 {
		return false
	}
	b.unlineLocked(0).ch <- struct{}{} // capacity 1, sent once per parking: never blocks
	return true
}

// wakeWaiterLocked wakes w if it is still parked.
func (b *inbox) wakeWaiterLocked(w *waiter) {
	if i := slices.Index(b.waiters, w); i >= 0 {
		b.unlineLocked(i).ch <- struct{}{}
	}
}

// fail records why no more messages will arrive and wakes every receiver
// and every sender waiting for credit (they check their stream's error).
func (b *inbox) fail(err error) {
	b.mu.Lock()
	if b.err == nil {
		b.err = err
	}
	for b.wakeLocked() {
	}
	b.mu.Unlock()
	b.link.interruptDirect()
	b.link.wakeCreditWaiters()
}

// unpark withdraws w after its receiver stopped waiting. If w was woken
// meanwhile, that wake-up goes to the next parked receiver when there is
// something to take, so it is not lost.
func (b *inbox) unpark(w *waiter, src source) {
	b.mu.Lock()
	if i := slices.Index(b.waiters, w); i >= 0 {
		b.unlineLocked(i)
	} else {
		<-w.ch // sent under mu by wakeLocked, so it is there
		if src.hasMessageLocked() || b.err != nil {
			b.wakeLocked()
		}
	}
	b.mu.Unlock()
	waiterFree.put(w)
}

// error is why no more messages will come, or nil.
func (b *inbox) error() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// isReady reports whether a receiver reading for itself into buf is done
// reading: receive would return at once, or it would rather wait with buf
// lent to the lane (lendsTo).
func isReady(src source, buf []byte) bool {
	b := src.box()
	b.mu.Lock()
	defer b.mu.Unlock()
	if st, ok := src.(*stream); ok {
		if st.lendsTo(buf) {
			return true
		}
		st.arrivesBareLocked(buf) // reading for itself, it learnt its next message is on the lane
	}
	return src.hasMessageLocked() || b.err != nil
}

// receive waits for src's next message; ctx's Done closes when the caller
// gives up (cancel). Without cancel (plain Receive) the caller reads the
// socket itself when nobody else does: no hand-off between goroutines on a
// round trip. So does a caller whose cancel interrupts such a read
// (interruptible: a NetConn's read deadline). With any other cancel it
// does too where reads can be made not to wait (Linux TCP), for what has
// arrived: only waiting for the socket is left to the background reader,
// whose hand-off would otherwise cost a stream of messages half its speed.
// into is where the caller wants its message (dest): when the caller reads
// for itself it may be read there (inPlace: it is not ours to release;
// readInto).
func receive(src source, ctx context.Context, into dest) (s *stream, m message, inPlace bool, err error) {
	b := src.box()
	l := b.link
	cancel := ctx.Done()
	blocking := cancel == nil || interruptible(ctx) // may wait in a socket read
	canNoWait := !blocking && l.reading.br.canNoWait()
	tryNoWait := canNoWait && l.token.noWaitWorth()
	if canNoWait || cancel != nil && blocking {
		l.token.noWaitReceivers.Add(1)
		defer l.token.noWaitReceivers.Add(-1)
	}
	st, _ := src.(*stream) // a stream's own receiver may lend into to the lane
	if st != nil && st.fresh.Load() != into.fresh {
		st.fresh.Store(into.fresh)
	}
	for {
		b.mu.Lock()
		if s, m, ok := src.popLocked(); ok {
			b.mu.Unlock()
			s.consumed(m)
			return s, m, false, nil
		}
		if b.err != nil {
			err := b.err
			b.mu.Unlock()
			return nil, message{}, false, err
		}
		if cancel != nil && isClosed(cancel) {
			b.mu.Unlock()
			return nil, message{}, false, errCanceled
		}
		lend := st != nil && st.lendsTo(into.buf)
		if (blocking || tryNoWait) && !l.failed() && !lend {
			b.mu.Unlock()
			from, m, did, wouldBlock := l.readDirect(src, into, cancel, blocking)
			if from != nil {
				from.consumed(m)
				return from, m, true, nil
			}
			if did && !wouldBlock {
				continue
			}
			tryNoWait = false // until woken: the background reader waits for the socket
			b.mu.Lock()
			if src.hasMessageLocked() || b.err != nil {
				b.mu.Unlock()
				continue
			}
			lend = st != nil && st.lendsTo(into.buf) // the read stopped for it
		}
		if st != nil && !lend {
			st.arrivesBareLocked(into.buf) // it waits with nothing to lend (isReady notes one reading for itself)
		}
		w := b.parkLocked()
		w.canLend = st != nil && !lend && len(into.buf) >= l.cfg.LaneThreshold
		// A receiver that parks offers its buffer to the socket's reader
		// (landing.go), once it will not read into it itself.
		offers := st != nil && !lend && len(into.buf) > 0
		switch {
		case lend:
			st.offerLocked(w, into.buf)
		case offers && !blocking:
			st.offerLandingLocked(w, into.buf)
		}
		b.mu.Unlock()
		switch {
		case lend: // the lane's reader brings the message: nothing to read here
		case blocking:
			// Whoever held the token may have released it before seeing
			// us parked: try again to read for ourselves.
			if from, m, did, _ := l.readDirect(src, into, cancel, true); did {
				b.unpark(w, src)
				if from != nil {
					from.consumed(m)
					return from, m, true, nil
				}
				continue
			}
			if offers {
				b.mu.Lock()
				st.offerLandingLocked(w, into.buf)
				b.mu.Unlock()
			}
		default:
			l.ensureReader()
		}
		canceled := false
		select {
		case <-w.ch: // wakeLocked took it out of line
			tryNoWait = canNoWait
		case <-cancel:
			canceled = true
		}
		// The loan ends before w is recycled: it names the loan's owner.
		var landed message
		switch {
		case lend:
			landed = st.reclaim(w)
		case offers:
			landed = st.takeLanded(w)
		}
		if canceled {
			b.unpark(w, src)
		} else {
			waiterFree.put(w)
		}
		if landed.data != nil { // ours, canceled or not: it is in our buffer
			st.consumed(landed)
			return st, landed, true, nil
		}
		if canceled {
			return nil, message{}, false, errCanceled
		}
	}
}

// catchAll is the empty-ID connection of a link: it receives messages of
// every record no one has claimed, oldest ready record first.
//
// Lock order: catchAll.mu, then a stream's mu. A stream's inReady flag is
// guarded by the stream's mu.
type catchAll struct {
	inbox
	ready fifo[*stream] // records holding messages, oldest first; guarded by mu
}

// push lines s up (it holds messages); a retired catch-all takes nothing,
// so its successor finds s when it is installed.
func (ca *catchAll) push(s *stream) bool {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if ca.err != nil {
		return false
	}
	s.mu.Lock()
	if !s.inReady {
		s.inReady = true
		ca.ready.push(s)
	}
	s.mu.Unlock()
	return ca.wakeLocked()
}

func (ca *catchAll) hasMessageLocked() bool { return ca.ready.len() > 0 }

// popLocked takes a message from the oldest ready record still unclaimed,
// keeping the record in line if it holds more.
func (ca *catchAll) popLocked() (*stream, message, bool) {
	for {
		s, ok := ca.ready.pop()
		if !ok {
			return nil, message{}, false
		}
		s.mu.Lock()
		s.inReady = false
		var m message
		ok = s.owner == nil
		if ok {
			m, ok = s.popMessageLocked()
		}
		if ok && s.hasMessageLocked() {
			s.inReady = true
			ca.ready.push(s)
		}
		s.mu.Unlock()
		if ok {
			return s, m, true
		}
	}
}

// retire ends ca (Close, idle timeout, link loss): its receivers get err,
// and the records in its ready line are let go with their messages, for
// the next catch-all of the link.
func (ca *catchAll) retire(err error) {
	ca.mu.Lock()
	if ca.err == nil {
		ca.err = err // push takes nothing from now on
	}
	var gone []*stream
	for {
		s, ok := ca.ready.pop()
		if !ok {
			break
		}
		s.mu.Lock()
		s.inReady = false
		if s.owner == nil && s.retired.Load() {
			gone = append(gone, s)
		}
		s.mu.Unlock()
	}
	ca.mu.Unlock()
	ca.fail(err)
	for _, s := range gone {
		s.drain() // out of the route table: no successor will find it
	}
}

// installCatchAll makes ca the link's catch-all and hands it every
// unclaimed record that already holds messages.
func (l *link) installCatchAll(ca *catchAll) bool {
	if !l.routes.catchAll.CompareAndSwap(nil, ca) {
		return false
	}
	l.routes.each(func(s *stream) bool {
		s.mu.Lock()
		has := s.owner == nil && s.hasMessageLocked()
		s.mu.Unlock()
		if has {
			ca.push(s)
		}
		return true
	})
	if l.failed() {
		ca.fail(l.err)
	}
	return true
}

// interruptible reports whether ctx's end interrupts a receiver blocked
// reading the link's socket for itself: a NetConn's read deadline, whose
// expiry closes its channel and then calls interruptDirect on the link.
func interruptible(ctx context.Context) bool {
	_, ok := ctx.(deadlineContext)
	return ok
}
