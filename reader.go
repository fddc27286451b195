// SPDX-License-Identifier: MIT

package tcpconn

import (
	"errors"
	"io"
	"net"
	"time"
)

// pendingData is a data frame or PART whose header was read and whose
// payload is still arriving; it survives a read interrupted by a deadline.
type pendingData struct {
	active  bool
	inPlace bool     // m is a receiver's buffer (readInto)
	s       *stream  // nil: discard
	part    *partial // the message in parts this PART belongs to; nil for a data frame
	got     int      // bytes of the message in m.data so far
	end     int      // where this frame's payload ends in the message
	total   int      // the message's size
	cost    int64
	m       message
}

// readState is what belongs to the holder of a link's read token: the
// frame reader, the payload being read, the messages in parts being put
// together, where a receiver wants its message read (readInto), and the
// rate limit on the peer's control frames.
type readState struct {
	// ended is why the socket is read no more, set before the token is
	// let go for the last time: the link fails right after, and a
	// receiver that takes the token in between must not read (a socket
	// that became another link's lane belongs to that link's reader).
	ended    error
	br       *frameReader
	pend     pendingData
	partials map[string]*partial // messages in parts being reassembled, by ID
	into     readInto
	limiter  controlLimiter
}

// partial is a message in parts being reassembled: PART frames for its ID
// arrive in order, possibly between other IDs' frames. The reader owns it
// (l.reading.partials, keyed by ID); it was admitted against the credit windows as
// a whole at its first PART, so the bytes held in partials are bounded by
// the windows like whole messages.
type partial struct {
	id      string
	s       *stream // nil: an incarnation we closed, read and dropped
	m       message
	inPlace bool // m is a receiver's buffer (readInto)
	got     int
	total   int
	cost    int64
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
		l.reading.ended = err
		l.token.mu.Unlock()
		l.fail(err)
		return
	}
	l.readBehind(true)
}

// readBehind runs the background reader from the token in hand, or (when
// woken from sleep) from waiting for it.
func (l *link) readBehind(token bool) {
	for {
		if token {
			if _, _, err := l.readUntil(nil, nil); err != nil {
				if l.token.backTimer != nil {
					l.token.backTimer.Stop()
				}
				return
			}
		}
		token = l.awaitToken()
		if !token {
			return // the link is done, or the reader sleeps (wakeReader)
		}
	}
}

// awaitToken takes the token back for the background reader: at once when
// receivers wait for a message someone must read (kicked), or when no
// receiver has released it for handBackDelay. A receiver that holds it that
// long is blocked reading for itself (an idle link); then the background
// reader goes to sleep: its goroutine ends, and releaseToken or kickReader
// starts a new one (wakeReader). So a link whose application reads for
// itself has no goroutine of its own while idle, and no timer firing: at
// 10,000 idle links, background readers checking every handBackDelay keep
// a server's two cores busy and make it miss keepalives. It reports
// whether it took the token (false: the link is done, or it sleeps).
func (l *link) awaitToken() bool {
	seen := l.token.releases.Load()
	if l.token.parked.Load() > 0 && l.token.mu.TryLock() {
		return true
	}
	if l.token.backTimer == nil {
		l.token.backTimer = time.NewTimer(handBackDelay) // kept: a hand-back per message must not allocate
	} else {
		l.token.backTimer.Reset(handBackDelay)
	}
	for {
		select {
		case <-l.token.kick:
			if l.token.mu.TryLock() {
				return true
			}
		case <-l.token.backTimer.C:
			if r := l.token.releases.Load(); r != seen {
				seen = r // receivers are reading for themselves
				l.token.backTimer.Reset(handBackDelay)
				continue
			}
			if l.token.mu.TryLock() {
				return true
			}
			l.token.dormant.Store(true)
			if l.token.releases.Load() == seen && l.token.parked.Load() == 0 && len(l.token.kick) == 0 {
				return false // asleep; whoever clears dormant starts a reader
			}
			// A release or a kick came as we fell asleep, maybe before it
			// could see us asleep: stay, unless it already woke a reader.
			if !l.token.dormant.CompareAndSwap(true, false) {
				return false
			}
			seen = l.token.releases.Load()
			l.token.backTimer.Reset(handBackDelay)
		case <-l.done:
			l.token.backTimer.Stop()
			l.token.mu.Lock() // once the holder lets go: what it left unfinished
			l.dropPartials()
			l.token.mu.Unlock()
			return false
		}
	}
}

// wakeReader starts the background reader again if it sleeps, and reports
// whether it did.
func (l *link) wakeReader() bool {
	if l.token.dormant.Load() && l.token.dormant.CompareAndSwap(true, false) {
		go l.readBehind(false) // on a failed link: drops what partials it left, and ends
		return true
	}
	return false
}

