// SPDX-License-Identifier: MIT

package tcpconn

import (
	"fmt"
	"sync/atomic"
	"time"
	"unsafe"
)

// Stream state bits.
const (
	streamLocalClosed = 1 << iota // we sent CLOSE for this incarnation
	streamPeerClosed              // the peer closed this incarnation
)

// stream is one logical connection's record on one link: its receive queue
// and both directions of its credit.
type stream struct {
	inbox
	id      string
	queue   fifo[message] // guarded by mu
	owner   *Connection   // nil while unclaimed
	inReady bool          // guarded by the catch-all's mu

	state        atomic.Uint32
	retired      atomic.Bool  // no longer the route table's record for id
	closeAcks    atomic.Int32 // CLOSE replies still owed to us by the peer
	recvCredit   atomic.Int64
	unacked      atomic.Int64 // consumed since the last WINDOW
	sendCredit   int64        // guarded by link.wmu
	sendCreditOK bool         // guarded by link.wmu: sendCredit initialised from the peer's hello
}

// message is one received payload; pooled is non-nil when data aliases a
// small pooled buffer (bufpool.go).
type message struct {
	data   []byte
	pooled *byteBuffer
}

func (m message) cost() int64 { return int64(len(m.data)) + messageOverhead }

func (m message) release() { putPayload(m.data, m.pooled) }

func bytesToString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

func (l *link) newStream(id string) *stream {
	s := &stream{id: id, inbox: inbox{link: l}}
	s.recvCredit.Store(int64(l.cfg.StreamWindow))
	return s
}

// register claims id for owner on this link, taking over a record the peer
// opened first (the registration race keeps what already arrived).
func (l *link) register(id string, owner *Connection) (*stream, error) {
	for {
		if l.failed() {
			return nil, l.err
		}
		v, ok := l.routes.Load(id)
		if !ok {
			if l.nstreams.Load() >= int64(l.localStreamLimit()) {
				return nil, fmt.Errorf("%w: %d logical connections on this link", ErrTooManyStreams, l.nstreams.Load())
			}
			s := l.newStream(id)
			s.owner = owner
			if _, loaded := l.routes.LoadOrStore(id, s); loaded {
				continue
			}
			l.nstreams.Add(1)
			if l.failed() { // fail may have swept routes before the store
				s.fail(l.err)
			}
			return s, nil
		}
		s := v.(*stream)
		if s.state.Load()&streamLocalClosed != 0 || s.closeAcks.Load() > 0 {
			// A previous incarnation is still closing; start a new one that
			// inherits the CLOSE replies it must absorb.
			ns := l.newStream(id)
			ns.owner = owner
			ns.closeAcks.Store(s.closeAcks.Load())
			if l.routes.CompareAndSwap(id, s, ns) {
				s.retired.Store(true)
				return ns, nil
			}
			continue
		}
		s.mu.Lock()
		if s.owner != nil {
			s.mu.Unlock()
			return nil, fmt.Errorf("%w: %q", ErrIDInUse, id)
		}
		s.owner = owner
		s.mu.Unlock()
		l.unclaimedMu.Lock()
		delete(l.unclaimed, s)
		l.unclaimedMu.Unlock()
		return s, nil
	}
}

// localStreamLimit keeps this side within what the peer announced.
func (l *link) localStreamLimit() int {
	n := l.cfg.MaxStreams
	if l.helloReceived() {
		n = min(n, int(l.peer.maxStreams))
	}
	return n
}

// sendStream returns the record to send on for id, creating an unclaimed
// one (used by catch-all replies to IDs this side never registered).
func (l *link) sendStream(id string) (*stream, error) {
	if v, ok := l.routes.Load(id); ok {
		return v.(*stream), nil
	}
	if l.nstreams.Load() >= int64(l.localStreamLimit()) {
		return nil, ErrTooManyStreams
	}
	s := l.newStream(id)
	v, loaded := l.routes.LoadOrStore(id, s)
	if !loaded {
		l.nstreams.Add(1)
	}
	return v.(*stream), nil
}

// remove drops s from the route table if it is still the current record.
func (l *link) remove(s *stream) {
	if l.routes.CompareAndDelete(s.id, s) {
		s.retired.Store(true)
		l.nstreams.Add(-1)
	}
	l.unclaimedMu.Lock()
	delete(l.unclaimed, s)
	l.unclaimedMu.Unlock()
}

// closeStream is the local side ending s: CLOSE goes to the peer, whose reply
// retires the record.
func (l *link) closeStream(s *stream, code uint32) {
	for {
		st := s.state.Load()
		if st&streamLocalClosed != 0 {
			return
		}
		if s.state.CompareAndSwap(st, st|streamLocalClosed) {
			break
		}
	}
	if s.state.Load()&streamPeerClosed != 0 {
		l.remove(s) // the peer closed first and we already replied
		return
	}
	s.closeAcks.Add(1)
	l.enqueueControl(appendIDControl(nil, frameClose, s.id, code))
}

