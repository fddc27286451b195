// SPDX-License-Identifier: MIT

package tcpconn

import (
	"errors"
	"fmt"
	"io"
	"time"
)

// readFailure classifies why reading stopped.
func readFailure(err error) error {
	if errors.Is(err, ErrProtocol) || errors.Is(err, ErrHandshake) || errors.Is(err, ErrKeepAliveTimeout) || errors.Is(err, ErrClosed) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrLinkLost, err)
}

func protocolErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrProtocol}, args...)...)
}

// truncated turns a mid-frame EOF into a clear error: a peer that closes
// inside a frame broke the framing, so it is a protocol violation.
func truncated(err error, what string) error {
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: connection ended inside %s: %w", ErrProtocol, what, io.ErrUnexpectedEOF)
	}
	return err
}

// readFrame reads one frame (or resumes one) and reports whether it woke a
// waiting receiver. Headers are parsed with Peek and consumed only when
// complete, so a read interrupted by a deadline loses nothing.
func (l *link) readFrame() (bool, error) {
	if l.pend.active {
		return l.readPending()
	}
	b, err := l.br.Peek(1)
	if err != nil {
		return false, err // EOF here is a clean close between frames
	}
	l.framesIn.Add(1)
	if b[0] == controlMarker {
		return false, l.readControl()
	}
	return l.readData(int(b[0]))
}

func (l *link) readHello() error {
	if d := l.cfg.HandshakeTimeout; d > 0 {
		l.conn.SetReadDeadline(time.Now().Add(d))
	}
	b, err := l.br.Peek(2)
	if err == nil && (b[0] != controlMarker || b[1] != frameHello) {
		return fmt.Errorf("%w: first frame is not a tcpconn hello (first bytes % x): peer is not a tcpconn v%d endpoint", ErrHandshake, b, protocolVersion)
	}
	if err == nil {
		b, err = l.br.Peek(2 + sizeOfHelloBody)
	}
	if err != nil {
		if isTimeout(err) {
			return fmt.Errorf("%w: no hello from peer within %v", ErrHandshake, l.cfg.HandshakeTimeout)
		}
		return fmt.Errorf("%w: %w", ErrHandshake, truncated(err, "the hello"))
	}
	h, err := parseHelloBody(b[2:])
	if err != nil {
		return err
	}
	l.br.Discard(len(b))
	l.framesIn.Add(1)
	l.conn.SetReadDeadline(time.Time{})
	l.wmu.Lock()
	l.peer = h
	l.linkSendCredit = int64(h.linkWindow)
	if l.creditWake != nil {
		close(l.creditWake)
		l.creditWake = nil
	}
	l.wmu.Unlock()
	close(l.helloDone)
	return nil
}

func (l *link) readData(idLen int) (bool, error) {
	hdr, err := l.br.Peek(sizeOfIDLen + idLen + sizeOfLength)
	if err != nil {
		return false, truncated(err, "a data frame header")
	}
	n := loadU32(hdr[sizeOfIDLen+idLen:])
	if uint64(n) > uint64(l.cfg.MaxMessageSize) {
		return false, protocolErrorf("message of %d bytes exceeds the limit of %d", n, l.cfg.MaxMessageSize)
	}
	s, err := l.route(hdr[sizeOfIDLen : sizeOfIDLen+idLen])
	if err != nil {
		return false, err
	}
	cost := int64(n) + messageOverhead
	if l.recvLinkCredit.Add(-cost)+cost <= 0 {
		return false, protocolErrorf("peer exceeded the link window of %d bytes", l.cfg.LinkWindow)
	}
	if s.closeAcks.Load() > 0 {
		s = nil // a frame of an incarnation we already closed: read and drop it
	} else if s.recvCredit.Add(-cost)+cost <= 0 {
		return false, protocolErrorf("peer exceeded the window of %d bytes on %q", l.cfg.StreamWindow, s.id)
	}
	l.br.Discard(len(hdr))
	// Payloads go to a pooled buffer; when none is large enough, a large
	// one gets a slice that grows with the bytes that actually arrive, so a
	// header claiming a huge message cannot make us allocate it up front.
	var m message
	m.data, m.pooled = getPayload(int(n))
	l.pend = pendingData{active: true, s: s, n: int(n), cost: cost, m: m}
	return l.readPending()
}

