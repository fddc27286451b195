// SPDX-License-Identifier: MIT

package tcpconn

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"testing"
)

// Golden wire bytes for every frame type (PROTOCOL.md). A
// second implementation can check itself against these vectors.
var (
	// HELLO with the default limits: magic "TCPC", version 2, stream window
	// 1 MiB, link window 2 MiB (both where they start), max message 16 MiB,
	// max streams 65536, and a zero link ID (16 bytes; the dialling side
	// sends a random UUID).
	goldenDefaultHello = []byte{0xFF, 0x01, 'T', 'C', 'P', 'C', 0x02,
		0x00, 0x10, 0x00, 0x00, 0x00, 0x20, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	// HELLO with the smallest windows (InitialWindow, 64 KiB), 8 streams and
	// link ID 00 01 02 ... 0f.
	goldenSmallHello = []byte{0xFF, 0x01, 'T', 'C', 'P', 'C', 0x02,
		0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08,
		0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
	goldenData      = []byte{0x02, 'a', 'b', 0x00, 0x00, 0x00, 0x03, 'x', 'y', 'z'}
	goldenEmptyData = []byte{0x00, 0x00, 0x00, 0x00, 0x00} // catch-all ID, empty payload
	goldenWindow    = []byte{0xFF, 0x02, 0x02, 'a', 'b', 0x00, 0x00, 0x00, 0x64}
	goldenLinkWin   = []byte{0xFF, 0x03, 0x00, 0x00, 0x00, 0x64}
	goldenClose     = []byte{0xFF, 0x04, 0x02, 'a', 'b', 0x00, 0x00, 0x00, 0x00}
	goldenRefuse    = []byte{0xFF, 0x04, 0x01, 'c', 0x00, 0x00, 0x00, 0x01}
	goldenFinished  = []byte{0xFF, 0x04, 0x02, 'a', 'b', 0x00, 0x00, 0x00, 0x02}
	goldenPing      = []byte{0xFF, 0x05, 0x00, 0x00, 0x00, 0x2A}
	goldenPong      = []byte{0xFF, 0x06, 0x00, 0x00, 0x00, 0x2A}
	goldenGoAway    = []byte{0xFF, 0x07, 0x00, 0x00, 0x00, 0x00, 0x03, 'b', 'y', 'e'}
	goldenShutdown  = []byte{0xFF, 0x07, 0x00, 0x00, 0x00, 0x01, 0x03, 'b', 'y', 'e'}
	goldenLinkAge   = []byte{0xFF, 0x07, 0x00, 0x00, 0x00, 0x02, 0x03, 'b', 'y', 'e'}
	goldenOpen      = []byte{0xFF, 0x08, 0x02, 'a', 'b', 0x00, 0x00, 0x00, 0x00}
	// The message "xyz" in two parts: "xy" with 1 byte to follow, then "z".
	goldenPart1 = []byte{0xFF, 0x09, 0x02, 'a', 'b', 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 'x', 'y'}
	goldenPart2 = []byte{0xFF, 0x09, 0x02, 'a', 'b', 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 'z'}
	// LANE for link 00 01 ... 0f: magic, version 2, the link's ID.
	goldenLane = []byte{0xFF, 0x0A, 'T', 'C', 'P', 'C', 0x02, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
	// BULK: a message of 1 MiB on "ab" comes on the bulk lane.
	goldenBulk = []byte{0xFF, 0x0B, 0x02, 'a', 'b', 0x00, 0x10, 0x00, 0x00}
)

var smallHello = hello{version: protocolVersion, streamWindow: InitialWindow, linkWindow: InitialWindow, maxMessage: 16 << 20, maxStreams: 8,
	linkID: [16]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}}

// TestFrameGoldenEncode: every encoder produces exactly the golden bytes.
func TestFrameGoldenEncode(t *testing.T) {
	for _, tc := range []struct {
		name string
		got  []byte
		want []byte
	}{
		{"HELLO defaults", appendHello(nil, DefaultConfig().hello()), goldenDefaultHello},
		{"HELLO small", appendHello(nil, smallHello), goldenSmallHello},
		{"data", append(appendDataHeader(nil, "ab", 3), "xyz"...), goldenData},
		{"data, empty ID and payload", appendDataHeader(nil, "", 0), goldenEmptyData},
		{"WINDOW", appendIDControl(nil, frameWindow, "ab", 100), goldenWindow},
		{"LINK_WINDOW", appendValueControl(nil, frameLinkWindow, 100), goldenLinkWin},
		{"CLOSE", appendIDControl(nil, frameClose, "ab", uint32(closeNormal)), goldenClose},
		{"CLOSE refused", appendIDControl(nil, frameClose, "c", uint32(closeRefused)), goldenRefuse},
		{"CLOSE finished", appendIDControl(nil, frameClose, "ab", uint32(closeFinished)), goldenFinished},
		{"PING", appendValueControl(nil, framePing, 42), goldenPing},
		{"PONG", appendValueControl(nil, framePong, 42), goldenPong},
		{"GOAWAY", appendGoAway(nil, uint32(goAwayClosing), "bye"), goldenGoAway},
		{"GOAWAY shutdown", appendGoAway(nil, uint32(goAwayShutdown), "bye"), goldenShutdown},
		{"GOAWAY link age", appendGoAway(nil, uint32(goAwayLinkAge), "bye"), goldenLinkAge},
		{"OPEN", appendIDControl(nil, frameOpen, "ab", 0), goldenOpen},
		{"PART, first of two", append(appendPartHeader(nil, "ab", 1, 2), "xy"...), goldenPart1},
		{"PART, last", append(appendPartHeader(nil, "ab", 0, 1), "z"...), goldenPart2},
		{"LANE", appendLane(nil, smallHello.linkID), goldenLane},
		{"BULK", appendIDControl(nil, frameBulk, "ab", 1<<20), goldenBulk},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !bytes.Equal(tc.got, tc.want) {
				t.Errorf("encoded\n% x\nwant\n% x", tc.got, tc.want)
			}
			// The test's own decoder agrees on where the frame ends.
			f, err := readRawFrame(bufio.NewReader(bytes.NewReader(tc.want)))
			if err != nil || !bytes.Equal(f, tc.want) {
				t.Errorf("decoded % x, %v", f, err)
			}
		})
	}
	h, err := parseHelloBody(goldenSmallHello[2:])
	if err != nil {
		t.Fatal(err)
	}
	if want := (smallHello); h != want {
		t.Errorf("parsed %v, want %v", h, want)
	}
}

