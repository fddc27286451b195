// SPDX-License-Identifier: MIT

package tcpconn

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// A link's bulk lane is a second socket to the same peer that carries the
// messages of Config.LaneThreshold bytes or more, so that small messages
// and control frames on the link's own socket never have bulk bytes ahead
// of them in a kernel buffer: two sockets are two queues, at both ends. No
// scheduling inside one byte stream can give that; Apache Cassandra keeps
// separate sockets for large messages for the same reason.
//
//   - Opening: the dialling side opens it on demand, when it sends such a
//     message or starts receiving one in parts. It dials the link's address
//     again and sends LANE (magic, version, the link's ID) as the socket's
//     first frame. The accepting side, a Listener or a wrapped socket alike,
//     finds the link by its ID, checks that the lane comes from the same TLS
//     peer and that the link has none, answers with its HELLO then LANE, and
//     hands the socket to the link. Until the lane is up, and on a link
//     whose peer refused it, messages go in parts on the link's socket.
//   - Order: a message put on the lane is announced on the link's socket by
//     BULK (its ID and length) at its place among the ID's frames; its bytes
//     follow on the lane in PARTs. The receiver holds the ID's later
//     messages, and the peer's CLOSE of it, until the lane has brought the
//     announced one (laneorder.go): a message never overtakes an earlier one
//     of its ID.
//   - Credit: BULK is charged like a data frame of its length against the
//     ID's and the link's windows and the Budget; the lane carries no
//     credit of its own.
//   - Failure: a lane's read or write error, or a protocol error on it,
//     fails its link: messages in flight are lost at most once, as for any
//     lost link. The lane closes with its link.

// laneState is where a link is with its lane; guarded by link.wq.mu.
type laneState uint8

const (
	laneNone    laneState = iota // none yet: the dialling side may open one
	laneOpening                  // the dialling side is opening one
	laneUp                       // messages of LaneThreshold bytes or more go on it
	laneEnding                   // idle: no new messages on it; it closes once both sides have ended it
	laneOff                      // none on this link: lanes are off, the peer refused, or it could not be dialled
)

// Limits of the lane.
const (
	// lanePart is the most one message puts in a write while other bulk
	// messages share the lane: they take turns, so one 16 MiB message
	// does not hold a 1 MiB one back for its whole length.
	lanePart = 256 << 10
	// laneBatch is the most one write on the lane carries.
	laneBatch = 1 << 20
	// laneHandshakeSkip bounds what a wrapped socket may send on a lane
	// before its LANE answer: frames of an application that speaks first
	// (Wrap then Send) on every accepted socket, within the peer's
	// InitialWindow, which the dialling side reads and drops.
	laneHandshakeSkip = 2*InitialWindow + 64<<10
	// laneIdle: a lane that carried nothing for this long is closed (by
	// its dialling side), so an idle link costs one socket again; the
	// next large message opens a new one.
	laneIdle = 30 * time.Second
)

// ErrBulkLane is what a server Connection made by Wrap on a socket that
// turns out to be another link's bulk lane returns from Receive and Send:
// the socket now belongs to that link. It matches io.EOF, so an accept
// loop that wraps every socket and ends its handler at io.EOF treats it as
// a client that came and went.
var ErrBulkLane = fmt.Errorf("tcpconn: the socket became the bulk lane of another link (%w)", io.EOF)

// laneSet is a link's lane and the announcements waiting for its bytes.
type laneSet struct {
	state laneState // guarded by link.wq.mu
	cur   *lane     // guarded by link.wq.mu; set while laneUp
	// dial opens a socket to the link's peer (the client pool's dialer);
	// nil on the accepting side, which never opens lanes.
	dial func(ctx context.Context) (net.Conn, error)
	in   laneInbox
}

