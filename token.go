// SPDX-License-Identifier: MIT

package tcpconn

import (
	"sync"
	"sync/atomic"
	"time"
)

// readToken is the right to read a link's socket and parse its frames.
// Its holder is the background reader, or one receiver reading for itself
// (no goroutine hand-off on a round trip); the frame reader, the pending
// payload, the partials and readInto belong to whoever holds it. The rest
// is how the holders take turns: who waits for a message (parked), whether
// the background reader is asleep (dormant: its goroutine ended on an idle
// link), and how it is woken (kick). The turn-taking itself lives in
// reader.go, which needs the link's socket and goroutines.
type readToken struct {
	mu     sync.Mutex
	direct atomic.Bool  // a receiver holds mu (interrupt it with a deadline)
	parked atomic.Int32 // receivers and senders waiting for frames someone must read
	// releases counts tokens released by receivers: the background reader
	// stays away while they read for themselves.
	releases atomic.Uint64
	dormant  atomic.Bool   // the background reader's goroutine ended (awaitToken)
	kick     chan struct{} // wakes the background reader
	// backTimer is the background reader's hand-back timer, made on first
	// use; only the background reader touches it.
	backTimer *time.Timer

	// Receivers with a context that can be canceled read only what has
	// arrived (noWait); these decide whether trying is worth a syscall.
	// noWaitReceivers also counts NetConn Reads (which wait in the read,
	// interruptible): for both, the background reader steps back once it
	// handed one a message, even with bytes buffered (readUntil).
	noWaitReceivers atomic.Int32  // such receivers in a call
	noWaitMisses    atomic.Uint32 // noWait reads in a row that found nothing
	noWaitCalls     atomic.Uint32 // calls of such receivers while tries miss
}

func (t *readToken) init() { t.kick = make(chan struct{}, 1) }

// kickBackground wakes the background reader if it waits for the token;
// a kick already pending is enough.
func (t *readToken) kickBackground() {
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// noWaitWorth reports whether a receiver with a context should try to read
// what has arrived. On round trips the answer is not there yet when the
// call starts, and the try is a read that finds nothing (+5 % on
// BenchmarkReceiveContext/rtt1KB): after a few such tries in a row, only
// one call in 16 tries, until one finds something again.
func (t *readToken) noWaitWorth() bool {
	const misses, every = 4, 16
	return t.noWaitMisses.Load() < misses || t.noWaitCalls.Add(1)%every == 0
}

// noWaitRead records whether a noWait read found something.
func (t *readToken) noWaitRead(found bool) {
	if found {
		t.noWaitMisses.Store(0)
	} else {
		t.noWaitMisses.Add(1)
	}
}