// route finds the record for a frame's ID, creating one for an ID the peer
// opens. It returns nil (and refuses the ID) when the local limits say no.
func (l *link) route(idb []byte) (*stream, error) {
	if s := l.lastHit; s != nil && !s.retired.Load() && s.id == string(idb) {
		return s, nil
	}
	if v, ok := l.routes.Load(bytesToString(idb)); ok {
		s := v.(*stream)
		l.lastHit = s
		return s, nil
	}
	id := string(idb)
	if n := l.nstreams.Load(); n >= int64(l.cfg.MaxStreams) {
		if n >= int64(l.cfg.MaxStreams)+int64(l.cfg.MaxStreams)/4 {
			return nil, protocolErrorf("peer opened more than %d logical connections", n)
		}
		return l.refuse(id), nil
	}
	s := l.newStream(id)
	if v, loaded := l.routes.LoadOrStore(id, s); loaded {
		return v.(*stream), nil
	}
	l.nstreams.Add(1)
	if l.accept != nil {
		if !l.accept(s) {
			l.closeStream(s, closeRefused)
			return s, nil
		}
	} else if l.catchAll.Load() == nil {
		// Nobody serves unclaimed IDs yet: expire it if never claimed.
		l.unclaimedMu.Lock()
		l.unclaimed[s] = time.Now().UnixNano()
		l.unclaimedMu.Unlock()
	}
	l.lastHit = s
	return s, nil
}

// refuse answers a new ID beyond MaxStreams with CLOSE(refused); its frames
// are discarded until the peer acknowledges.
func (l *link) refuse(id string) *stream {
	s := l.newStream(id)
	if _, loaded := l.routes.LoadOrStore(id, s); !loaded {
		l.nstreams.Add(1)
	}
	l.closeStream(s, closeRefused)
	return s
}

// expireUnclaimed retires peer-opened records nobody claimed within the idle
// timeout, telling the peer with CLOSE so nothing vanishes silently.
func (l *link) expireUnclaimed(now time.Time) {
	if l.cfg.IdleTimeout <= 0 {
		return
	}
	limit := now.Add(-l.cfg.IdleTimeout).UnixNano()
	var expired []*stream
	l.unclaimedMu.Lock()
	for s, born := range l.unclaimed {
		if born < limit {
			expired = append(expired, s)
			delete(l.unclaimed, s)
		}
	}
	l.unclaimedMu.Unlock()
	for _, s := range expired {
		s.mu.Lock()
		claimed := s.owner != nil
		s.mu.Unlock()
		if !claimed && l.catchAll.Load() == nil {
			s.fail(ErrIdleTimeout)
			l.closeStream(s, closeNormal)
			s.drain()
		}
	}
}

// deliver queues m and wakes whoever waits for it; it reports whether it
// woke a receiver.
func (s *stream) deliver(m message) bool {
	s.mu.Lock()
	s.queue.push(m)
	woke := s.wakeLocked()
	unclaimed := s.owner == nil
	s.mu.Unlock()
	if unclaimed {
		if ca := s.link.catchAll.Load(); ca != nil {
			woke = ca.push(s) || woke
		}
	}
	return woke
}

// popMessageLocked takes the oldest queued message.
func (s *stream) popMessageLocked() (message, bool) { return s.queue.pop() }

func (s *stream) popLocked() (*stream, message, bool) {
	m, ok := s.popMessageLocked()
	return s, m, ok
}

func (s *stream) hasMessageLocked() bool { return s.queue.len() > 0 }

// consumed returns credit for a message that left the queue.
func (s *stream) consumed(cost int64) {
	l := s.link
	if s.unacked.Add(cost) >= int64(l.cfg.StreamWindow)/2 && s.state.Load() == 0 {
		if v := s.unacked.Swap(0); v > 0 {
			s.recvCredit.Add(v)
			var fb [maxControlFrame]byte
			l.queueControl(appendIDControl(fb[:0], frameWindow, s.id, uint32(v)), controlLazy)
		}
	}
	l.consumedLink(cost, controlLazy)
}

// drain releases every queued message (the owner is gone).
func (s *stream) drain() {
	s.mu.Lock()
	var total int64
	for {
		m, ok := s.popMessageLocked()
		if !ok {
			break
		}
		total += m.cost()
		m.release()
	}
	s.mu.Unlock()
	if total > 0 {
		s.link.consumedLink(total, controlInline)
	}
}
