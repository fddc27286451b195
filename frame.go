// SPDX-License-Identifier: MIT

package tcpconn

import (
	"fmt"
)

// The wire format. Every frame starts with one byte. A value below
// controlMarker is the ID length of a data frame, exactly the original
// TCP-Conn layout:
//
//	data:    [idLen u8 <= 254][id][payload length u32 BE][payload]
//	control: [0xFF][type u8][type-specific fixed body]
//
// PROTOCOL.md is the specification; frame_test.go pins it with golden
// bytes.
const (
	controlMarker = 0xFF
	maxIDLen      = controlMarker - 1

	sizeOfIDLen   = 1
	sizeOfLength  = 4
	sizeOfType    = 1
	maxDataHeader = sizeOfIDLen + maxIDLen + sizeOfLength
	maxPartHeader = sizeOfIDLen + sizeOfType + sizeOfIDLen + maxIDLen + 2*sizeOfLength

	protocolVersion = 2

	// messageOverhead is charged against flow-control credit on top of the
	// payload length, so that a flood of empty messages is bounded too.
	messageOverhead = 32
)

// helloMagic opens every link in both directions; a peer that does not send
// it (for example the original TCP-Conn implementation) is refused clearly.
var helloMagic = [4]byte{'T', 'C', 'P', 'C'}

// Control frame types.
const (
	frameHello      = 0x01 // magic[4] version u8 streamWindow u32 linkWindow u32 maxMessage u32 maxStreams u32 linkID[16]
	frameWindow     = 0x02 // idLen u8 id increment u32
	frameLinkWindow = 0x03 // increment u32
	frameClose      = 0x04 // idLen u8 id code u32
	framePing       = 0x05 // opaque u32
	framePong       = 0x06 // opaque u32
	frameGoAway     = 0x07 // code u32 reasonLen u8 reason
	frameOpen       = 0x08 // idLen u8 id reserved u32 (0)
	framePart       = 0x09 // idLen u8 id rest u32 length u32 payload: a piece of a message in parts
	frameLane       = 0x0a // magic[4] version u8 linkID[16]: opens a bulk lane (lane.go), and accepts it
	frameBulk       = 0x0b // idLen u8 id length u32: that message's bytes come on the bulk lane
	frameTypeLimit  = 0x0c // first unassigned type
)

const (
	sizeOfLinkID    = 16 // a UUID
	sizeOfHelloBody = len(helloMagic) + 1 + 4*sizeOfLength + sizeOfLinkID
	sizeOfLaneBody  = len(helloMagic) + 1 + sizeOfLinkID
)

// closeCode is carried by frameClose.
type closeCode uint32

const (
	closeNormal  closeCode = 0
	closeRefused closeCode = 1 // the receiver would not take the logical connection (backlog or limit)
	// closeFinished: the sender sends nothing more for this ID on this
	// link, and keeps reading it until the receiver closes it (a drain
	// moving the ID to another link at a quiet point). It is sent only to
	// a peer whose GOAWAY asked for the move.
	closeFinished closeCode = 2
)

// goAwayCode is carried by frameGoAway.
type goAwayCode uint32

const (
	goAwayClosing goAwayCode = 0 // open nothing new here; the link closes when its IDs have
	// goAwayShutdown: the server is going down; move each ID elsewhere at
	// a quiet point (CLOSE code 2) and do not come back.
	goAwayShutdown goAwayCode = 1
	// goAwayLinkAge: the link reached its age; move each ID to a new link
	// at a quiet point, this server included.
	goAwayLinkAge goAwayCode = 2
)

// draining reports whether the peer asked for its IDs to move.
func (c goAwayCode) draining() bool { return c == goAwayShutdown || c == goAwayLinkAge }

// InitialWindow is the credit every peer grants, per logical connection and
// per link, before its HELLO arrives (HTTP/2's initial window plays the same
// part): a sender may send that much at once, without waiting a round trip
// for the peer's HELLO, and a message up to that size is never refused for
// its size before the HELLO. Config windows and MaxMessageSize may not be
// set below it.
const InitialWindow = 64 << 10

// hello is what each side announces about what it will accept.
type hello struct {
	version      uint8
	streamWindow uint32
	linkWindow   uint32
	maxMessage   uint32
	maxStreams   uint32
	// linkID is the sender's identity for the link: the dialling side's
	// is the link's, which the accepting side adopts, so that both ends'
	// logs and stats name the socket alike.
	linkID [sizeOfLinkID]byte
}

