// SPDX-License-Identifier: MIT

package tcpconn

import "fmt"

// The wire parser: bytes in, a typed frame header out. It does no I/O and
// keeps no state, so the engine peeks exactly as many bytes as it asks for
// and a fuzzer can drive it alone (FuzzParseHeader). What a frame means
// (routing, credit, limits that depend on the Config) is the engine's
// (demux.go).

// frameKind says which of the three frame shapes a header starts.
type frameKind uint8

const (
	kindData    frameKind = iota // [idLen][id][length] then length payload bytes
	kindPart                     // a PART: [0xFF][type][idLen][id][rest][length] then length bytes
	kindControl                  // any other control frame, whole: [0xFF][type][body]
)

// frameHeader is one parsed header; id and body alias the parsed bytes,
// which stay valid until the reader discards them.
type frameHeader struct {
	kind   frameKind
	typ    byte   // the control type (kindPart, kindControl)
	id     []byte // kindData, kindPart
	length uint32 // kindData: payload bytes; kindPart: this part's bytes
	rest   uint32 // kindPart: bytes of the message in later parts
	body   []byte // kindControl: everything after the type byte
	size   int    // bytes of the header (of the whole frame for kindControl)
}

// parseHeader parses the frame that starts b. If b is too short it
// returns need > len(b), the length it must see to go on (call again with
// at least that many bytes); a header that no valid frame starts with is a
// *ProtocolError. Neither reads beyond b[:need].
func parseHeader(b []byte) (h frameHeader, need int, err error) {
	if len(b) < sizeOfIDLen {
		return h, sizeOfIDLen, nil
	}
	if b[0] != controlMarker {
		idLen := int(b[0])
		if need = sizeOfIDLen + idLen + sizeOfLength; len(b) < need {
			return h, need, nil
		}
		return frameHeader{kind: kindData, id: b[sizeOfIDLen : sizeOfIDLen+idLen], length: loadU32(b[sizeOfIDLen+idLen:]), size: need}, 0, nil
	}
	const head = sizeOfIDLen + sizeOfType
	if len(b) < head {
		return h, head, nil
	}
	typ := b[1]
	if typ == framePart {
		if len(b) < head+sizeOfIDLen {
			return h, head + sizeOfIDLen, nil
		}
		idLen := int(b[head])
		if idLen > maxIDLen {
			return h, 0, protocolErrorf("PART", "", "PART with ID length %d", idLen)
		}
		if need = head + sizeOfIDLen + idLen + 2*sizeOfLength; len(b) < need {
			return h, need, nil
		}
		return frameHeader{
			kind: kindPart, typ: typ, id: b[head+sizeOfIDLen : head+sizeOfIDLen+idLen],
			rest: loadU32(b[need-2*sizeOfLength:]), length: loadU32(b[need-sizeOfLength:]), size: need,
		}, 0, nil
	}
	if int(typ) >= len(controlFrames) || controlFrames[typ].fixed == 0 {
		return h, 0, protocolErrorf(fmt.Sprintf("0x%02x", typ), "", "unknown control frame type 0x%02x", typ)
	}
	f := &controlFrames[typ]
	if need = head + f.fixed; len(b) < need {
		return h, need, nil
	}
	if f.tail != tailNone {
		n := int(b[need-1])
		if f.tail == tailID {
			if n > maxIDLen {
				return h, 0, protocolErrorf(f.name, "", "%s with ID length %d", f.name, n)
			}
			n += sizeOfLength
		}
		if need += n; len(b) < need {
			return h, need, nil
		}
	}
	return frameHeader{kind: kindControl, typ: typ, body: b[head:need], size: need}, 0, nil
}

// headerName names the frame b starts, for an error about its header
// being cut short.
func headerName(b []byte) string {
	switch {
	case len(b) == 0 || b[0] != controlMarker:
		return "a data frame header"
	case len(b) < sizeOfIDLen+sizeOfType:
		return "a control frame"
	}
	return frameName(b[1])
}
