// SPDX-License-Identifier: MIT

package tcpconn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Hostile peers: a raw-socket attacker abuses one resource at a time against
// a Listener whose limits are small; the attacked link must be closed with
// the right error while the heap stays bounded and a bystander client on
// another link of the same server keeps doing round trips. A broken peer's
// input (garbage, another protocol version, truncated or unknown frames)
// closes only its link, with a handshake or protocol error that names the
// cause (a *ProtocolError names the frame and the ID).

// hostileConfig is the server's configuration under attack.
func hostileConfig() *Config {
	return &Config{
		MaxStreams:                100,
		AcceptBacklog:             32,
		StreamWindow:              64 << 10,
		LinkWindow:                1 << 20,
		MaxMessageSize:            1 << 20,
		MaxControlFramesPerSecond: 500,
		KeepAliveInterval:         time.Second,
	}
}

type hostileCase struct {
	name   string
	config func(*Config)
	// attack writes frames; round counts from 0 and is bounded by the
	// caller; it returns false when it has nothing more to send.
	attack  func(a *attacker, round int) bool
	rounds  int
	noRead  bool
	wrap    bool // serve with Wrap (IDs "bystander" only) instead of a Listener
	want    error
	because string // in the error text
	// orKeepAlive also accepts ErrKeepAliveTimeout: a peer that stops
	// reading is cut by TCP_USER_TIMEOUT or by keepalive, whichever fires
	// first (both are set to the same timeout).
	orKeepAlive bool
	maxHeap     uint64 // bound on the heap's high-water mark above its start
}