func (h hello) String() string {
	return fmt.Sprintf("hello{v%d streamWindow=%d linkWindow=%d maxMessage=%d maxStreams=%d link=%x}",
		h.version, h.streamWindow, h.linkWindow, h.maxMessage, h.maxStreams, h.linkID)
}

// appendDataHeader appends a data frame header for id and a payload of n bytes.
func appendDataHeader(dst []byte, id string, n int) []byte {
	dst = append(dst, byte(len(id)))
	dst = append(dst, id...)
	return appendU32(dst, uint32(n))
}

// appendPartHeader appends the header of a PART frame: n payload bytes of
// a message of which rest more bytes follow in later PARTs.
func appendPartHeader(dst []byte, id string, rest, n int) []byte {
	dst = append(dst, controlMarker, framePart, byte(len(id)))
	dst = append(dst, id...)
	dst = appendU32(dst, uint32(rest))
	return appendU32(dst, uint32(n))
}

func appendHello(dst []byte, h hello) []byte {
	dst = append(dst, controlMarker, frameHello)
	dst = append(dst, helloMagic[:]...)
	dst = append(dst, h.version)
	dst = appendU32(dst, h.streamWindow)
	dst = appendU32(dst, h.linkWindow)
	dst = appendU32(dst, h.maxMessage)
	dst = appendU32(dst, h.maxStreams)
	return append(dst, h.linkID[:]...)
}

func parseHelloBody(b []byte) (hello, error) {
	if [4]byte(b[:4]) != helloMagic {
		return hello{}, fmt.Errorf("%w: bad hello magic % x (not a tcpconn v%d peer)", ErrHandshake, b[:4], protocolVersion)
	}
	h := hello{
		version:      b[4],
		streamWindow: loadU32(b[5:]),
		linkWindow:   loadU32(b[9:]),
		maxMessage:   loadU32(b[13:]),
		maxStreams:   loadU32(b[17:]),
		linkID:       [sizeOfLinkID]byte(b[21:]),
	}
	if h.version != protocolVersion {
		return h, fmt.Errorf("%w: peer speaks protocol version %d, this side %d", ErrHandshake, h.version, protocolVersion)
	}
	if h.streamWindow < InitialWindow || h.linkWindow < InitialWindow || h.maxMessage < InitialWindow || h.maxStreams == 0 {
		// Below InitialWindow: we may already have sent more than it grants.
		return h, fmt.Errorf("%w: unusable %v (windows and max message must be at least %d)", ErrHandshake, h, InitialWindow)
	}
	return h, nil
}

// appendLane appends a LANE frame naming the link a bulk lane belongs to.
func appendLane(dst []byte, linkID [sizeOfLinkID]byte) []byte {
	dst = append(dst, controlMarker, frameLane)
	dst = append(dst, helloMagic[:]...)
	dst = append(dst, protocolVersion)
	return append(dst, linkID[:]...)
}

// parseLaneBody returns the link a LANE frame names.
func parseLaneBody(b []byte) ([sizeOfLinkID]byte, error) {
	if [4]byte(b[:4]) != helloMagic {
		return [sizeOfLinkID]byte{}, fmt.Errorf("%w: bad lane magic % x (not a tcpconn v%d peer)", ErrHandshake, b[:4], protocolVersion)
	}
	if b[4] != protocolVersion {
		return [sizeOfLinkID]byte{}, fmt.Errorf("%w: lane of protocol version %d, this side %d", ErrHandshake, b[4], protocolVersion)
	}
	return [sizeOfLinkID]byte(b[5:]), nil
}

// appendIDControl appends a control frame whose body is [idLen][id][value].
func appendIDControl(dst []byte, typ byte, id string, v uint32) []byte {
	dst = append(dst, controlMarker, typ, byte(len(id)))
	dst = append(dst, id...)
	return appendU32(dst, v)
}

// appendValueControl appends a control frame whose body is one u32.
func appendValueControl(dst []byte, typ byte, v uint32) []byte {
	dst = append(dst, controlMarker, typ)
	return appendU32(dst, v)
}

func appendGoAway(dst []byte, code uint32, reason string) []byte {
	if len(reason) > maxIDLen {
		reason = reason[:maxIDLen]
	}
	dst = appendValueControl(dst, frameGoAway, code)
	dst = append(dst, byte(len(reason)))
	return append(dst, reason...)
}

func appendU32(dst []byte, v uint32) []byte {
	dst = append(dst, 0, 0, 0, 0)
	storeU32(dst[len(dst)-4:], v)
	return dst
}
