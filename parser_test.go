// SPDX-License-Identifier: MIT

package tcpconn

import (
	"bytes"
	"errors"
	"testing"
)

// The parser reads every golden frame back: kind, ID, lengths, body, and
// how many bytes its header takes.
func TestParseHeaderReadsGoldenFrames(t *testing.T) {
	cases := []struct {
		name  string
		frame []byte
		want  frameHeader
	}{
		{"data", goldenData, frameHeader{kind: kindData, id: []byte("ab"), length: 3, size: 7}},
		{"empty data on the catch-all", goldenEmptyData, frameHeader{kind: kindData, id: []byte{}, length: 0, size: 5}},
		{"first PART", goldenPart1, frameHeader{kind: kindPart, typ: framePart, id: []byte("ab"), rest: 1, length: 2, size: 13}},
		{"last PART", goldenPart2, frameHeader{kind: kindPart, typ: framePart, id: []byte("ab"), rest: 0, length: 1, size: 13}},
		{"WINDOW", goldenWindow, frameHeader{kind: kindControl, typ: frameWindow, body: goldenWindow[2:], size: len(goldenWindow)}},
		{"LINK_WINDOW", goldenLinkWin, frameHeader{kind: kindControl, typ: frameLinkWindow, body: goldenLinkWin[2:], size: len(goldenLinkWin)}},
		{"CLOSE", goldenClose, frameHeader{kind: kindControl, typ: frameClose, body: goldenClose[2:], size: len(goldenClose)}},
		{"PING", goldenPing, frameHeader{kind: kindControl, typ: framePing, body: goldenPing[2:], size: len(goldenPing)}},
		{"GOAWAY", goldenGoAway, frameHeader{kind: kindControl, typ: frameGoAway, body: goldenGoAway[2:], size: len(goldenGoAway)}},
		{"OPEN", goldenOpen, frameHeader{kind: kindControl, typ: frameOpen, body: goldenOpen[2:], size: len(goldenOpen)}},
		{"HELLO", goldenDefaultHello, frameHeader{kind: kindControl, typ: frameHello, body: goldenDefaultHello[2:], size: len(goldenDefaultHello)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, need, err := parseHeader(tc.frame)
			if err != nil || need != 0 {
				t.Fatalf("parseHeader = need %d, error %v", need, err)
			}
			if got.kind != tc.want.kind || got.typ != tc.want.typ || !bytes.Equal(got.id, tc.want.id) ||
				got.length != tc.want.length || got.rest != tc.want.rest || !bytes.Equal(got.body, tc.want.body) || got.size != tc.want.size {
				t.Fatalf("parseHeader = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// Every prefix of a frame's header asks for more bytes, never more than
// the header has, and never parses as something else.
func TestParseHeaderAsksForWhatItNeeds(t *testing.T) {
	for _, frame := range [][]byte{goldenData, goldenEmptyData, goldenPart1, goldenWindow, goldenLinkWin, goldenClose, goldenGoAway, goldenDefaultHello} {
		whole, _, _ := parseHeader(frame)
		for n := range whole.size {
			_, need, err := parseHeader(frame[:n])
			if err != nil || need <= n || need > whole.size {
				t.Errorf("% x cut to %d bytes: need %d, error %v; want need in %d..%d", frame, n, need, err, n+1, whole.size)
			}
		}
	}
}

// Headers no valid frame starts with are protocol errors naming the frame.
func TestParseHeaderRejectsInvalidHeaders(t *testing.T) {
	cases := []struct {
		name, frame string
		header      []byte
	}{
		{"unknown control type", "0x00", []byte{0xFF, 0x00, 0, 0, 0, 0}},
		{"unassigned type past the table", "0x0c", []byte{0xFF, frameTypeLimit, 0, 0, 0, 0}},
		{"PART with an ID of 255 bytes", "PART", []byte{0xFF, framePart, 0xFF}},
		{"WINDOW with an ID of 255 bytes", "WINDOW", []byte{0xFF, frameWindow, 0xFF}},
		{"CLOSE with an ID of 255 bytes", "CLOSE", []byte{0xFF, frameClose, 0xFF}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := parseHeader(tc.header)
			var pe *ProtocolError
			if !errors.As(err, &pe) || pe.Frame != tc.frame {
				t.Fatalf("parseHeader(% x) = %v, want a protocol error on %s", tc.header, err, tc.frame)
			}
		})
	}
}

// FuzzParseHeader: any bytes either parse into a header that fits them,
// ask for more than they have, or are a protocol error; nothing panics.
//
//	go test -run '^$' -fuzz FuzzParseHeader -fuzztime 15s .
func FuzzParseHeader(f *testing.F) {
	for _, seed := range [][]byte{goldenData, goldenPart1, goldenWindow, goldenGoAway, goldenDefaultHello, {0xFF}, {0xFF, 0x09, 0xFE}} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, need, err := parseHeader(b)
		switch {
		case err != nil:
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("error %v is not ErrProtocol", err)
			}
		case need > 0:
			if need <= len(b) {
				t.Fatalf("asks for %d bytes of %d", need, len(b))
			}
		case h.size > len(b) || h.size == 0:
			t.Fatalf("header of %d bytes parsed from %d", h.size, len(b))
		case h.kind == kindData && !bytes.Equal(appendDataHeader(nil, string(h.id), int(h.length)), b[:h.size]):
			t.Fatalf("data header % x does not encode back", b[:h.size])
		}
	})
}
