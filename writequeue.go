// SPDX-License-Identifier: MIT

package tcpconn

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// writeQueue is a link's ordered queue of frames and the state of whoever
// writes it: senders append to wb under mu; one writer at a time (busy)
// swaps it with spare and writes it with one writev (writer.go). It also
// holds what senders waiting for credit wait on (creditWake), and the
// write side's end: closing once close queued its GOAWAY, err once the
// link failed.
//
// Lock order: mu is taken last; nothing else is taken while holding it,
// and it is never held across a socket write.
type writeQueue struct {
	mu          sync.Mutex
	wb, spare   *writeBatch
	busy        bool          // a flush is in progress: it takes what is queued along
	lastFlush   int64         // nanotime when the last flush ended
	lazyPending atomic.Bool   // control frames wait in wb for the next write
	lazyTimer   *time.Timer   // backstop for them; made on first use
	creditWake  chan struct{} // closed when credit arrives or a stream ends; nil if nobody waits
	closing     bool          // close was called: fail once the queue is written
	handedOff   bool          // the socket is becoming another link's bulk lane: nothing more goes on it
	err         error         // set once the link failed
	wv          net.Buffers   // the writer's; consumed by WriteTo
}

func (q *writeQueue) init() { q.wb, q.spare = &writeBatch{}, &writeBatch{} }

// sealedLocked reports whether nothing more may be queued: the link
// failed, close queued its GOAWAY, or the socket is changing hands (its
// LANE, or the refusal of one, was the last frame).
func (q *writeQueue) sealedLocked() bool { return q.err != nil || q.closing || q.handedOff }

// creditWaitLocked returns the channel a sender waiting for credit waits
// on; wakeCreditLocked closes it.
func (q *writeQueue) creditWaitLocked() <-chan struct{} {
	if q.creditWake == nil {
		q.creditWake = make(chan struct{})
	}
	return q.creditWake
}

// wakeCreditLocked wakes every sender waiting for credit; each checks
// again why it waits.
func (q *writeQueue) wakeCreditLocked() {
	if q.creditWake != nil {
		close(q.creditWake)
		q.creditWake = nil
	}
}

// takeLocked returns the batch to write and puts the spare in its place;
// nil if the link failed. Only the one writer (busy) calls it, and it
// recycles the batch before it takes again.
func (q *writeQueue) takeLocked() *writeBatch {
	if q.err != nil {
		return nil
	}
	b := q.wb
	q.wb, q.spare = q.spare, nil
	return b
}

// putBackLocked undoes takeLocked for a batch with nothing to write.
func (q *writeQueue) putBackLocked(b *writeBatch) { q.wb, q.spare = b, q.wb }

// recycleLocked keeps a written batch as the spare.
func (q *writeQueue) recycleLocked(b *writeBatch) {
	if q.spare == nil {
		q.spare = b
	}
}