func TestHostilePeers(t *testing.T) {
	payload1K := bytes.Repeat([]byte{'z'}, 1024)
	cases := []hostileCase{{
		name: "ids-open-at-once",
		attack: func(a *attacker, i int) bool {
			a.data(fmt.Sprintf("open-%d", i), []byte("x"))
			return true
		},
		rounds: 1000, want: ErrProtocol, because: "logical connections", maxHeap: 16 << 20,
	}, {
		name: "open-frames-at-once", // OPEN without data, new IDs
		attack: func(a *attacker, i int) bool {
			a.raw(appendIDControl(nil, frameOpen, fmt.Sprintf("open-%d", i), 0))
			return true
		},
		rounds: 1000, want: ErrProtocol, because: "logical connections", maxHeap: 16 << 20,
	}, {
		name: "open-repeat-flood", // the same OPEN again and again
		attack: func(a *attacker, i int) bool {
			a.raw(appendIDControl(nil, frameOpen, "again", 0))
			return true
		},
		rounds: 200_000, want: ErrProtocol, because: "flood", maxHeap: 16 << 20,
	}, {
		name: "open-close-churn", // HTTP/2 Rapid Reset
		attack: func(a *attacker, i int) bool {
			id := fmt.Sprintf("churn-%d", i)
			a.data(id, []byte("x"))
			a.raw(appendIDControl(nil, frameClose, id, uint32(closeNormal)))
			return true
		},
		rounds: 200_000, want: ErrProtocol, because: "flood", maxHeap: 32 << 20,
	}, {
		name:   "unclaimed-id-bytes", // a Wrap server claims only its own IDs
		wrap:   true,
		config: func(c *Config) { c.MaxStreams = 10000 },
		attack: func(a *attacker, i int) bool {
			a.data(fmt.Sprintf("unclaimed-%d", i), payload1K)
			return true
		},
		rounds: 100_000, want: ErrProtocol, because: "window", maxHeap: 32 << 20,
	}, {
		name: "one-id-beyond-its-window",
		attack: func(a *attacker, i int) bool {
			a.data("greedy", payload1K)
			return true
		},
		rounds: 100_000, want: ErrProtocol, because: "window", maxHeap: 16 << 20,
	}, {
		name: "message-too-large",
		attack: func(a *attacker, i int) bool {
			a.raw(appendDataHeader(nil, "big", 1<<20+1))
			return false
		},
		rounds: 1, want: ErrProtocol, because: "exceeds the limit", maxHeap: 4 << 20,
	}, {
		name: "max-length-header", // claims maxClaim (4 GiB - 1), sends 10 bytes
		config: func(c *Config) {
			c.MaxMessageSize = maxClaim
		},
		attack: func(a *attacker, i int) bool {
			a.raw(appendDataHeader(nil, "huge", maxClaim))
			a.raw(make([]byte, 10))
			return false
		},
		// 8 MiB: the first buffer is 1 MiB (maxUnbackedAlloc); the rest is
		// the bystander's garbage, which measured +2.5 to +5.8 MiB.
		rounds: 1, want: ErrKeepAliveTimeout, because: "nothing heard", maxHeap: 8 << 20,
	}, {
		name: "partial-message-stalled", // 16 MiB claimed, 2 MiB sent, then silence
		config: func(c *Config) {
			c.MaxMessageSize = 16 << 20
		},
		attack: func(a *attacker, i int) bool {
			if i == 0 {
				a.raw(appendDataHeader(nil, "partial", 16<<20))
			}
			a.raw(payload1K)
			return i < 2047
		},
		rounds: 2048, want: ErrKeepAliveTimeout, because: "nothing heard", maxHeap: 24 << 20,
	}, {
		// Many messages in parts, each 1 KiB of a claimed 64 KiB. Each
		// that overdraws the link grows its window (growForMessage, from
		// the Budget), so the stream limit cuts the attacker first.
		name: "parts-started-never-finished",
		attack: func(a *attacker, i int) bool {
			a.raw(appendPartHeader(nil, fmt.Sprintf("part-%d", i), 63<<10, 1<<10))
			a.raw(payload1K)
			return true
		},
		rounds: 100_000, want: ErrProtocol, because: "logical connections", maxHeap: 16 << 20,
	}, {
		name: "part-does-not-continue", // the second PART does not add up
		attack: func(a *attacker, i int) bool {
			a.raw(appendPartHeader(nil, "p", 10, 4), []byte("abcd"))
			a.raw(appendPartHeader(nil, "p", 5, 4), []byte("efgh"))
			return false
		},
		rounds: 1, want: ErrProtocol, because: "missing", maxHeap: 4 << 20,
	}, {
		name: "data-inside-parts", // a whole message on an ID whose message in parts is unfinished
		attack: func(a *attacker, i int) bool {
			a.raw(appendPartHeader(nil, "p", 10, 4), []byte("abcd"))
			a.data("p", []byte("whole"))
			return false
		},
		rounds: 1, want: ErrProtocol, because: "inside a message in parts", maxHeap: 4 << 20,
	}, {
		name: "ping-flood",
		attack: func(a *attacker, i int) bool {
			a.raw(appendValueControl(nil, framePing, uint32(i)))
			return true
		},
		rounds: 200_000, want: ErrProtocol, because: "flood", maxHeap: 16 << 20,
	}, {
		name: "pong-flood",
		attack: func(a *attacker, i int) bool {
			a.raw(appendValueControl(nil, framePong, uint32(i)))
			return true
		},
		rounds: 200_000, want: ErrProtocol, because: "flood", maxHeap: 16 << 20,
	}, {
		name: "empty-window-flood",
		attack: func(a *attacker, i int) bool {
			a.raw(appendIDControl(nil, frameWindow, "nobody", 0))
			a.raw(appendValueControl(nil, frameLinkWindow, 0))
			return true
		},
		rounds: 200_000, want: ErrProtocol, because: "flood", maxHeap: 16 << 20,
	}, {
		name: "close-unknown-flood",
		attack: func(a *attacker, i int) bool {
			a.raw(appendIDControl(nil, frameClose, fmt.Sprint(i), 0))
			return true
		},
		rounds: 200_000, want: ErrProtocol, because: "flood", maxHeap: 16 << 20,
	}, {
		name: "window-overflow",
		attack: func(a *attacker, i int) bool {
			a.raw(appendValueControl(nil, frameLinkWindow, 1<<31))
			return false
		},
		rounds: 1, want: ErrProtocol, because: "overflows", maxHeap: 4 << 20,
	}, {
		name: "ping-flood-never-reading", // PONGs queue until TCP_USER_TIMEOUT (= keepalive timeout) ends the link
		config: func(c *Config) {
			c.MaxControlFramesPerSecond = 1 << 30
		},
		noRead: true,
		attack: func(a *attacker, i int) bool {
			a.raw(appendValueControl(nil, framePing, uint32(i)))
			return true
		},
		rounds: 3_000_000, want: ErrLinkLost, because: "", orKeepAlive: true, maxHeap: 64 << 20,
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { runHostile(t, tc) })
	}
}

