// SPDX-License-Identifier: MIT

package tcpconn

import (
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"syscall"
	"time"
)

// The write side of a link. Senders append frames to one ordered batch under
// link.wq.mu. Whoever finds no write in progress writes the batch with one
// writev: the sender itself for a lone message (no hand-off on the latency
// path), or the writer goroutine when sends come back to back (write
// behind, so the next ones coalesce while this batch is in the kernel).
// Small payloads are copied into pooled buffers and their Send returns at
// once; large ones are referenced without copying and their sender waits
// until they are written.
//
// A message larger than Config.FrameSize goes out in parts (PART frames),
// scheduled so that small messages never wait behind it: every batch
// carries all queued small frames and control frames first, then one part
// of one message in parts, taken round robin among them (so bulk flows
// share the socket evenly). A part is a slice of the caller's buffer, not a
// copy. Parts of two messages never interleave on one ID: the next message
// on an ID waits until the last part of the one before is queued.

const (
	// copyLimit is the largest payload Send copies and queues without
	// waiting; larger payloads are written from the caller's slice.
	copyLimit = 32 << 10
	// queueLimit bounds bytes queued per link: beyond it a sender waits for
	// its own frame to be written, which is the backpressure.
	queueLimit = 1 << 20
	// refMin: a byte stream's Write (Connection.NetConn) of this much or
	// more is written from the caller's slice, as a TCP write would be,
	// rather than copied into the write queue first.
	refMin = 4 << 10
	// gatherChunk is the capacity of every coalescing buffer (bufpool.go);
	// a frame copied into one (at most copyLimit plus a header) always fits.
	gatherChunk = 64 << 10
)

// writeBatch is an ordered list of frames: runs of small frames coalesced
// into pooled buffers, interleaved with callers' large payloads.
type writeBatch struct {
	segs    [][]byte
	owned   []*byteBuffer
	waiters []*writeReq
	tail    *byteBuffer // the pooled buffer of the last segment; nil after a reference
	size    int
	msgs    uint64
	bulk    uint64 // of msgs, those of LaneThreshold bytes or more (smallTrafficLocked)
	payload uint64
	parts   bool // carries parts of a message in parts (adaptBurst)
}

// writeReq is a sender waiting for its large frame, or its message in
// parts, to be written. For a message in parts it also says how far the
// writer got (guarded by link.wq.mu).
type writeReq struct {
	done     chan struct{}
	err      error
	s        *stream
	data     []byte
	off      int
	linkCost int64 // link credit a message in parts takes with its first part; 0 once taken
}

// writeReqFree keeps writeReqs across garbage collections (bufpool.go).
var writeReqFree = newFreeList[*writeReq](64)

func getWriteReq() *writeReq {
	if r, ok := writeReqFree.tryGet(); ok {
		return r
	}
	return &writeReq{done: make(chan struct{}, 1)}
}

func putWriteReq(r *writeReq) {
	*r = writeReq{done: r.done}
	writeReqFree.put(r)
}

func (b *writeBatch) appendCopy(hdr, data []byte) {
	n := len(hdr) + len(data)
	if b.tail != nil && len(b.tail.B)+n > gatherChunk {
		b.tail = nil // keep pooled buffers of one size class
	}
	if b.tail == nil {
		if n > gatherChunk {
			// Only before the peer's HELLO, when every payload up to
			// InitialWindow is copied: a buffer of its own, not pooled.
			b.tail = &byteBuffer{B: make([]byte, 0, n)}
		} else {
			b.tail = gatherFree.get()
		}
		b.owned = append(b.owned, b.tail)
		b.segs = append(b.segs, nil)
	}
	b.tail.B = append(b.tail.B, hdr...)
	b.tail.B = append(b.tail.B, data...)
	b.segs[len(b.segs)-1] = b.tail.B
	b.size += len(hdr) + len(data)
}

func (b *writeBatch) appendRef(hdr, data []byte, r *writeReq) {
	b.appendCopy(hdr, nil)
	if len(data) > 0 {
		b.segs = append(b.segs, data)
		b.tail = nil
		b.size += len(data)
	}
	b.waiters = append(b.waiters, r)
}

func (b *writeBatch) empty() bool { return len(b.segs) == 0 && len(b.waiters) == 0 }