func (l *link) readPending() (bool, error) {
	p := &l.pend
	for {
		// Read in chunks so that a long payload counts as the peer being
		// heard (keepalive) while it arrives.
		k, err := io.ReadFull(l.br, p.m.data[p.got:min(len(p.m.data), p.got+readProgressChunk)])
		p.got += k
		l.framesIn.Add(1)
		if err != nil {
			if isTimeout(err) {
				return false, err // resumable
			}
			p.m.release()
			p.active = false
			return false, truncated(err, "a message payload")
		}
		if p.got == p.n {
			break
		}
		if p.got == len(p.m.data) {
			grown := make([]byte, min(p.n, 2*p.got))
			copy(grown, p.m.data[:p.got])
			p.m.data = grown
		}
	}
	s, m, cost := p.s, p.m, p.cost
	*p = pendingData{}
	l.counters.messagesIn.Add(1)
	l.counters.bytesIn.Add(uint64(len(m.data)))
	if s == nil {
		m.release()
		l.consumedLink(cost, controlAsync)
		return false, nil
	}
	return s.deliver(m), nil
}

// allowControl charges one frame against the control-frame rate limit.
func (l *link) allowControl() error {
	limit := float64(l.cfg.MaxControlFramesPerSecond)
	now := time.Now()
	l.ctrlTokens = min(limit, l.ctrlTokens+now.Sub(l.ctrlLast).Seconds()*limit)
	l.ctrlLast = now
	if l.ctrlTokens < 1 {
		return protocolErrorf("control frame flood (more than %d per second)", l.cfg.MaxControlFramesPerSecond)
	}
	l.ctrlTokens--
	return nil
}

// controlBodySize is the fixed part of each control frame after its type.
var controlBodySize = [frameTypeLimit]int{
	frameHello:      sizeOfHelloBody,
	frameWindow:     sizeOfIDLen, // then id and u32
	frameLinkWindow: sizeOfLength,
	frameClose:      sizeOfIDLen, // then id and u32
	framePing:       sizeOfLength,
	framePong:       sizeOfLength,
	frameGoAway:     sizeOfLength + sizeOfIDLen, // then reason
}

func (l *link) readControl() error {
	b, err := l.br.Peek(sizeOfIDLen + sizeOfType)
	if err != nil {
		return truncated(err, "a control frame")
	}
	typ := b[1]
	if int(typ) >= len(controlBodySize) || controlBodySize[typ] == 0 {
		return protocolErrorf("unknown control frame type 0x%02x", typ)
	}
	const head = sizeOfIDLen + sizeOfType
	size := head + controlBodySize[typ]
	if b, err = l.br.Peek(size); err != nil {
		return truncated(err, frameName(typ))
	}
	switch typ {
	case frameWindow, frameClose, frameGoAway:
		// Variable part: an ID (WINDOW, CLOSE) or a reason (GOAWAY), whose
		// length byte is the last byte of the fixed body.
		n := int(b[size-1])
		if typ != frameGoAway {
			if n > maxIDLen {
				return protocolErrorf("%s with ID length %d", frameName(typ), n)
			}
			n += sizeOfLength
		}
		size += n
		if b, err = l.br.Peek(size); err != nil {
			return truncated(err, frameName(typ))
		}
	}
	body := b[head:]
	switch typ {
	case frameHello:
		err = protocolErrorf("second HELLO")
	case frameWindow:
		err = l.onWindow(body[1:len(body)-sizeOfLength], loadU32(body[len(body)-sizeOfLength:]))
	case frameClose:
		err = l.onCloseFrame(body[1:len(body)-sizeOfLength], loadU32(body[len(body)-sizeOfLength:]))
	case frameLinkWindow:
		err = l.addSendCredit(nil, loadU32(body))
	case framePing:
		if err = l.allowControl(); err == nil {
			var fb [sizeOfIDLen + sizeOfType + sizeOfLength]byte
			l.enqueueControl(appendValueControl(fb[:0], framePong, loadU32(body)))
		}
	case framePong:
		err = l.allowControl()
	case frameGoAway:
		err = l.onGoAway(loadU32(body), string(body[sizeOfLength+sizeOfIDLen:]))
	}
	l.br.Discard(size)
	return err
}