func runHostile(t *testing.T, tc hostileCase) {
	cfg := hostileConfig()
	if tc.config != nil {
		tc.config(cfg)
	}
	var addr string
	var findLink func(a *attacker) *link
	if tc.wrap {
		ln := listenTCP(t)
		var links sync.Map // remote address -> *link
		serveConns(t, ln, func(conn net.Conn) {
			c, err := Wrap(conn, WithID("bystander"), WithConfig(cfg))
			if err != nil {
				return
			}
			links.Store(conn.RemoteAddr().String(), linkOf(c))
			echoLoop(c)
		})
		addr = ln.Addr().String()
		findLink = func(a *attacker) *link {
			var l any
			eventually(t, "the attacked link", func() bool {
				var ok bool
				l, ok = links.Load(a.conn.LocalAddr().String())
				return ok
			})
			return l.(*link)
		}
	} else {
		srv := mustListen(t, "127.0.0.1:0", cfg)
		serveListener(t, srv, echoHandler)
		addr = srv.Addr().String()
		findLink = func(a *attacker) *link { return a.serverLink(srv) }
	}
	by := startBystander(t, addr)
	protoBefore := ReadStats().ProtocolErrors

	// The high-water mark counts garbage not yet collected (the bystander
	// makes some): keep the GC close behind so the mark measures what the
	// attack makes us hold, not the pacer's allowance.
	defer debug.SetGCPercent(debug.SetGCPercent(10))
	heap := watchHeap()
	start := time.Now()
	a := dialAttacker(t, addr, tc.noRead)
	victim := findLink(a)
	rounds, sent := 0, int64(0)
	for ; rounds < tc.rounds && !victim.failed(); rounds++ {
		more := tc.attack(a, rounds)
		if a.w.Buffered() >= 32<<10 || !more {
			sent += int64(a.w.Buffered())
			if !a.flush() {
				break
			}
		}
		if !more {
			break
		}
	}
	sent += int64(a.w.Buffered())
	a.flush()
	err := waitLinkErr(t, victim)
	took := time.Since(start)
	high := heap.end()
	n := by.end(t)

	if tc.orKeepAlive && errors.Is(err, ErrKeepAliveTimeout) {
		// the other way this case may end
	} else if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.because) {
		t.Errorf("attacked link closed with %v, want %v (%q)", err, tc.want, tc.because)
	}
	if high > tc.maxHeap {
		t.Errorf("heap high-water mark %d MiB above start, bound %d MiB", high>>20, tc.maxHeap>>20)
	}
	if errors.Is(tc.want, ErrProtocol) && ReadStats().ProtocolErrors == protoBefore {
		t.Error("ProtocolErrors did not count the attack")
	}
	// The attacker's socket is closed by the server.
	if !tc.noRead {
		select {
		case <-a.gone:
		case <-time.After(testTimeout):
			t.Error("the attacker's socket stayed open")
		}
	}
	t.Logf("figures: hostile %s: %d rounds, %d bytes sent by the attacker in %v; link closed with %q; heap high-water +%.1f MiB; bystander did %d round trips on its own link",
		tc.name, rounds, sent, took.Round(time.Millisecond), err, float64(high)/(1<<20), n)
}