// readDirect lets a receiver with nothing queued read for itself if the
// token is free, until src is ready. It reports whether it did: then src
// is ready, or the link failed, or from is non-nil and m is src's next
// message, read in place into into, the spare capacity of the receiver's
// buffer (readInto). It stops once cancel is closed. A receiver that may
// be canceled must not wait in a read that only a deadline interrupts,
// unless blocking: whoever closes cancel then calls interruptDirect
// (interruptible). Otherwise it reads only what has arrived (noWait);
// wouldBlock: it stopped for want of bytes.
func (l *link) readDirect(src source, into dest, cancel <-chan struct{}, blocking bool) (from *stream, m message, did, wouldBlock bool) {
	l.flushLazy()
	if !l.token.mu.TryLock() {
		return nil, message{}, false, false
	}
	if l.reading.ended != nil {
		l.token.mu.Unlock()
		return nil, message{}, false, false // the link's failure wakes the caller
	}
	l.token.direct.Store(true)
	noWait := !blocking
	l.reading.br.noWait = noWait
	if len(into.buf) > 0 || into.fresh {
		l.reading.into = readInto{src: src, dest: into}
	}
	heard := l.keepAlive.heard.Load()
	from, m, err := l.readUntil(src, cancel)
	if noWait {
		l.token.noWaitRead(l.keepAlive.heard.Load() != heard)
	}
	return from, m, true, err == errWouldBlock
}

// readInto is where a receiver reading for itself wants its next message
// (dest): read straight into the spare capacity of a ReceiveAppend's
// buffer, or into the new slice a Receive returns, it skips a copy through
// one of ours (for 64 KiB messages over a fast path, that copy is about a
// tenth of the receiving process's CPU). Only a
// message that fits and that src would take (its own stream's, or an
// unclaimed record's for a catch-all) is read there, a data frame or a
// message in parts (then its partial holds buf). It belongs to the token
// holder, and endDirect undoes it before the token goes: the receiver's
// memory is written by nobody else, and never after its call returned.
type readInto struct {
	src  source
	dest          // where src's receiver wants the message
	part *partial // the message in parts being read into buf, if any
	from *stream  // the record of the message read into buf, once complete
	m    message
}

// dest is where a receiver reading for itself wants its next message:
// buf, the spare capacity of a ReceiveAppend caller's buffer; or, with
// fresh, a new slice of the message's size, for a Receive, whose caller
// gets a new slice anyway: read straight into it, a small message skips
// a pooled buffer and a copy.
type dest struct {
	buf   []byte
	fresh bool
}

// inPlaceFor returns the receiver's buffer (readInto) for a message of n
// bytes for s, if it takes that message; ok false: read it into one of
// ours. The buffer is the receiver's, never to be released.
func (l *link) inPlaceFor(s *stream, n int) (m message, ok bool) {
	in := &l.reading.into
	fresh := in.fresh && n <= smallMessageLimit // a data frame the windows admitted, never a claim of megabytes
	if s == nil || n > len(in.buf) && !fresh {
		return message{}, false
	}
	ok = in.src == source(s)
	if _, isCatchAll := in.src.(*catchAll); isCatchAll {
		s.mu.Lock()
		ok = s.owner == nil
		s.mu.Unlock()
	}
	if !ok {
		return message{}, false
	}
	if fresh {
		m = message{data: make([]byte, n)}
	} else {
		m = message{data: in.buf[:n:n]}
	}
	in.buf, in.fresh = nil, false // one message per call
	return m, true
}

// deliverInPlace ends a message read into its receiver's buffer: src's
// next message, unless src's receiver was closed or, for a catch-all, the
// record was claimed while it arrived; then it goes to a buffer of ours
// and on as any other.
func (l *link) deliverInPlace(s *stream, m message) bool {
	if l.reading.into.takes(s) {
		l.reading.into.from, l.reading.into.m = s, m
		return false
	}
	return s.deliver(ownPayload(m.data, len(m.data)))
}

