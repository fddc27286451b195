// SPDX-License-Identifier: MIT

package tcpconn

import (
	"sync"
	"sync/atomic"
	"time"
)

// The announcements of lane messages: BULK frames read on the link's
// socket, matched in order with the bytes the lane brings for their ID.

// laneMessage is a message announced by BULK, its bytes arriving on the
// lane; the lane's reader owns it once it is at the front for its ID.
type laneMessage struct {
	id    string
	s     *stream // nil: an incarnation we closed; read and dropped
	m     message
	got   int
	total int
	cost  int64
	lent  bool // m is a receiver's buffer (laneloan.go)
}

// laneInbox holds the announced messages by ID, in their order, until the
// lane's reader has read them.
type laneInbox struct {
	mu      sync.Mutex
	byID    map[string]*fifo[*laneMessage]
	wake    chan struct{} // closed when a message is announced; nil if nobody waits
	emptied chan struct{} // closed when the last message is taken; nil if nobody waits
}

func (in *laneInbox) announce(lm *laneMessage) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.byID == nil {
		in.byID = make(map[string]*fifo[*laneMessage])
	}
	q := in.byID[lm.id]
	if q == nil {
		q = new(fifo[*laneMessage])
		in.byID[lm.id] = q
	}
	q.push(lm)
	if in.wake != nil {
		close(in.wake)
		in.wake = nil
	}
}

// front returns the oldest message announced for id, waiting for its
// announcement until done closes, or (errTakeBack) while receivers want
// buffers lent to the lane back (takeBacks).
func (in *laneInbox) front(id string, done <-chan struct{}, takeBacks *atomic.Int32) (*laneMessage, error) {
	for {
		in.mu.Lock()
		if q := in.byID[id]; q != nil && q.len() > 0 {
			lm := q.items[q.head]
			in.mu.Unlock()
			return lm, nil
		}
		if takeBacks.Load() > 0 {
			in.mu.Unlock()
			return nil, errTakeBack
		}
		if in.wake == nil {
			in.wake = make(chan struct{})
		}
		wake := in.wake
		in.mu.Unlock()
		select {
		case <-wake:
		case <-done:
			return nil, ErrClosed
		}
	}
}

// finish takes lm, complete, off the front of its ID's line; false if
// it was given up (abandon).
func (in *laneInbox) finish(lm *laneMessage) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	q := in.byID[lm.id]
	if q == nil || q.len() == 0 || q.items[q.head] != lm {
		return false
	}
	q.pop()
	if q.len() == 0 {
		delete(in.byID, lm.id)
		in.wakeIfEmptyLocked()
	}
	return true
}

// interrupt wakes a wait in front, to look at takeBacks.
func (in *laneInbox) interrupt() {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.wake != nil {
		close(in.wake)
		in.wake = nil
	}
}

func (in *laneInbox) wakeIfEmptyLocked() {
	if len(in.byID) == 0 && in.emptied != nil {
		close(in.emptied)
		in.emptied = nil
	}
}

// awaitEmpty waits until no announced message is pending, or deadline or
// done.
func (in *laneInbox) awaitEmpty(deadline <-chan time.Time, done <-chan struct{}) {
	in.mu.Lock()
	if len(in.byID) == 0 {
		in.mu.Unlock()
		return
	}
	if in.emptied == nil {
		in.emptied = make(chan struct{})
	}
	emptied := in.emptied
	in.mu.Unlock()
	select {
	case <-emptied:
	case <-deadline:
	case <-done:
	}
}

// empty reports whether no announced message waits for its bytes.
func (in *laneInbox) empty() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.byID) == 0
}

// abandon takes every announced message: the link failed.
func (in *laneInbox) abandon() []*laneMessage {
	in.mu.Lock()
	defer in.mu.Unlock()
	var all []*laneMessage
	for _, q := range in.byID {
		for {
			lm, ok := q.pop()
			if !ok {
				break
			}
			all = append(all, lm)
		}
	}
	in.byID = nil
	in.wakeIfEmptyLocked()
	return all
}
