// SPDX-License-Identifier: MIT

package tcpconn

import "sync"

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

// inbox is what a receiver waits on: a stream's queue or a link's
// catch-all. It holds the lock, the error that ends it, and at most one
// parked receiver's wake-up (a second concurrent receiver of one
// Connection finds the first parked and parks on the same channel).
type inbox struct {
	link    *link
	mu      sync.Mutex
	notify  chan struct{} // created on first wait
	waiting bool
	err     error // why no more messages will come; queued ones stay readable
}

// source is an inbox with its queue discipline.
type source interface {
	box() *inbox
	popLocked() (*stream, message, bool) // the message and the record it came from
	hasMessageLocked() bool
}

func (b *inbox) box() *inbox { return b }

func (b *inbox) wakeLocked() bool {
	if !b.waiting {
		return false
	}
	b.waiting = false
	b.link.parked.Add(-1)
	b.notify <- struct{}{} // capacity 1, one waiter: never blocks
	return true
}

// fail records why no more messages will arrive and wakes the receiver.
func (b *inbox) fail(err error) {
	b.mu.Lock()
	if b.err == nil {
		b.err = err
	}
	b.wakeLocked()
	b.mu.Unlock()
	b.link.interruptDirect()
}

// unpark withdraws a waiting receiver that was not woken.
func (b *inbox) unpark() {
	b.mu.Lock()
	if b.waiting {
		b.waiting = false
		b.link.parked.Add(-1)
	}
	select {
	case <-b.notify: // a wake-up that raced with us
	default:
	}
	b.mu.Unlock()
}

// isReady reports whether receive would return at once.
func isReady(src source) bool {
	b := src.box()
	b.mu.Lock()
	defer b.mu.Unlock()
	return src.hasMessageLocked() || b.err != nil
}

// receive waits for src's next message; cancel closes when the caller gives
// up. Without cancel (plain Receive) the caller reads the socket itself when
// nobody else does: no hand-off between goroutines on a round trip.
func receive(src source, cancel <-chan struct{}) (*stream, message, error) {
	b := src.box()
	l := b.link
	for {
		b.mu.Lock()
		if s, m, ok := src.popLocked(); ok {
			b.mu.Unlock()
			s.consumed(m.cost())
			return s, m, nil
		}
		if b.err != nil {
			err := b.err
			b.mu.Unlock()
			return nil, message{}, err
		}
		if cancel == nil && !l.failed() {
			b.mu.Unlock()
			if l.readDirect(src) {
				continue
			}
			b.mu.Lock()
			if src.hasMessageLocked() || b.err != nil {
				b.mu.Unlock()
				continue
			}
		}
		if b.notify == nil {
			b.notify = make(chan struct{}, 1)
		}
		b.waiting = true
		l.parked.Add(1)
		ch := b.notify
		b.mu.Unlock()
		if cancel == nil {
			// Whoever held the token may have released it before seeing
			// us parked: try again to read for ourselves.
			if l.readDirect(src) {
				b.unpark()
				continue
			}
		} else {
			l.ensureReader()
		}
		select {
		case <-ch:
		case <-cancel:
			b.unpark()
			return nil, message{}, errCanceled
		}
	}
}

// catchAll is the empty-ID connection of a link: it receives messages of
// every record no one has claimed, oldest ready record first.
type catchAll struct {
	inbox
	ready fifo[*stream] // records holding messages, oldest first; guarded by mu
}

func (ca *catchAll) push(s *stream) bool {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if !s.inReady {
		s.inReady = true
		ca.ready.push(s)
	}
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
		s.inReady = false
		s.mu.Lock()
		var m message
		ok = s.owner == nil
		if ok {
			m, ok = s.popMessageLocked()
		}
		more := s.hasMessageLocked()
		s.mu.Unlock()
		if !ok {
			continue
		}
		if more {
			s.inReady = true
			ca.ready.push(s)
		}
		return s, m, true
	}
}

// installCatchAll makes ca the link's catch-all and hands it every
// unclaimed record that already holds messages.
func (l *link) installCatchAll(ca *catchAll) bool {
	if !l.catchAll.CompareAndSwap(nil, ca) {
		return false
	}
	l.routes.Range(func(_, v any) bool {
		s := v.(*stream)
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