// TestFrameGoldenParse feeds the golden frames to a real server link from a
// hand-driven peer and checks what the library makes of each one, and that
// its answers are golden bytes too.
func TestFrameGoldenParse(t *testing.T) {
	ln := listenTCP(t)
	type server struct {
		conn net.Conn
		c    *Connection
	}
	srvSide := make(chan server, 1)
	serveConns(t, ln, func(conn net.Conn) {
		// FrameSize 1 MiB: the credit test below wants one whole frame.
		c, err := Wrap(conn, WithConfig(&Config{KeepAliveInterval: -1, FrameSize: 1 << 20}))
		if err != nil {
			conn.Close()
			return
		}
		srvSide <- server{conn, c}
	})
	p := dialRaw(t, ln.Addr().String())
	srv := <-srvSide
	closeAtCleanup(t, srv.c)
	ctx := testContext(t)

	// HELLO both ways.
	p.expectHello(goldenDefaultHello)
	p.write(goldenSmallHello)

	// OPEN, then data in: routed to the catch-all with its ID.
	p.write(goldenOpen, goldenData)
	from, data, err := srv.c.ReceiveFrom(ctx)
	if err != nil || from != "ab" || string(data) != "xyz" {
		t.Fatalf("ReceiveFrom = %q, %q, %v; want \"ab\", \"xyz\"", from, data, err)
	}
	// A message in two PARTs, with another ID's data frame between them.
	p.write(goldenPart1, dataFrame("cd", "between"), goldenPart2)
	if from, data, err = srv.c.ReceiveFrom(ctx); err != nil || from != "cd" || string(data) != "between" {
		t.Fatalf("ReceiveFrom = %q, %q, %v; want \"cd\", \"between\"", from, data, err)
	}
	if from, data, err = srv.c.ReceiveFrom(ctx); err != nil || from != "ab" || string(data) != "xyz" {
		t.Fatalf("ReceiveFrom = %q, %q, %v; want \"ab\", \"xyz\" reassembled", from, data, err)
	}
	p.write(goldenEmptyData)
	if from, data, err = srv.c.ReceiveFrom(ctx); err != nil || from != "" || len(data) != 0 {
		t.Fatalf("ReceiveFrom = %q, %q, %v; want an empty message on the empty ID", from, data, err)
	}
	// Data out.
	if err := srv.c.SendTo(ctx, "ab", []byte("xyz")); err != nil {
		t.Fatal(err)
	}
	p.expectFrame(goldenData)

	// PING is answered with a PONG carrying the same value.
	p.write(goldenPing)
	p.expectFrame(goldenPong)

	// WINDOW and LINK_WINDOW: our HELLO granted InitialWindow per stream
	// and per link. "xyz" cost 35; a message that brings both to exactly
	// zero is sent, and the next one waits until both credits are back.
	rest := make([]byte, InitialWindow-35-messageOverhead)
	if err := srv.c.SendTo(ctx, "ab", rest); err != nil {
		t.Fatal(err)
	}
	p.expectFrame(append(appendDataHeader(nil, "ab", len(rest)), rest...))
	sent := make(chan error, 1)
	go func() { sent <- srv.c.SendTo(ctx, "ab", []byte("xyz")) }()
	p.write(goldenWindow)  // stream credit back above zero; link still overdrawn
	p.write(goldenLinkWin) // now both
	p.expectFrame(goldenData)
	if err := <-sent; err != nil {
		t.Fatal(err)
	}

	// CLOSE from the peer is acknowledged with a CLOSE.
	p.write(goldenClose)
	p.expectFrame(goldenClose)

	// CLOSE from this side: a server Connection on the same socket closing.
	other := WrapConnectionWithID(srv.conn, "c", 0)
	other.Close()
	p.expectFrame(appendIDControl(nil, frameClose, "c", uint32(closeNormal)))
	p.write(appendIDControl(nil, frameClose, "c", uint32(closeNormal)))

	// GOAWAY: the link is marked as going away.
	p.write(goldenGoAway)
	eventually(t, "GOAWAY to be seen", func() bool {
		l := linkOf(srv.c)
		return l != nil && l.goingAway.Load()
	})
}