// lane is one lane socket: its reader (laneReadLoop) and its writer, which
// writes the messages queued on it round robin.
type lane struct {
	conn net.Conn
	tcp  *net.TCPConn // writev when the lane is plain TCP
	br   *frameReader

	mu     sync.Mutex  // below writeQueue.mu
	queue  []*writeReq // messages being written, taking turns
	next   int         // whose turn it is
	busy   bool        // a write loop runs
	err    error       // the lane failed
	ending bool        // no new messages: half-close once the queue is written
	wrote  bool        // this side half-closed it
	read   bool        // the peer half-closed it (EOF between frames)
	hdrs   []byte      // PART headers of the write in progress
	segs   [][]byte
	wv     net.Buffers

	used atomic.Bool // bytes moved since the last idle check
	idle *time.Timer // the dialling side's idle check
}

func newLane(conn net.Conn, br *frameReader, cfg *Config) *lane {
	ln := &lane{conn: conn, br: br}
	ln.tcp, _ = conn.(*net.TCPConn)
	raw := conn
	if tc, ok := conn.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	if tc, ok := raw.(*net.TCPConn); ok {
		tuneLane(tc, cfg)
	}
	return ln
}

// laneUpLocked returns the lane if messages may go on it.
func (l *link) laneUpLocked() *lane {
	if l.lanes.state == laneUp {
		return l.lanes.cur
	}
	return nil
}

// startIdleCheck arms the dialling side's idle check of ln.
func (l *link) startIdleCheck(ln *lane) {
	if l.client {
		ln.idle = time.AfterFunc(l.laneIdleAfter(), func() { l.laneIdleCheck(ln) })
	}
}

func (l *link) laneIdleAfter() time.Duration {
	if l.cfg.laneIdle != 0 {
		return l.cfg.laneIdle // tests
	}
	return laneIdle
}

// laneIdleCheck ends a lane that carried nothing since the last check:
// no new messages go on it, and this side half-closes it once its queue is
// written; the peer does the same when it reads that (endLane).
func (l *link) laneIdleCheck(ln *lane) {
	if ln.used.Swap(false) || !l.lanes.in.empty() {
		ln.idle.Reset(l.laneIdleAfter())
		return
	}
	if !canHalfClose(ln.conn) {
		return // it stays until its link ends
	}
	l.wq.mu.Lock()
	if l.lanes.cur != ln || l.lanes.state != laneUp {
		l.wq.mu.Unlock()
		return
	}
	l.lanes.state = laneEnding
	ln.mu.Lock()
	ln.ending = true
	done := !ln.busy
	ln.mu.Unlock()
	l.wq.mu.Unlock()
	if done {
		l.laneWriteEnded(ln)
	}
}

// halfCloser is a socket that can end its write side alone (TCP, TLS).
type halfCloser interface{ CloseWrite() error }

func canHalfClose(conn net.Conn) bool {
	_, ok := conn.(halfCloser)
	return ok
}

// endLane handles the peer's half-close of the lane, between frames with
// nothing announced pending: the peer puts nothing more on it, so neither
// does this side; it half-closes once its queue is written. false: the
// lane is not the link's any more.
func (l *link) endLane(ln *lane) bool {
	l.wq.mu.Lock()
	defer l.wq.mu.Unlock()
	if l.lanes.cur != ln {
		return false
	}
	if l.lanes.state == laneUp {
		l.lanes.state = laneEnding
	}
	ln.mu.Lock()
	ln.read = true
	ln.ending = true
	done := !ln.busy && !ln.wrote
	ln.mu.Unlock()
	if done {
		go l.laneWriteEnded(ln) // a socket call: not under wq.mu
	} else {
		go l.retireLane(ln)
	}
	return true
}

// laneWriteEnded half-closes the lane once this side has written all it
// had for it, and retires it if the peer did already.
func (l *link) laneWriteEnded(ln *lane) {
	ln.mu.Lock()
	if ln.wrote || ln.err != nil {
		ln.mu.Unlock()
		return
	}
	ln.wrote = true
	ln.mu.Unlock()
	if err := ln.conn.(halfCloser).CloseWrite(); err != nil {
		l.fail(fmt.Errorf("%w: bulk lane: half-close: %w", ErrLinkLost, err))
		return
	}
	l.retireLane(ln)
}