// TestHostileIDScoping: IDs belong to their physical link. A second client
// using the same ID neither receives the first client's messages (checked
// on every byte that reaches her raw socket) nor can inject into, close or
// steal credit from its logical connection, even by raw frames naming that
// ID.
func TestHostileIDScoping(t *testing.T) {
	srv := mustListen(t, "127.0.0.1:0", nil)
	// The server tags each echo with the link it came in on.
	serveListener(t, srv, func(c *Connection) {
		tag := []byte(linkOf(c).conn.RemoteAddr().String() + "|")
		for {
			data, err := c.Receive()
			if err != nil {
				return
			}
			if c.Send(append(append([]byte(nil), tag...), data...)) != nil {
				return
			}
		}
	})
	alice := mustDial(t, srv.Addr().String(), WithID("account-42"), WithConfig(&Config{}))
	mustSend(t, alice, []byte("alice-1"))
	aliceTag := linkOf(alice).conn.LocalAddr().String() + "|"
	if got := string(mustReceive(t, alice)); got != aliceTag+"alice-1" {
		t.Fatalf("alice got %q", got)
	}

	// Mallory, on her own socket, uses the same ID and raw frames for it.
	// A raw peer (not the attacker, whose reader discards) so that the test
	// can read everything the server sends her.
	mal := dialRaw(t, srv.Addr().String())
	malTag := mal.conn.LocalAddr().String() + "|"
	mal.write(helloBytes(nil),
		dataFrame("account-42", "mallory-inject"),
		appendIDControl(nil, frameClose, "account-42", uint32(closeNormal)),
		appendIDControl(nil, frameWindow, "account-42", 1<<20),
		dataFrame("account-42", "mallory-again"))
	// Alice keeps her connection: her traffic flows, nothing of Mallory's
	// reaches her, and every reply she gets was produced on her link.
	for i := range 50 {
		msg := fmt.Sprintf("alice-%d", i+2)
		mustSend(t, alice, []byte(msg))
		if got := string(mustReceive(t, alice)); got != aliceTag+msg {
			t.Fatalf("alice got %q, want %q", got, aliceTag+msg)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if extra, err := alice.ReceiveContext(ctx); err == nil {
		t.Fatalf("alice received an extra message %q", extra)
	}
	// A well-behaved second client with the same ID is a different logical
	// connection too.
	bob := mustDial(t, srv.Addr().String(), WithID("account-42"), WithConfig(&Config{}))
	mustSend(t, bob, []byte("bob"))
	bobTag := linkOf(bob).conn.LocalAddr().String() + "|"
	if got := string(mustReceive(t, bob)); got != bobTag+"bob" {
		t.Fatalf("bob got %q", got)
	}
	mustSend(t, alice, []byte("alice-last")) // alice unaffected by bob
	if got := string(mustReceive(t, alice)); got != aliceTag+"alice-last" {
		t.Fatalf("alice got %q", got)
	}

	// Mallory's side: she received nothing of Alice's. She asks for an echo
	// on a fresh ID and reads until it is back, then for a short window more
	// (a stray copy of Alice's traffic, all of which is over, would be
	// written by then); every data frame must be one of her own echoes.
	mal.write(dataFrame("mallory-sync", "sync"))
	var got []byte // every byte Mallory received
	var echoes []string
	readMallory := func(deadline time.Time) error {
		mal.conn.SetReadDeadline(deadline)
		f, err := readRawFrame(mal.br)
		got = append(got, f...)
		if id, payload, ok := splitDataFrame(f); ok && err == nil {
			echoes = append(echoes, id+"="+string(payload))
			if !bytes.HasPrefix(payload, []byte(malTag)) {
				t.Errorf("mallory received %q on %q, produced on another link (hers is %q)", payload, id, malTag)
			}
		}
		return err
	}
	want := "mallory-sync=" + malTag + "sync"
	for !slices.Contains(echoes, want) {
		if err := readMallory(time.Now().Add(testTimeout)); err != nil {
			t.Fatalf("mallory's echo never came back: %v (received %q)", err, echoes)
		}
	}
	const quiet = 200 * time.Millisecond
	for {
		err := readMallory(time.Now().Add(quiet))
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break // quiet for the whole window
		}
		if err != nil {
			t.Fatalf("mallory's socket: %v", err)
		}
	}
	if bytes.Contains(got, []byte("alice")) || bytes.Contains(got, []byte(aliceTag)) || bytes.Contains(got, []byte("bob")) {
		t.Errorf("mallory received another client's bytes: %q", got)
	}
	t.Logf("figures: ID scoping: 3 sockets used ID %q; 0 cross-socket messages, alice did 52 round trips untouched by 2 injected messages, a CLOSE and a WINDOW naming her ID; mallory received %d bytes, %d data frames, all echoes of her own messages (%q), none of alice's or bob's", "account-42", len(got), len(echoes), echoes)
}

// maxClaim is the largest length a header can claim within a Config's
// MaxMessageSize: 4 GiB - 1 (the u32 length field), or 2 GiB - 1 where int
// is 32 bits wide.
const maxClaim = min(1<<32-1, math.MaxInt)

func maxClaimText() string {
	if maxClaim == 1<<32-1 {
		return "4 GiB - 1"
	}
	return "2 GiB - 1 (32-bit int)"
}

// TestHostileHeaderDoesNotAllocate: the read path allocates for what
// arrived, not for what a header claims (checked on the allocation counter,
// not only the live heap).
func TestHostileHeaderDoesNotAllocate(t *testing.T) {
	srvConn, cliConn := net.Pipe()
	cfg := &Config{MaxMessageSize: maxClaim, KeepAliveInterval: -1}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	c := mustWrap(t, srvConn, WithID("victim"), WithConfig(cfg))
	go func() {
		cliConn.Write(helloBytes(nil))
		cliConn.Write(appendDataHeader(nil, "victim", maxClaim))
		cliConn.Write(make([]byte, 100))
		cliConn.Close()
	}()
	go func() { // the link's HELLO and anything else
		buf := make([]byte, 4096)
		for {
			if _, err := cliConn.Read(buf); err != nil {
				return
			}
		}
	}()
	_, err := c.ReceiveContext(testContext(t))
	wantErr(t, err, ErrLinkLost)
	runtime.ReadMemStats(&after)
	got := after.TotalAlloc - before.TotalAlloc
	t.Logf("figures: a header claiming %s followed by 100 bytes and EOF: %d KiB allocated in total, error %q", maxClaimText(), got>>10, err)
	if got > 3<<20 {
		t.Errorf("allocated %d bytes for a %s claim", got, maxClaimText())
	}
}

// A hostile or broken peer gets its link closed with a protocol or
// handshake error, without a panic or a hang, while another client of the
// same server keeps working.
func TestHostilePeerClosesOnlyItsLink(t *testing.T) {
	const maxStreams = 4
	srvCfg := &Config{MaxStreams: maxStreams, KeepAliveInterval: -1}
	ln := listenTCP(t)
	addr := ln.Addr().String()
	linkErrs := make(chan error, 16)
	serveConns(t, ln, func(conn net.Conn) {
		c, err := Wrap(conn, WithConfig(srvCfg))
		if err != nil {
			linkErrs <- err
			return
		}
		defer c.Close()
		for {
			data, err := c.Receive()
			if err != nil {
				if !errors.Is(err, io.EOF) { // the good client's goodbye
					linkErrs <- err
				}
				return
			}
			if err := c.Send(data); err != nil {
				linkErrs <- err
				return
			}
		}
	})
	good := closeAtCleanup(t, NewConnectionWithID(addr, "good", 0))
	mustRoundTrip(t, good, []byte("before"))

	var tooManyIDs []byte
	for i := range 2 * maxStreams {
		tooManyIDs = append(tooManyIDs, dataFrame(fmt.Sprint("id-", i), "x")...)
	}
	garbage := pattern(4096, 0xAB)
	for _, tc := range []struct {
		name  string
		hello bool // a valid HELLO goes first
		input []byte
		want  error
		// because is in the error text: the error must name the cause.
		because string
	}{
		{"garbage instead of hello", false, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), ErrHandshake, "not a tcpconn hello"},
		// The right magic, another version: a future (or ancient) tcpconn
		// is refused by name, not misparsed as version 1.
		{"hello of protocol version 1 (fixed windows)", false, helloVersion(1), ErrHandshake, "protocol version 1"},
		{"hello of protocol version 3", false, helloVersion(3), ErrHandshake, "protocol version 3"},
		{"hello of protocol version 0", false, helloVersion(0), ErrHandshake, "protocol version 0"},
		// A peer must grant at least InitialWindow: we may have sent that much.
		{"hello with a window below InitialWindow", false, appendHello(nil, hello{version: protocolVersion, streamWindow: 100, linkWindow: InitialWindow, maxMessage: InitialWindow, maxStreams: 1}), ErrHandshake, "must be at least 65536"},
		{"garbage", true, garbage, ErrProtocol, "exceeds the limit"},
		{"absurd length", true, []byte{1, 'x', 0xFF, 0xFF, 0xFF, 0xFF}, ErrProtocol, "exceeds the limit"},
		{"truncated data frame", true, dataFrame("trunc", "payload")[:10], ErrProtocol, "ended inside"},
		{"payload cut after some of its bytes", true, dataFrame("trunc", "payload")[:12], ErrProtocol, "ended inside a message payload"},
		{"truncated control frame", true, []byte{0xFF, frameWindow, 5, 'a'}, ErrProtocol, "ended inside WINDOW"},
		{"unknown control type", true, []byte{0xFF, 0x7F, 0, 0, 0, 0}, ErrProtocol, "unknown control frame type 0x7f"},
		{"more IDs than MaxStreams", true, tooManyIDs, ErrProtocol, "logical connections"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			protocolErrors := ReadStats().ProtocolErrors
			p := dialRaw(t, addr)
			if tc.hello {
				p.write(helloBytes(nil))
			}
			p.write(tc.input)
			p.closeWrite()
			p.expectClosed()
			select {
			case err := <-linkErrs:
				if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.because) {
					t.Fatalf("the link closed with %v, want %v naming %q", err, tc.want, tc.because)
				}
				t.Logf("link error: %v", err)
			case <-time.After(testTimeout):
				t.Fatal("the server Connection saw no error")
			}
			if errors.Is(tc.want, ErrProtocol) && ReadStats().ProtocolErrors <= protocolErrors {
				t.Error("Stats.ProtocolErrors did not increase")
			}
			mustRoundTrip(t, good, []byte("still working after "+tc.name))
		})
	}
}

// TestProtocolErrorNamesFrameAndID: a protocol violation is a
// *ProtocolError naming the frame and the logical connection, and matches
// ErrProtocol.
func TestProtocolErrorNamesFrameAndID(t *testing.T) {
	for _, tc := range []struct {
		name      string
		frame     []byte
		wantFrame string
		wantID    string
	}{
		{"message over the limit", appendDataHeader(nil, "big", 1<<30), "data", "big"},
		{"link window overflow", appendValueControl(nil, frameLinkWindow, 1<<31), "LINK_WINDOW", ""},
		{"ID too long in CLOSE", []byte{0xFF, frameClose, 0xFF}, "CLOSE", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, errs := rawPeerOfCatchAll(t)
			p.write(tc.frame)
			err := <-errs
			var pe *ProtocolError
			if !errors.Is(err, ErrProtocol) || !errors.As(err, &pe) || pe.Frame != tc.wantFrame || pe.ID != tc.wantID {
				t.Fatalf("error %v (%+v); want a ProtocolError for frame %q, ID %q", err, pe, tc.wantFrame, tc.wantID)
			}
		})
	}
}