// finish reports err to the waiting senders and recycles the batch.
func (b *writeBatch) finish(err error) {
	for _, r := range b.waiters {
		r.err = err
		r.done <- struct{}{}
	}
	for _, o := range b.owned {
		gatherFree.put(o)
	}
	clear(b.segs) // do not pin callers' payloads
	clear(b.waiters)
	clear(b.owned)
	*b = writeBatch{segs: b.segs[:0], owned: b.owned[:0], waiters: b.waiters[:0]}
}

// send queues one data frame for s once credit allows. owner is the inbox
// of the Connection sending (s's own, or its catch-all): when it fails
// (Close, idle timeout, link loss) a wait for credit ends with its error.
// done aborts the wait (errCanceled). data may be reused when send returns.
//
// Before the peer's HELLO, send uses the protocol's InitialWindow as both
// credits and as the message limit (a larger message waits for the HELLO,
// it is not refused), copies every payload, and leaves the writing to the
// writer goroutine: a TLS handshake, or a synchronous net.Pipe, must not
// block a sender on a peer that has not started reading yet.
func (l *link) send(done <-chan struct{}, s *stream, owner *inbox, data []byte, byRef bool) error {
	var hb [maxDataHeader]byte
	hdr := appendDataHeader(hb[:0], s.id, len(data))
	cost := int64(len(data)) + messageOverhead
	l.wq.mu.Lock()
	var hello, inParts bool
	var lane *lane
	for {
		if s.state.Load() != 0 { // first: the stream's end says why, not the link's after it
			l.wq.mu.Unlock()
			return s.sendError()
		}
		if l.wq.err != nil {
			l.wq.mu.Unlock()
			return l.linkError()
		}
		if l.wq.closing {
			l.wq.mu.Unlock()
			return ErrClosed
		}
		if l.wq.handedOff {
			l.wq.mu.Unlock()
			return ErrBulkLane
		}
		hello = l.peer.version != 0
		window, linkWindow, maxMessage := int64(InitialWindow), int64(InitialWindow), uint64(InitialWindow)
		if hello {
			window, linkWindow, maxMessage = int64(l.peer.streamWindow), int64(l.peer.linkWindow), uint64(l.peer.maxMessage)
			if uint64(len(data)) > maxMessage {
				l.wq.mu.Unlock()
				return fmt.Errorf("%w: %d bytes, the peer accepts at most %d", ErrMessageTooLarge, len(data), maxMessage)
			}
			if len(data) >= l.cfg.LaneThreshold && !l.goingAway.Load() && !l.drainingLanes.Load() && l.smallTrafficLocked(nanotime()) {
				lane = l.laneUpLocked()
				if lane == nil {
					l.wantLaneLocked()
				}
			}
			inParts = lane == nil && len(data) > l.cfg.FrameSize
		}
		// A message in parts takes its link credit when its first part is
		// queued (takePartLocked): the receiver charges frames in the order
		// they arrive, so credit must be taken in that order too.
		if uint64(len(data)) <= maxMessage && s.outflow.open(window) && (inParts || l.outflow.open(linkWindow)) && !s.inParts {
			break
		}
		wake := l.wq.creditWaitLocked()
		l.wq.mu.Unlock()
		if err := owner.error(); err != nil && !(err == ErrPeerClosed && s.peerFinished.Load()) {
			return err
		}
		l.token.parked.Add(1) // credit comes from frames someone must read
		l.ensureReader()
		select {
		case <-wake:
		case <-done:
			l.token.parked.Add(-1)
			return errCanceled
		}
		l.token.parked.Add(-1)
		l.wq.mu.Lock()
	}
	if lane != nil {
		l.outflow.take(cost)
		return l.sendOnLane(lane, s, data, cost)
	}
	if inParts {
		// Link and stream credit are taken as parts are queued (takePartLocked).
		return l.sendInParts(s, data, cost)
	}
	l.outflow.take(cost)
	s.outflow.take(cost)
	l.wq.wb.msgs++
	if len(data) >= l.cfg.LaneThreshold {
		l.wq.wb.bulk++
	}
	l.wq.wb.payload += uint64(len(data))
	now := nanotime()
	l.sched.smallAt = now
	if !hello || len(data) <= copyLimit && l.wq.wb.size < queueLimit && !(byRef && len(data) >= refMin) {
		l.wq.wb.appendCopy(hdr, data)
		if l.wq.busy {
			l.wq.mu.Unlock() // the writer in progress takes it along
			return nil
		}
		l.wq.busy = true
		if !hello || now-l.wq.lastFlush < int64(streamingGap) {
			// Sends are coming back to back: write behind, so the next
			// messages coalesce while this batch is in the kernel.
			l.wq.mu.Unlock()
			go l.flushBehind()
			return nil
		}
		// A lone message (request/response): write it ourselves, with no
		// goroutine hand-off on the latency path.
		l.wq.mu.Unlock()
		if l.token.parked.Load() > 0 {
			// Other goroutines wait on this link, so runnable ones are
			// likely about to send too: let them queue behind us first and
			// share this writev.
			runtime.Gosched()
		}
		l.flush()
		return nil
	}
	r := getWriteReq()
	l.wq.wb.appendRef(hdr, data, r)
	if l.wq.busy {
		l.wq.mu.Unlock()
	} else {
		l.wq.busy = true // write it ourselves; flush signals r too
		l.wq.mu.Unlock()
		l.flush()
	}
	<-r.done
	err := r.err
	putWriteReq(r)
	return err
}