func (l *link) onGoAway(code uint32, reason string) error {
	if l.goingAway.Swap(true) {
		return l.allowControl()
	}
	l.log.Debug("tcpconn: peer is going away", "code", code, "reason", reason)
	return nil
}

func (l *link) onWindow(idb []byte, inc uint32) error {
	v, ok := l.routes.Load(bytesToString(idb))
	if !ok {
		// Credit for a record we already retired; harmless but charged so a
		// peer cannot make us spin on it.
		return l.allowControl()
	}
	return l.addSendCredit(v.(*stream), inc)
}

// addSendCredit applies a WINDOW (s != nil) or LINK_WINDOW. Credit beyond the
// announced window can only come from a broken or hostile peer.
func (l *link) addSendCredit(s *stream, inc uint32) error {
	if inc == 0 {
		return l.allowControl()
	}
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if s == nil {
		l.linkSendCredit += int64(inc)
		if l.linkSendCredit > int64(l.peer.linkWindow) {
			return protocolErrorf("LINK_WINDOW overflows the announced %d bytes", l.peer.linkWindow)
		}
	} else {
		if !s.sendCreditOK {
			s.sendCredit, s.sendCreditOK = int64(l.peer.streamWindow), true
		}
		s.sendCredit += int64(inc)
		if s.sendCredit > int64(l.peer.streamWindow) {
			return protocolErrorf("WINDOW on %q overflows the announced %d bytes", s.id, l.peer.streamWindow)
		}
	}
	if l.creditWake != nil {
		close(l.creditWake)
		l.creditWake = nil
	}
	return nil
}

func (l *link) onCloseFrame(idb []byte, code uint32) error {
	v, ok := l.routes.Load(bytesToString(idb))
	if !ok {
		return l.allowControl() // nothing to close: charged like a ping
	}
	s := v.(*stream)
	if s.closeAcks.Load() > 0 {
		// The reply to a CLOSE of ours (or a crossing CLOSE).
		if s.closeAcks.Add(-1) == 0 && s.state.Load()&streamLocalClosed != 0 {
			l.remove(s)
		}
		return nil
	}
	// The peer ends the current incarnation: acknowledge, retire the
	// record, and let the owner drain what already arrived.
	s.state.Or(streamPeerClosed)
	l.enqueueControl(appendIDControl(nil, frameClose, s.id, closeNormal))
	l.remove(s)
	s.mu.Lock()
	unclaimed := s.owner == nil
	s.mu.Unlock()
	if unclaimed {
		if err := l.allowControl(); err != nil { // open-then-reset churn
			return err
		}
	}
	err := ErrPeerClosed
	if code == closeRefused {
		err = ErrRefused
	}
	s.fail(err)
	return nil
}

// consumedLink returns link credit as messages leave the link.
// how is a control* constant: user goroutines may write inline or lazily.
func (l *link) consumedLink(cost int64, how int) {
	if l.linkConsumed.Add(cost) >= int64(l.cfg.LinkWindow)/2 {
		if v := l.linkConsumed.Swap(0); v > 0 {
			l.recvLinkCredit.Add(v)
			var fb [sizeOfIDLen + sizeOfType + sizeOfLength]byte
			l.queueControl(appendValueControl(fb[:0], frameLinkWindow, uint32(v)), how)
		}
	}
}