// retireLane closes a lane both sides have ended; the link may open or
// take a new one.
func (l *link) retireLane(ln *lane) {
	ln.mu.Lock()
	both := ln.wrote && ln.read
	ln.mu.Unlock()
	if !both {
		return
	}
	l.wq.mu.Lock()
	if l.lanes.cur == ln {
		l.lanes.cur, l.lanes.state = nil, laneNone
	}
	l.wq.mu.Unlock()
	if ln.idle != nil {
		ln.idle.Stop()
	}
	ln.conn.Close()
}

// hasLane reports whether the link has a lane up.
func (l *link) hasLane() bool {
	l.wq.mu.Lock()
	defer l.wq.mu.Unlock()
	return l.lanes.state == laneUp
}

// wantLaneLocked starts opening a lane if this side may and none is
// there; the caller's message goes on the link's socket meanwhile.
func (l *link) wantLaneLocked() {
	if l.lanes.state != laneNone || l.lanes.dial == nil || l.cfg.DisableLanes || l.wq.err != nil || l.wq.closing {
		return
	}
	l.lanes.state = laneOpening
	go l.openLane()
}

// wantLane is wantLaneLocked for the reader, which learns of a large
// message from its first PART.
func (l *link) wantLane() {
	l.wq.mu.Lock()
	l.wantLaneLocked()
	l.wq.mu.Unlock()
}

// openLane dials a lane and installs it; on any failure the link goes on
// without one.
func (l *link) openLane() {
	conn, br, err := l.dialLane()
	if err == nil && !l.installLane(conn, br) {
		conn.Close()
		err = ErrClosed
	}
	if err != nil {
		l.wq.mu.Lock()
		if l.lanes.state == laneOpening {
			l.lanes.state = laneOff
		}
		l.wq.mu.Unlock()
		if !l.failed() {
			l.logger().Info("tcpconn: no bulk lane; large messages share the link's socket", "err", err)
		}
	}
}