// sendInParts queues a message for the scheduler (takePartLocked) and waits
// until its last part is written. The caller holds wq.mu, which it releases.
func (l *link) sendInParts(s *stream, data []byte, cost int64) error {
	r := getWriteReq()
	r.s, r.data, r.linkCost = s, data, cost
	l.sched.add(r)
	s.inParts = true
	if l.wq.busy {
		l.wq.mu.Unlock()
	} else {
		l.wq.busy = true // write it ourselves, part by part
		l.wq.mu.Unlock()
		l.flush()
	}
	select {
	case <-r.done: // written inline in one go: the common case
	default:
		// Parts wait for credit, which comes back in frames someone
		// must read.
		l.token.parked.Add(1)
		l.ensureReader()
		<-r.done
		l.token.parked.Add(-1)
	}
	err := r.err
	if err == errStreamEnded {
		err = s.sendError()
	}
	putWriteReq(r)
	return err
}

// takePartLocked adds parts of the messages in parts to b, behind the small
// and control frames already in it, round robin among those messages: one
// part of FrameSize while small messages are about (one was queued within
// smallQuiet), else parts of up to l.sched.burst bytes, so that a lone bulk
// transfer on a fast path pays no more syscalls, on either side, than a
// whole message. A part goes only while its stream's credit is positive
// and costs its length; the last part also charges the whole message, as
// the receiver does once it is complete (README, "Messages in parts"). The
// first part takes the link's credit for the whole message, once that is
// positive: here, in the order the receiver charges it. A
// message whose stream ended is abandoned: no part may follow a CLOSE.
// It reports whether it added anything.
func (l *link) takePartLocked(b *writeBatch) bool {
	if len(l.sched.bulk) == 0 {
		return false // every flush asks; most have no parts to take
	}
	budget := l.sched.budget(l.cfg.FrameSize, nanotime())
	inFlight := int64(l.peer.streamWindow)
	taken, skipped := 0, 0
	for taken < budget && skipped < len(l.sched.bulk) {
		r := l.sched.current()
		if r.s.state.Load() != 0 {
			l.finishPartsLocked(r)
			r.err = errStreamEnded // sendInParts asks the stream why (its lock is not taken under wq.mu)
			r.done <- struct{}{}
			continue
		}
		if !r.s.outflow.open(inFlight) || r.linkCost > 0 && !l.outflow.open(int64(l.peer.linkWindow)) {
			l.sched.skip()
			skipped++ // until the peer's WINDOW or LINK_WINDOW (addSendCredit kicks the writer)
			continue
		}
		skipped = 0
		l.outflow.take(r.linkCost)
		r.linkCost = 0
		n := min(len(r.data)-r.off, max(l.cfg.FrameSize, budget-taken))
		rest := len(r.data) - r.off - n
		var hb [maxPartHeader]byte
		b.appendCopy(appendPartHeader(hb[:0], r.s.id, rest, n), nil)
		b.segs = append(b.segs, r.data[r.off:r.off+n])
		b.tail = nil
		b.size += n
		b.payload += uint64(n)
		b.parts = true
		r.off += n
		r.s.outflow.take(int64(n))
		taken += n
		if rest > 0 {
			l.sched.skip()
			continue
		}
		r.s.outflow.take(int64(len(r.data)) + messageOverhead)
		l.finishPartsLocked(r)
		b.msgs++
		if len(r.data) >= l.cfg.LaneThreshold {
			b.bulk++
		}
		b.waiters = append(b.waiters, r) // its Send returns once b is written
	}
	return taken > 0
}

