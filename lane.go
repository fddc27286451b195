// SPDX-License-Identifier: MIT

package tcpconn

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
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
	// laneBatch is the most one write on the lane carries, and so the
	// largest PART on it (a whole message of the default MaxMessageSize);
	// the reader asks each read for the rest of a PART. Writes and reads
	// that ask for more than the kernel holds end in a wait for the peer,
	// where Go's scheduler takes up goroutines the network woke: a
	// probe's answer. With 1 MiB writes and 256 KiB reads neither side
	// ever waited, and the answer waited for their processors; 8 MiB
	// writes still left a probe's p99 beside 16 MiB messages at 1.4x the
	// floor's, 16 MiB at 0.8-0.9x (PERFORMANCE.md, "Small messages beside
	// bulk ones").
	laneBatch = 16 << 20
	// laneLoanWait is the most the lane's reader waits, before a message's
	// first bytes, for its receiver to offer its buffer again, when that
	// receiver lent one before (laneloan.go): one that reuses its buffer
	// comes back once it has dealt with the last message. Reading ahead
	// into a buffer of ours meanwhile cost a copy into the receiver's and
	// a second goroutine busy with bulk bytes on each side; the floor's
	// receiver reads only when it is ready (PERFORMANCE.md). Lane
	// messages behind it wait that much longer at most.
	laneLoanWait = 5 * time.Millisecond
	// laneHandshakeSkip bounds what a wrapped socket may send on a lane
	// before its LANE answer: frames of an application that speaks first
	// (Wrap then Send) on every accepted socket, within the peer's
	// InitialWindow, which the dialling side reads and drops.
	laneHandshakeSkip = 2*InitialWindow + 64<<10
	// laneSmallRecent: large messages take the lane while a small
	// message went either way this recently (smallTrafficLocked).
	laneSmallRecent = 100 * time.Millisecond
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
	// Whether small messages share the link (smallTrafficLocked): the
	// messages that were not large, counted as both ways' messages minus
	// the large ones, as last seen, and when that count last moved.
	bulkIn, bulkOut atomic.Uint64 // counted where messagesIn and messagesOut are
	smallSeen       uint64        // guarded by link.wq.mu
	smallAt         int64         // nanotime; guarded by link.wq.mu
	// Keepalive of the lane (laneSilence): bytes read on it, as last seen
	// by keepalive, and since when they have not moved while announced
	// messages waited. Keepalive's tick alone uses the last two.
	read         atomic.Uint64
	readSeen     uint64
	waitingSince time.Time
	// Receivers' buffers lent to the lane's reader (laneloan.go): offered
	// and not taken yet, and taken but wanted back; and how many lane
	// messages were read into one (tests).
	offers    atomic.Int32
	takeBacks atomic.Int32
	lent      atomic.Uint64
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

	mu      sync.Mutex  // below writeQueue.mu
	queue   []*writeReq // messages being written, taking turns
	next    int         // whose turn it is
	busy    bool        // a write loop runs
	err     error       // the lane failed
	ending  bool        // no new messages: half-close once the queue is written
	wrote   bool        // this side half-closed it
	read    bool        // the peer half-closed it (EOF between frames)
	hdrs    []byte      // PART headers of the write in progress
	segs    [][]byte
	written []*writeReq // messages the write in progress completes
	wv      net.Buffers
	lent    []*laneMessage // being read into receivers' buffers; the reader's

	used atomic.Bool // bytes moved since the last idle check
	idle *time.Timer // the dialling side's idle check; guarded by mu
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

// laneSilence is how long announced messages have waited with no byte
// of them coming on the lane, as keepalive sees it at now: PINGs on the
// link's socket cannot tell that the lane still moves.
func (l *link) laneSilence(now time.Time) time.Duration {
	if l.lanes.in.empty() {
		l.lanes.waitingSince = time.Time{}
		return 0
	}
	if read := l.lanes.read.Load(); read != l.lanes.readSeen || l.lanes.waitingSince.IsZero() {
		l.lanes.readSeen, l.lanes.waitingSince = read, now
		return 0
	}
	return now.Sub(l.lanes.waitingSince)
}

// laneUpLocked returns the lane if messages may go on it.
func (l *link) laneUpLocked() *lane {
	if l.lanes.state == laneUp {
		return l.lanes.cur
	}
	return nil
}

// smallTrafficLocked reports whether a message smaller than LaneThreshold
// went either way within laneSmallRecent: only then does a large message
// need the lane. A link that carries large messages alone (request and
// response, a bulk transfer) keeps them on its socket, where a receiver
// reads them straight into its buffer; a lane would add a copy and a
// hand-off for nothing to protect. It is counted lazily, from the link's
// message counters, so the per-message paths pay nothing for it.
func (l *link) smallTrafficLocked(now int64) bool {
	small := l.counters.messagesIn.Load() + l.counters.messagesOut.Load() - l.lanes.bulkIn.Load() - l.lanes.bulkOut.Load()
	if small != l.lanes.smallSeen {
		l.lanes.smallSeen, l.lanes.smallAt = small, now
	}
	return l.lanes.smallAt != 0 && now-l.lanes.smallAt < int64(laneSmallRecent)
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
// message from its first PART: it opens a lane if small messages share
// the link.
func (l *link) wantLane() {
	l.wq.mu.Lock()
	if l.smallTrafficLocked(nanotime()) {
		l.wantLaneLocked()
	}
	l.wq.mu.Unlock()
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
		ln.stopIdleCheck()
		ln.conn.Close()
		forgetLaneSocket(ln.conn)
	}
	for _, lm := range l.lanes.in.abandon() {
		if lm.s != nil {
			lm.s.laneAbandoned()
		}
	}
}