// dialLane dials the peer and runs the lane handshake: LANE out, the
// peer's HELLO and LANE back (frames a wrapped socket's application sent
// first are dropped), within DialTimeout and HandshakeTimeout. The link's
// end interrupts it.
func (l *link) dialLane() (net.Conn, *frameReader, error) {
	ctx, cancel := context.WithTimeout(context.Background(), l.cfg.DialTimeout)
	defer cancel()
	go func() {
		select {
		case <-l.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	conn, err := l.lanes.dial(ctx)
	if err != nil {
		return nil, nil, err
	}
	if d := l.cfg.HandshakeTimeout; d > 0 {
		conn.SetDeadline(time.Now().Add(d))
	}
	interrupt := context.AfterFunc(ctx, func() { conn.SetDeadline(aLongTimeAgo) })
	id := *l.id.Load()
	tcp, _ := conn.(*net.TCPConn)
	br := newFrameReader(conn, tcp)
	_, err = conn.Write(appendLane(nil, id))
	if err == nil {
		err = awaitLaneAccept(br, id)
	}
	if !interrupt() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	conn.SetDeadline(time.Time{})
	return conn, br, nil
}

// peekHeader parses the next frame's header, consuming nothing.
func peekHeader(br *frameReader) (frameHeader, error) {
	b, err := br.Peek(1)
	if err != nil {
		return frameHeader{}, err // EOF here is a clean close between frames
	}
	for {
		h, need, err := parseHeader(b)
		if err != nil || need == 0 {
			return h, err
		}
		if b, err = br.Peek(need); err != nil {
			return h, truncated(err, headerName(b))
		}
	}
}

// awaitLaneAccept reads the accepting side's HELLO and its LANE naming id.
func awaitLaneAccept(br *frameReader, id [sizeOfLinkID]byte) error {
	b, err := br.Peek(2 + sizeOfHelloBody)
	if err != nil {
		return fmt.Errorf("%w: lane: %w", ErrHandshake, truncated(err, "the hello"))
	}
	if b[0] != controlMarker || b[1] != frameHello {
		return fmt.Errorf("%w: lane: first frame is not a hello", ErrHandshake)
	}
	if _, err := parseHelloBody(b[2:]); err != nil {
		return err
	}
	br.Discard(len(b))
	for skipped := 0; ; {
		h, err := peekHeader(br)
		if err != nil {
			return fmt.Errorf("%w: lane refused: %w", ErrHandshake, err)
		}
		switch {
		case h.kind == kindControl && h.typ == frameLane:
			got, err := parseLaneBody(h.body)
			if err != nil {
				return err
			}
			if got != id {
				return fmt.Errorf("%w: lane accepted for link %s, not %s", ErrHandshake, uuid.UUID(got), uuid.UUID(id))
			}
			br.Discard(h.size)
			return nil
		case h.kind == kindControl && h.typ == frameGoAway:
			return fmt.Errorf("%w: lane refused: %q", ErrHandshake, h.body[sizeOfLength+sizeOfIDLen:])
		}
		// What a wrapped socket's application sent before it knew it was
		// a lane: dropped, within a bound.
		payload := 0
		if h.kind != kindControl {
			payload = int(h.length)
		}
		if skipped += h.size + payload; skipped > laneHandshakeSkip {
			return fmt.Errorf("%w: lane: more than %d bytes before the peer's LANE", ErrHandshake, laneHandshakeSkip)
		}
		br.Discard(h.size)
		if err := discardPayload(br, payload); err != nil {
			return fmt.Errorf("%w: lane: %w", ErrHandshake, truncated(err, "a frame"))
		}
	}
}

// discardPayload reads and drops n bytes.
func discardPayload(br *frameReader, n int) error {
	var scratch [4 << 10]byte
	for n > 0 {
		k, err := br.ReadFull(scratch[:min(n, len(scratch))])
		n -= k
		if err != nil {
			return err
		}
	}
	return nil
}

// installLane makes a dialled lane the link's; false if the link ended.
func (l *link) installLane(conn net.Conn, br *frameReader) bool {
	ln := newLane(conn, br, l.cfg)
	l.wq.mu.Lock()
	if l.wq.err != nil || l.wq.closing || l.lanes.state != laneOpening {
		l.wq.mu.Unlock()
		return false
	}
	l.lanes.cur, l.lanes.state = ln, laneUp
	l.wq.mu.Unlock()
	l.startIdleCheck(ln)
	go l.laneReadLoop(ln)
	return true
}

// laneTargets are the accepting side's links that take lanes, by ID.
// Link IDs are random UUIDs that only the two ends know (inside TLS when
// the link is), and a lane must also come from the link's TLS peer.
var laneTargets = laneRegistry{links: make(map[uuid.UUID]*link)}

type laneRegistry struct {
	mu    sync.Mutex
	links map[uuid.UUID]*link
	wake  chan struct{} // closed when a link is added; nil if nobody waits
}

func (r *laneRegistry) add(id uuid.UUID, l *link) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.links[id] = l
	if r.wake != nil {
		close(r.wake)
		r.wake = nil
	}
}

func (r *laneRegistry) remove(id uuid.UUID, l *link) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.links[id] == l {
		delete(r.links, id)
	}
}

// await returns the link named id, waiting until deadline for it: a lane
// can arrive before its link's HELLO has been read (the dialling side
// opens it once it has the accepting side's HELLO, which does not wait).
func (r *laneRegistry) await(id uuid.UUID, deadline <-chan time.Time) *link {
	for {
		r.mu.Lock()
		l := r.links[id]
		if l != nil {
			r.mu.Unlock()
			return l
		}
		if r.wake == nil {
			r.wake = make(chan struct{})
		}
		wake := r.wake
		r.mu.Unlock()
		select {
		case <-wake:
		case <-deadline:
			return nil
		}
	}
}