// finishPartsLocked takes r out of the round robin; the next message on its
// stream may start.
func (l *link) finishPartsLocked(r *writeReq) {
	l.sched.remove(r)
	r.s.inParts = false
	l.wq.wakeCreditLocked()
}

// errCanceled tells the caller that its done channel fired; the caller knows
// which error that stands for.
var errCanceled = errors.New("tcpconn: canceled")

// errStreamEnded: a message in parts was abandoned because its stream ended.
var errStreamEnded = errors.New("tcpconn: stream ended")

// How a control frame leaves: through the writer goroutine (the read loop
// must never block on the socket, nor a caller holding Connection.mu), or lazily:
// window updates ride along with the next write, and a receiver about to
// wait for the socket writes them first (flushLazy), so they cost no
// syscall of their own in request/response traffic.
type controlMode uint8

const (
	controlAsync controlMode = iota
	controlLazy
)

// enqueueControl queues a control frame for the writer goroutine.
func (l *link) enqueueControl(frame []byte) { l.queueControl(frame, controlAsync) }

func (l *link) queueControl(frame []byte, how controlMode) {
	l.wq.mu.Lock()
	if l.wq.sealedLocked() {
		l.wq.mu.Unlock()
		return
	}
	l.wq.wb.appendCopy(frame, nil)
	if how == controlLazy && !l.wq.busy {
		if !l.wq.lazyPending.Swap(true) {
			// The backstop: if no write or wait comes along, the writer
			// goroutine sends it shortly (the peer may be waiting for it).
			if l.wq.lazyTimer == nil {
				l.wq.lazyTimer = time.AfterFunc(lazyDelay, l.lazyTimerFired)
			} else {
				l.wq.lazyTimer.Reset(lazyDelay)
			}
		}
	} else {
		l.kickWriterLocked()
	}
	l.wq.mu.Unlock()
}

// A writer goroutine yields once before writing a batch smaller than
// behindBatch (a few small messages: one writev for each would cost more
// than the messages) while more than behindParked goroutines wait on the
// link (flushBehind).
const (
	behindBatch  = 4 << 10
	behindParked = 2
)

// lazyDelay bounds how long a lazily queued window update waits.
const lazyDelay = time.Millisecond

func (l *link) lazyTimerFired() {
	if !l.wq.lazyPending.Load() {
		return
	}
	l.wq.mu.Lock()
	if !l.wq.wb.empty() {
		l.kickWriterLocked()
	}
	l.wq.mu.Unlock()
}

// flushLazy writes lazily queued control frames before the caller waits
// for the peer, who may be waiting for exactly those credits.
func (l *link) flushLazy() {
	if !l.wq.lazyPending.Load() {
		return
	}
	l.wq.mu.Lock()
	if l.wq.busy || l.wq.err != nil || l.wq.wb.empty() {
		l.wq.mu.Unlock()
		return
	}
	l.wq.busy = true
	l.wq.mu.Unlock()
	l.flush()
}

// kickWriterLocked starts a writer goroutine unless a flush is in progress.
// Writers exist only while there is something to write behind: an idle
// link has no writer goroutine (flush returns when the queue is empty).
func (l *link) kickWriterLocked() {
	if !l.wq.busy {
		l.wq.busy = true
		go l.flushBehind()
	}
}

// streamingGap: a Send that comes this soon after the last flush ended is
// part of a stream and is written behind; a later one is written inline.
const streamingGap = 2 * time.Microsecond

func nanotime() int64 { return int64(time.Since(epoch)) }

// flushBehind is flush on a writer goroutine of its own. While many
// goroutines wait on the link (receivers of many logical connections,
// whose replies are about to be sent), it yields once before writing a
// small batch, so that senders made runnable meanwhile queue behind and
// share the writev. With one or two waiting (a probe beside a bulk
// transfer) it writes at once: the yield could put it behind whatever
// else runs, a lane's copy for one. A sender that writes for itself
// never yields here.
func (l *link) flushBehind() { l.flushing(true) }

// flush writes queued batches until none is left; the caller set
// writerBusy and flush clears it.
func (l *link) flush() { l.flushing(false) }