// TestControlTypeTableHasNoHoles: the read loop dispatches control frames
// through controlFrames, indexed by type. Every assigned type must have
// an entry, and every other byte value, inside the table (a hole) or
// beyond it, must be rejected as a protocol error rather than parsed with
// a zero-length body.
func TestControlTypeTableHasNoHoles(t *testing.T) {
	assigned := map[byte]bool{
		frameHello: true, frameWindow: true, frameLinkWindow: true, frameClose: true,
		framePing: true, framePong: true, frameGoAway: true, frameOpen: true,
		frameLane: true, frameBulk: true,
	}
	if len(controlFrames) != frameTypeLimit {
		t.Fatalf("controlFrames has %d entries, frameTypeLimit is %d", len(controlFrames), frameTypeLimit)
	}
	for typ := range assigned {
		if int(typ) >= frameTypeLimit || controlFrames[typ].handle == nil || controlFrames[typ].fixed == 0 {
			t.Errorf("assigned type 0x%02x (%s) has no controlFrames entry", typ, frameName(typ))
		}
	}
	// PART carries a payload: readFrame diverts it to readPart, and the
	// table only names it.
	if controlFrames[framePart].name != "PART" || controlFrames[framePart].handle != nil {
		t.Error("PART's entry must name it and have no handler")
	}
	for v := range 256 {
		typ := byte(v)
		if assigned[typ] || typ == framePart {
			continue
		}
		if int(typ) < len(controlFrames) && (controlFrames[typ].handle != nil || controlFrames[typ].name != "") {
			t.Errorf("unassigned type 0x%02x has an entry", typ)
		}
		// A bare link reading [0xFF][typ] plus a plausible body.
		l := &link{cfg: DefaultConfig()}
		l.reading.br = newFrameReader(bytes.NewReader([]byte{controlMarker, typ, 0, 0, 0, 0, 0, 0, 0, 0}), nil)
		l.reading.limiter.tokens = 1000
		_, err := l.readFrame()
		if !errors.Is(err, ErrProtocol) {
			t.Errorf("control type 0x%02x: readFrame = %v, want ErrProtocol", typ, err)
		}
	}
}

// An unknown control type also ends a real link with ErrProtocol (the
// table above is what makes that so).
func TestUnknownControlTypeOnLink(t *testing.T) {
	p, errs := rawPeerOfCatchAll(t)
	p.write([]byte{0xFF, 0x00, 0, 0, 0, 0})
	p.expectClosed()
	wantErr(t, <-errs, ErrProtocol)
}