// acceptLane runs on an accepted socket whose first frame is LANE: it
// answers and hands the socket to the link named, or refuses it (a
// handshake error, which closes the socket). On success it returns
// ErrBulkLane, which ends this socket's own link without closing the
// socket.
func (l *link) acceptLane() error {
	b, err := l.reading.br.Peek(2 + sizeOfLaneBody)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrHandshake, truncated(err, "the lane handshake"))
	}
	id, err := parseLaneBody(b[2:])
	if err != nil {
		return err
	}
	l.reading.br.Discard(len(b))
	target, why := l.laneTarget(id)
	if why != "" {
		l.writeLast(appendGoAway(nil, 0, "lane refused: "+why))
		return fmt.Errorf("%w: bulk lane for link %s refused: %s", ErrHandshake, uuid.UUID(id), why)
	}
	// Our HELLO went first; LANE follows it, and the socket changes hands
	// once both are written.
	if err := l.writeLast(appendLane(nil, id)); err != nil {
		return err
	}
	l.conn.SetReadDeadline(time.Time{})
	l.handedOff.Store(true)
	if !target.attachLane(l.conn, l.reading.br) {
		l.handedOff.Store(false) // ours to close after all
		return fmt.Errorf("%w: bulk lane: link %s ended", ErrHandshake, uuid.UUID(id))
	}
	l.reading.br = nil
	return ErrBulkLane
}

// writeLast queues frame as the last thing this socket's link writes and
// waits until it is written (closeWriteTimeout at most).
func (l *link) writeLast(frame []byte) error {
	r := getWriteReq()
	defer putWriteReq(r)
	l.wq.mu.Lock()
	if l.wq.err != nil || l.wq.closing {
		l.wq.mu.Unlock()
		return fmt.Errorf("%w: bulk lane: socket closed", ErrHandshake)
	}
	l.wq.wb.appendRef(frame, nil, r)
	l.wq.handedOff = true
	l.kickWriterLocked()
	l.wq.mu.Unlock()
	l.conn.SetWriteDeadline(time.Now().Add(closeWriteTimeout))
	<-r.done
	l.conn.SetWriteDeadline(time.Time{})
	return r.err
}

// laneTarget finds the link a lane names; why says why it may not have it.
func (l *link) laneTarget(id [sizeOfLinkID]byte) (target *link, why string) {
	if l.cfg.DisableLanes {
		return nil, "lanes are off"
	}
	wait := time.NewTimer(l.cfg.HandshakeTimeout)
	defer wait.Stop()
	if target = laneTargets.await(uuid.UUID(id), wait.C); target == nil {
		return nil, "unknown link"
	}
	if !samePeer(target.conn, l.conn) {
		return nil, "not the link's TLS peer"
	}
	target.wq.mu.Lock()
	defer target.wq.mu.Unlock()
	if target.lanes.cur != nil {
		return nil, "the link has a lane"
	}
	return target, ""
}

// samePeer reports whether two sockets come from the same TLS identity
// (both plain, or both TLS with the same leaf certificate or none).
func samePeer(a, b net.Conn) bool {
	ta, aTLS := a.(*tls.Conn)
	tb, bTLS := b.(*tls.Conn)
	if aTLS != bTLS {
		return false
	}
	if !aTLS {
		return true
	}
	ca, cb := ta.ConnectionState().PeerCertificates, tb.ConnectionState().PeerCertificates
	if len(ca) == 0 || len(cb) == 0 {
		return len(ca) == len(cb)
	}
	return bytes.Equal(ca[0].Raw, cb[0].Raw)
}