func (l *link) flushing(behind bool) {
	yielded := false
	for {
		l.wq.mu.Lock()
		if behind && !yielded && l.wq.wb.size < behindBatch && l.token.parked.Load() > behindParked {
			yielded = true
			l.wq.mu.Unlock()
			runtime.Gosched()
			continue
		}
		yielded = false
		b := l.wq.takeLocked()
		if b != nil && !l.takePartLocked(b) && b.empty() {
			l.wq.putBackLocked(b) // nothing to write
			b = nil
		}
		if b == nil {
			closed := l.wq.closing && l.wq.err == nil // close's GOAWAY is out
			l.wq.busy = false
			if l.wq.lazyPending.Swap(false) {
				// Written: its backstop would only wake a goroutine for nothing.
				l.wq.lazyTimer.Stop()
			}
			l.wq.lastFlush = nanotime()
			l.wq.mu.Unlock()
			if closed {
				l.finishClose()
			}
			return
		}
		l.wq.mu.Unlock()

		// Counted before the write: a message the peer has answered must
		// already show in Stats.
		l.counters.messagesOut.Add(b.msgs)
		if b.bulk > 0 {
			l.lanes.bulkOut.Add(b.bulk)
		}
		l.counters.bytesOut.Add(b.payload)
		var start int64
		if b.parts { // bursts of parts are sized by how fast they drain
			start = nanotime()
		}
		err := l.writeOut(b)
		if b.parts {
			l.adaptBurst(nanotime() - start)
		}
		if err != nil {
			l.fail(writeFailure(err))
			err = l.linkError()
		}
		b.finish(err)
		l.wq.mu.Lock()
		l.wq.recycleLocked(b)
		l.wq.mu.Unlock()
	}
}

// adaptBurst sizes the next bursts of parts by how fast the last one was
// written.
func (l *link) adaptBurst(took int64) {
	l.wq.mu.Lock()
	l.sched.adapt(took, l.cfg.FrameSize)
	l.wq.mu.Unlock()
}

// writeOut writes b on the link's socket.
func (l *link) writeOut(b *writeBatch) error {
	l.wq.wv = b.segs
	return writeSegments(l.conn, l.tcp, &l.wq.wv)
}

// writeSegments writes segs (consuming it) with one writev on TCP (tcp
// non-nil). Elsewhere (TLS, proxies) net.Buffers would issue one Write per
// segment, so small segments are coalesced into gatherChunk-sized Writes.
func writeSegments(conn net.Conn, tcp *net.TCPConn, segs *net.Buffers) error {
	if tcp != nil || len(*segs) == 1 {
		_, err := segs.WriteTo(conn)
		return err
	}
	g := gatherFree.get()
	defer gatherFree.put(g)
	for _, seg := range *segs {
		if len(g.B) > 0 && len(g.B)+len(seg) > gatherChunk {
			if _, err := conn.Write(g.B); err != nil {
				return err
			}
			g.B = g.B[:0]
		}
		if len(seg) >= gatherChunk {
			if _, err := conn.Write(seg); err != nil {
				return err
			}
			continue
		}
		g.B = append(g.B, seg...)
	}
	if len(g.B) == 0 {
		return nil
	}
	_, err := conn.Write(g.B)
	return err
}

func (l *link) wakeCreditWaiters() {
	l.wq.mu.Lock()
	l.wq.wakeCreditLocked()
	l.wq.mu.Unlock()
}

// failWrites is fail's part for the write side: queued senders get err.
func (l *link) failWrites(err error) {
	l.wq.mu.Lock()
	l.wq.err = err
	if l.wq.lazyTimer != nil {
		l.wq.lazyTimer.Stop()
	}
	l.wq.wakeCreditLocked()
	b := l.wq.wb
	l.wq.wb = &writeBatch{}
	bulk := l.sched.bulk
	l.sched.bulk = nil
	l.wq.mu.Unlock()
	b.finish(err)
	for _, r := range bulk {
		r.err = err
		r.done <- struct{}{}
	}
}

// maxControlFrame is the longest control frame (CLOSE or GOAWAY with a
// 254-byte ID or reason).
const maxControlFrame = sizeOfIDLen + sizeOfType + sizeOfLength + sizeOfIDLen + maxIDLen

// writeFailure is the link's error for a failed write. EPIPE means the
// peer closed its end (on Linux: its FIN came, then a reset), which a read
// reports as io.EOF; a write that notices first says the same, so a
// server's receive loop sees a client that went away as io.EOF whichever
// side of the link failed first, never a bare "writev: broken pipe"
// (TestClientPoolingSharesOneSocket).
func writeFailure(err error) error {
	if errors.Is(err, syscall.EPIPE) {
		return fmt.Errorf("%w: write: %w (%w)", ErrLinkLost, err, io.EOF)
	}
	return fmt.Errorf("%w: write: %w", ErrLinkLost, err)
}
