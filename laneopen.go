// SPDX-License-Identifier: MIT

package tcpconn

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Opening a lane: the dialling side's dial and handshake (openLane), the
// accepting side's registry of links that take lanes and its answer
// (acceptLane), and the checks that refuse a lane.

// openLane dials a lane and installs it; on any failure the link goes on
// without one.
func (l *link) openLane() {
	conn, br, err := l.dialLane()
	if err == nil && !l.adoptLane(conn, br) {
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
		h, err := peekHeader(br, nil)
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

// adoptLane makes a lane the link's: one this side dialled (it is still
// opening one) or one the peer dialled (the link has none). false if the
// link ended meanwhile.
func (l *link) adoptLane(conn net.Conn, br *frameReader) bool {
	ln := newLane(conn, br, l.cfg)
	br.progress = &l.lanes.read // keepalive of the lane (laneSilence)
	l.wq.mu.Lock()
	if l.wq.err != nil || l.wq.closing || l.client && l.lanes.state != laneOpening || !l.client && l.lanes.cur != nil {
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

// await returns the link named id, waiting until deadline or done for
// it: a lane can arrive before its link's HELLO has been read (the
// dialling side opens it once it has the accepting side's HELLO, which
// does not wait).
func (r *laneRegistry) await(id uuid.UUID, deadline <-chan time.Time, done <-chan struct{}) *link {
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
		case <-done:
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
	if !target.adoptLane(l.conn, l.reading.br) {
		l.handedOff.Store(false) // ours to close after all
		return fmt.Errorf("%w: bulk lane: link %s ended", ErrHandshake, uuid.UUID(id))
	}
	return ErrBulkLane // and readLoop sets reading.ended: br is the lane's now
}

// writeLast queues frame as the last thing this socket's link writes and
// waits until it is written (closeWriteTimeout at most).
func (l *link) writeLast(frame []byte) error {
	r := getWriteReq()
	defer putWriteReq(r)
	l.wq.mu.Lock()
	if l.wq.sealedLocked() {
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
	if target = laneTargets.await(uuid.UUID(id), wait.C, l.done); target == nil {
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

// onStrayLane: LANE is only ever a socket's first frame.
func (l *link) onStrayLane([]byte) error {
	return protocolErrorf("LANE", "", "LANE on an established link")
}