// attachLane makes an accepted lane the link's; false if the link ended
// or has a lane.
func (l *link) attachLane(conn net.Conn, br *frameReader) bool {
	ln := newLane(conn, br, l.cfg)
	l.wq.mu.Lock()
	if l.wq.err != nil || l.wq.closing || l.lanes.cur != nil {
		l.wq.mu.Unlock()
		return false
	}
	l.lanes.cur, l.lanes.state = ln, laneUp
	l.wq.mu.Unlock()
	go l.laneReadLoop(ln)
	return true
}

// onStrayLane: LANE is only ever a socket's first frame.
func (l *link) onStrayLane([]byte) error {
	return protocolErrorf("LANE", "", "LANE on an established link")
}

// sendOnLane announces a message with BULK on the link's socket and
// queues its bytes on the lane, then waits until they are written. The
// caller holds wq.mu, which it releases, and took the link's credit; the
// ID's is taken here, whole, as for a data frame.
func (l *link) sendOnLane(ln *lane, s *stream, data []byte, cost int64) error {
	s.outflow.take(cost)
	var fb [maxControlFrame]byte
	l.wq.wb.appendCopy(appendIDControl(fb[:0], frameBulk, s.id, uint32(len(data))), nil)
	s.inParts = true // the ID's next message waits until this one is written
	l.kickWriterLocked()
	r := getWriteReq()
	r.s, r.data = s, data
	// Queued under wq.mu, so an idle check that ends the lane either
	// comes first (and this message went elsewhere) or sees it queued.
	err := ln.enqueue(l, r)
	l.wq.mu.Unlock()
	if err != nil {
		l.laneWritten(r, err)
	}
	<-r.done
	err = r.err
	putWriteReq(r)
	return err
}

// enqueue adds r to the messages the lane writes, starting its writer.
func (ln *lane) enqueue(l *link, r *writeReq) error {
	ln.mu.Lock()
	defer ln.mu.Unlock()
	if ln.err != nil {
		return ln.err
	}
	ln.queue = append(ln.queue, r)
	ln.used.Store(true)
	if !ln.busy {
		ln.busy = true
		go l.laneWriteLoop(ln)
	}
	return nil
}

// laneWriteLoop writes the lane's queue until it is empty: each write
// carries a part of every queued message, in turn, up to laneBatch bytes.
func (l *link) laneWriteLoop(ln *lane) {
	var written []*writeReq
	for {
		ln.mu.Lock()
		if len(ln.queue) == 0 || ln.err != nil {
			ln.busy = false
			ending := ln.ending && ln.err == nil
			ln.mu.Unlock()
			if ending {
				l.laneWriteEnded(ln)
			}
			return
		}
		var n int
		written, n = ln.takeLocked(written[:0])
		ln.mu.Unlock()
		ln.wv = ln.segs
		err := writeSegments(ln.conn, ln.tcp, &ln.wv)
		clear(ln.segs)
		if err != nil {
			l.fail(fmt.Errorf("%w: bulk lane: write: %w", ErrLinkLost, err))
			err = l.linkError()
		}
		l.counters.bytesOut.Add(uint64(n))
		for _, r := range written {
			l.laneWritten(r, err)
		}
		clear(written)
		if err != nil {
			return
		}
	}
}

// takeLocked fills segs with the next write: parts of the queued messages
// in turn. It returns the messages this write completes and the payload
// bytes it carries.
func (ln *lane) takeLocked(done []*writeReq) ([]*writeReq, int) {
	ln.hdrs, ln.segs = ln.hdrs[:0], ln.segs[:0]
	share := max(lanePart, laneBatch/len(ln.queue))
	taken := 0
	for taken < laneBatch && len(ln.queue) > 0 {
		if ln.next >= len(ln.queue) {
			ln.next = 0
		}
		r := ln.queue[ln.next]
		n := min(len(r.data)-r.off, share, laneBatch-taken)
		rest := len(r.data) - r.off - n
		start := len(ln.hdrs)
		ln.hdrs = appendPartHeader(ln.hdrs, r.s.id, rest, n)
		ln.segs = append(ln.segs, ln.hdrs[start:len(ln.hdrs):len(ln.hdrs)])
		if n > 0 {
			ln.segs = append(ln.segs, r.data[r.off:r.off+n])
		}
		r.off += n
		taken += n
		if rest == 0 {
			ln.queue = append(ln.queue[:ln.next], ln.queue[ln.next+1:]...)
			done = append(done, r)
			continue
		}
		ln.next++
	}
	return done, taken
}

