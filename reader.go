// SPDX-License-Identifier: MIT

package tcpconn

import (
	"errors"
	"net"
	"time"
)

// pendingData is a data frame or PART whose header was read and whose
// payload is still arriving; it survives a read interrupted by a deadline.
type pendingData struct {
	active bool
	s      *stream  // nil: discard
	part   *partial // the message in parts this PART belongs to; nil for a data frame
	got    int      // bytes of the message in m.data so far
	end    int      // where this frame's payload ends in the message
	total  int      // the message's size
	cost   int64
	m      message
}

// partial is a message in parts being reassembled: PART frames for its ID
// arrive in order, possibly between other IDs' frames. The reader owns it
// (l.partials, keyed by ID); it was admitted against the credit windows as
// a whole at its first PART, so the bytes held in partials are bounded by
// the windows like whole messages.
type partial struct {
	id    string
	s     *stream // nil: an incarnation we closed, read and dropped
	m     message
	got   int
	total int
	cost  int64
	lent  int64 // link credit lent for it (link.lend)
}

// handBackDelay is how long the token must stay unused by receivers before
// the background reader takes it again, so that control frames and
// messages for absent receivers are still read promptly. It is checked by
// the background reader's own timer rather than armed on every release:
// a timer reset per message measurably slowed round trips.
const handBackDelay = 5 * time.Millisecond

// readLoop is the background reader. It holds the token when no receiver
// reads for itself, and steps back once it has handed a message to a
// waiting receiver with nothing else buffered, so that receiver's next call
// can read directly.
func (l *link) readLoop() {
	// newLink took the token for us.
	if err := l.readHello(); err != nil {
		l.rmu.Unlock()
		l.fail(err)
		return
	}
	var t *time.Timer // made when first needed: an idle link never steps back
	for {
		if err := l.readUntil(nil); err != nil {
			if t != nil {
				t.Stop()
			}
			return
		}
		if t == nil {
			t = time.NewTimer(handBackDelay)
		}
		if !l.awaitToken(t) {
			return
		}
	}
}

// awaitToken takes the token back for the background reader: at once when
// kicked (receivers wait for a message someone must read), or when no
// receiver has released it for handBackDelay. A receiver that holds it that
// long is blocked reading for itself (an idle link); then, instead of
// checking again every handBackDelay, the background reader sleeps until
// that receiver lets go (releaseToken wakes it): 10,000 idle links that
// polled kept a server's two cores busy and made it miss keepalives. It
// reports false once the link is done.
func (l *link) awaitToken(t *time.Timer) bool {
	seen := l.releases.Load()
	t.Reset(handBackDelay)
	tick := t.C
	for {
		select {
		case <-l.rkick:
			if tick == nil && l.parked.Load() == 0 {
				// Woken from sleep by a release: watch again, leaving the
				// token to the receiver's next call for handBackDelay.
				seen = l.releases.Load()
				t.Reset(handBackDelay)
				tick = t.C
				continue
			}
			if l.rmu.TryLock() {
				l.dormant.Store(false)
				return true
			}
		case <-tick:
			if r := l.releases.Load(); r != seen {
				seen = r // receivers are reading for themselves
				t.Reset(handBackDelay)
				continue
			}
			if l.rmu.TryLock() {
				return true
			}
			l.dormant.Store(true)
			if r := l.releases.Load(); r != seen {
				// Released after all, maybe before it could see us asleep.
				l.dormant.Store(false)
				seen = r
				t.Reset(handBackDelay)
				continue
			}
			tick = nil
		case <-l.done:
			t.Stop()
			l.rmu.Lock() // once the holder lets go: what it left unfinished
			l.dropPartials()
			l.rmu.Unlock()
			return false
		}
	}
}

// readDirect lets a receiver with nothing queued read for itself if the
// token is free, until src is ready. It reports whether it did (then
// src is ready, or the link failed).
func (l *link) readDirect(src source) bool {
	l.flushLazy()
	if !l.rmu.TryLock() {
		return false
	}
	l.direct.Store(true)
	l.readUntil(src)
	return true
}

// readUntil reads frames holding the token until src is ready (a
// receiver reading for itself) or, for the background reader (src nil),
// until it may step back. It always returns with the token released; an
// error means the link failed.
func (l *link) readUntil(src source) error {
	for {
		if src != nil && isReady(src) {
			l.releaseToken()
			return nil
		}
		woke, err := l.readFrame()
		if err != nil {
			if isTimeout(err) && !l.failed() {
				// An interrupt (Close or idle timeout of a receiver reading
				// for itself); the frame in progress resumes.
				l.conn.SetReadDeadline(time.Time{})
				continue
			}
			l.direct.Store(false)
			l.dropPartials()
			l.rmu.Unlock()
			l.fail(readFailure(err))
			return l.linkError()
		}
		if src == nil && woke && l.parked.Load() == 0 && l.br.Buffered() == 0 {
			l.releaseToken()
			return nil
		}
	}
}

// releaseToken gives up the token: to the background reader at once if
// receivers wait, else after handBackDelay unless a receiver takes it again.
func (l *link) releaseToken() {
	l.direct.Store(false)
	l.rmu.Unlock()
	if l.parked.Load() > 0 {
		l.kickReader()
	} else {
		l.releases.Add(1)
		if l.dormant.Load() && l.dormant.CompareAndSwap(true, false) {
			l.kickReader() // it sleeps since we took the token: watch again
		}
	}
}

// ensureReader kicks the background reader if nobody holds the token (a
// holder kicks it on release when receivers are parked).
func (l *link) ensureReader() {
	l.flushLazy()
	if l.rmu.TryLock() {
		l.rmu.Unlock()
		l.kickReader()
	}
}

func (l *link) kickReader() {
	select {
	case l.rkick <- struct{}{}:
	default:
	}
}

// interruptDirect wakes a receiver blocked reading for itself, so that it
// notices Close or an idle timeout. Spurious interrupts are harmless.
func (l *link) interruptDirect() {
	if l.direct.Load() {
		l.conn.SetReadDeadline(aLongTimeAgo)
	}
}

var aLongTimeAgo = time.Unix(1, 0)

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