// takes reports whether src would receive a message for s next (inPlaceFor
// chose s for it: its own stream, or an unclaimed one for a catch-all).
func (in *readInto) takes(s *stream) bool {
	ca, _ := in.src.(*catchAll)
	if ca != nil {
		ca.mu.Lock() // lock order: catchAll.mu, then a stream's
		defer ca.mu.Unlock()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.queue.len() > 0 || s.order.pending > 0 || s.state.Load()&streamLocalClosed != 0 {
		return false
	}
	return ca == nil || ca.err == nil && ca.ready.len() == 0 && s.owner == nil
}

// ownPayload returns a buffer of ours for a payload of total bytes that
// begins with got, bytes that arrived in a receiver's buffer.
func ownPayload(got []byte, total int) message {
	data, pooled := getPayload(total)
	if len(data) < len(got) { // a large one starts small
		putPayload(data, pooled)
		data, pooled = make([]byte, len(got)), nil
	}
	copy(data, got)
	return message{data: data, pooled: pooled}
}

// endDirect undoes what a receiver reading for itself set up, before the
// token is released: it ends noWait reads and readInto, returning the
// message read in place, if any, and moving a payload still arriving into
// the receiver's buffer (its call is returning: Close or an idle timeout
// interrupted it, or noWait found the rest not there yet) to a buffer of
// ours, where the next holder resumes.
func (l *link) endDirect() (*stream, message) {
	l.reading.br.noWait = false
	if p := &l.reading.pend; p.active && p.inPlace {
		p.m, p.inPlace = ownPayload(p.m.data[:p.got], p.total), false
		if pt := p.part; pt != nil {
			pt.m, pt.inPlace = p.m, false
		}
	}
	if pt := l.reading.into.part; pt != nil && pt.inPlace { // between its parts
		pt.m, pt.inPlace = ownPayload(pt.m.data[:pt.got], pt.total), false
	}
	from, m := l.reading.into.from, l.reading.into.m
	if l.reading.into.src != nil {
		l.reading.into = readInto{}
	}
	return from, m
}

// readUntil reads frames holding the token until src is ready (a
// receiver reading for itself) or, for the background reader (src nil),
// until it may step back. It always returns with the token released; an
// error means the link failed, but for errWouldBlock (a noWait receiver
// found nothing more to read). With from non-nil, m is a message read in
// place (readInto): it belongs to the receiver's buffer. A receiver stops
// too once cancel is closed.
func (l *link) readUntil(src source, cancel <-chan struct{}) (from *stream, m message, err error) {
	if err := l.reading.ended; err != nil {
		l.token.mu.Unlock()
		return nil, message{}, err
	}
	for {
		if src != nil && (l.reading.into.from != nil || isReady(src, l.reading.into.buf) || cancel != nil && isClosed(cancel)) {
			from, m = l.endDirect()
			l.releaseToken()
			return from, m, nil
		}
		woke, err := l.readFrame()
		if err == errWouldBlock {
			l.endDirect()
			l.releaseToken()
			return nil, message{}, err
		}
		if err != nil {
			if isTimeout(err) && !l.failed() {
				// An interrupt (Close or idle timeout of a receiver reading
				// for itself); the frame in progress resumes.
				l.conn.SetReadDeadline(time.Time{})
				continue
			}
			l.token.direct.Store(false)
			l.endDirect()
			l.dropPartials()
			l.reading.ended = err
			l.token.mu.Unlock()
			if errors.Is(err, io.EOF) {
				l.awaitLaneMessages() // the peer closed after it wrote them
			}
			l.fail(readFailure(err))
			return nil, message{}, l.linkError()
		}
		// The background reader steps back once it woke a receiver and
		// nobody else waits, so that receiver's next call reads for
		// itself. While receivers with a context read with noWait, it does
		// so even with bytes buffered, which such a receiver reads: else a
		// stream of messages kept it reading and handing every message
		// over, at half the stream's speed (BenchmarkReceiveContext).
		if src == nil && woke && l.token.parked.Load() == 0 && (l.reading.br.Buffered() == 0 || l.token.noWaitReceivers.Load() > 0) {
			l.releaseToken()
			return nil, message{}, nil
		}
	}
}

// releaseToken gives up the token: to the background reader at once if
// receivers wait, else after handBackDelay unless a receiver takes it again.
func (l *link) releaseToken() {
	l.token.direct.Store(false)
	l.token.mu.Unlock()
	if l.token.parked.Load() > 0 {
		l.kickReader()
	} else {
		l.token.releases.Add(1)
		l.wakeReader() // if it sleeps since we took the token: watch again
	}
}

// ensureReader kicks the background reader if nobody holds the token (a
// holder kicks it on release when receivers are parked).
func (l *link) ensureReader() {
	l.flushLazy()
	if l.token.mu.TryLock() {
		l.token.mu.Unlock()
		l.kickReader()
	}
}

func (l *link) kickReader() {
	if l.wakeReader() {
		return // a new reader looks at parked first
	}
	l.token.kickBackground()
}

// interruptDirect wakes a receiver blocked reading for itself, so that it
// notices Close or an idle timeout. Spurious interrupts are harmless.
func (l *link) interruptDirect() {
	if l.token.direct.Load() {
		l.conn.SetReadDeadline(aLongTimeAgo)
	}
}

var aLongTimeAgo = time.Unix(1, 0)

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