// laneWritten ends r's wait: the ID's next message may go.
func (l *link) laneWritten(r *writeReq, err error) {
	l.wq.mu.Lock()
	r.s.inParts = false
	l.wq.wakeCreditLocked()
	l.wq.mu.Unlock()
	if err == nil {
		l.counters.messagesOut.Add(1)
	}
	r.err = err
	r.done <- struct{}{}
}

// failLane is fail's part for the lane: queued messages get err and the
// socket closes; announcements still waiting for bytes are given up.
func (l *link) failLane(err error) {
	l.wq.mu.Lock()
	ln := l.lanes.cur
	l.lanes.cur, l.lanes.state = nil, laneOff
	l.wq.mu.Unlock()
	if ln != nil {
		ln.mu.Lock()
		ln.err = err
		queue := ln.queue
		ln.queue = nil
		ln.mu.Unlock()
		for _, r := range queue {
			l.laneWritten(r, err)
		}
		if ln.idle != nil {
			ln.idle.Stop()
		}
		ln.conn.Close()
	}
	for _, lm := range l.lanes.in.abandon() {
		if lm.s != nil {
			lm.s.laneAbandoned()
		}
	}
}

// laneReadLoop reads the lane until it fails, which fails the link.
func (l *link) laneReadLoop(ln *lane) {
	err := l.readLane(ln)
	if errors.Is(err, io.EOF) && canHalfClose(ln.conn) && l.lanes.in.empty() && l.endLane(ln) {
		return // the peer ended the lane, between messages
	}
	if !l.failed() {
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("%w: bulk lane closed by peer (%w)", ErrLinkLost, io.EOF)
		} else if !errors.Is(err, ErrProtocol) {
			err = fmt.Errorf("%w: bulk lane: %w", ErrLinkLost, err)
		}
		l.fail(err)
	}
}

// readLane reads PARTs: each continues the oldest message announced by
// BULK for its ID (waiting for the announcement if the lane was faster).
func (l *link) readLane(ln *lane) error {
	br := ln.br
	for {
		h, err := peekHeader(br)
		if err != nil {
			return err
		}
		if h.kind != kindPart {
			return protocolErrorf(frameName(h.typ), "", "only PART frames travel on a bulk lane")
		}
		ln.used.Store(true)
		lm, err := l.lanes.in.front(bytesToString(h.id), l.done)
		if err != nil {
			return err
		}
		if uint64(h.length)+uint64(h.rest) != uint64(lm.total-lm.got) {
			return protocolErrorf("PART", string(h.id), "bulk lane PART of %d bytes with %d to follow, where %d bytes of the message announced are missing", h.length, h.rest, lm.total-lm.got)
		}
		br.Discard(h.size)
		end := lm.got + int(h.length)
		if lm.got == 0 && lm.m.data == nil {
			lm.m = lanePayload(lm.total)
		}
		for lm.got < end {
			if lm.got == len(lm.m.data) {
				lm.m = grownPayload(lm.m, lm.got, end, lm.total)
			}
			k, err := br.ReadFull(lm.m.data[lm.got:min(len(lm.m.data), lm.got+readProgressChunk, end)])
			lm.got += k
			if k > 0 {
				l.keepAlive.heard.Add(1)
			}
			if err != nil {
				return truncated(err, "a bulk lane PART")
			}
		}
		if h.rest == 0 {
			if !l.lanes.in.finish(lm) {
				lm.m.release() // given up: the link failed meanwhile
				return ErrClosed
			}
			l.laneArrived(lm)
		}
	}
}

// lanePayload returns the buffer a lane message is read into, whole, once
// its first bytes are here: growing it as the bytes come would copy a
// 4 MiB message three times over and feed the garbage collector, whose
// pauses the small messages beside it would feel. Its BULK was charged
// against the link's credit, so the buffers of unfinished lane messages
// are bounded like messages in flight: the link window plus one message.
func lanePayload(total int) message {
	if total <= smallMessageLimit {
		return newPayload(total)
	}
	if c := sizeClass(total); c <= largeClassMax {
		if b, ok := largeFree[c].tryGet(); ok && cap(b) >= total {
			return message{data: b[:total]}
		}
	}
	return message{data: make([]byte, total)}
}

// laneArrived hands a message that came whole on the lane to its record,
// and the messages held behind it.
func (l *link) laneArrived(lm *laneMessage) {
	l.counters.messagesIn.Add(1)
	l.counters.bytesIn.Add(uint64(lm.total))
	if lm.s == nil {
		l.drop(lm.m, lm.cost)
		return
	}
	lm.s.fromLane(lm.m)
	l.interruptDirect() // a receiver reading the link's socket for itself looks again
}

// onBulk is the announcement of a message coming on the lane: admitted
// whole like a data frame, and its place in the ID's order kept.
func (l *link) onBulk(body []byte) error {
	idb, n := splitIDBody(body)
	if !l.lanesAllowed() {
		return protocolErrorf("BULK", string(idb), "BULK without a bulk lane")
	}
	if uint64(n) > uint64(l.cfg.MaxMessageSize) {
		return protocolErrorf("BULK", string(idb), "message of %d bytes exceeds the limit of %d", n, l.cfg.MaxMessageSize)
	}
	if len(l.reading.partials) > 0 && l.reading.partials[bytesToString(idb)] != nil {
		return protocolErrorf("BULK", string(idb), "BULK on %q inside a message in parts", idb)
	}
	s, err := l.route(idb)
	if err != nil {
		return err
	}
	cost := int64(n) + messageOverhead
	if s, err = l.admit("BULK", s, cost); err != nil {
		return err
	}
	if l.inflow.credit.Load() <= 0 {
		// A lane message larger than what was left of the link's credit:
		// the window grows by it, as for a message in parts, so that small
		// messages beside it do not wait until it has arrived.
		l.growForMessage(cost)
	}
	lm := &laneMessage{s: s, total: int(n), cost: cost}
	if s != nil {
		s.expectLane()
		lm.id = s.id
	} else {
		lm.id = string(idb)
	}
	l.lanes.in.announce(lm)
	return nil
}

// lanesAllowed reports whether the peer may announce lane messages: this
// side takes lanes, and (dialling side) has opened one.
func (l *link) lanesAllowed() bool {
	if l.cfg.DisableLanes {
		return false
	}
	if !l.client {
		return true
	}
	l.wq.mu.Lock()
	defer l.wq.mu.Unlock()
	return l.lanes.state == laneOpening || l.lanes.state == laneUp
}

// laneMessage is a message announced by BULK, its bytes arriving on the
// lane; the lane's reader owns it once it is at the front for its ID.
type laneMessage struct {
	id    string
	s     *stream // nil: an incarnation we closed; read and dropped
	m     message
	got   int
	total int
	cost  int64
}

// laneInbox holds the announced messages by ID, in their order, until the
// lane's reader has read them.
type laneInbox struct {
	mu   sync.Mutex
	byID map[string]*fifo[*laneMessage]
	wake chan struct{} // closed when a message is announced; nil if nobody waits
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
// announcement until done closes.
func (in *laneInbox) front(id string, done <-chan struct{}) (*laneMessage, error) {
	for {
		in.mu.Lock()
		if q := in.byID[id]; q != nil && q.len() > 0 {
			lm := q.items[q.head]
			in.mu.Unlock()
			return lm, nil
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
	}
	return true
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
	return all
}
