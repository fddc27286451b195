// SPDX-License-Identifier: MIT

package tcpconn

// One Connection as its user meets it: Send and Receive (every size, before
// the server has accepted the socket, with an ended context, over the size
// limit, without allocating), many goroutines on one Connection, Close at
// every point of a call's life (while dialling, while waiting for the
// server's HELLO, blocked on credit or in Receive, racing the socket's
// close), the idle timeout on both sides, and the errors a Connection
// reports. The tests that take a testTransport run over TCP, TLS and
// net.Pipe (transport_test.go). Every blocking step is bounded
// (helpers_test.go: within, await, recvWithin), so a broken engine fails
// these tests; it never hangs them.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// ---- Send and Receive ----

// Byte-exact echo across the interesting sizes (the 64 KiB boundary is
// where the receive path switches from pooled buffers to growing ones).
func TestEchoSizes(t *testing.T) {
	ln := listenTCP(t)
	serveEcho(t, ln)
	c := closeAtCleanup(t, NewConnectionWithID(ln.Addr().String(), "echo", 0))
	sizes := []int{0, 1, 100, 64<<10 - 1, 64 << 10, 64<<10 + 1, 200 << 10, 1 << 20, 8 << 20}
	for i, size := range sizes {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			mustRoundTrip(t, c, pattern(size, byte(i)))
		})
	}
}

// wantInitialWindow is the credit every peer grants per logical connection
// and per socket before its HELLO arrives (0-RTT sends).
const wantInitialWindow = 64 << 10

// TestSeedUsageSendBeforeAccept: Send never waits for the peer's HELLO. A
// client sends up to the initial window before the server has accepted or
// wrapped the socket; each Send returns nil at once, and the server, which
// wraps the socket afterwards, receives every message in order. A message
// beyond the initial window waits for the HELLO and is delivered, not refused.
func TestSeedUsageSendBeforeAccept(t *testing.T) {
	type send struct {
		id  string
		msg []byte
	}
	cases := []struct {
		name  string
		sends []send
		waits bool // the sends may wait for the server (beyond the initial window)
	}{
		{"with ID", []send{{"a", []byte("hello")}}, false},
		{"catch-all", []send{{"", []byte("hello")}}, false},
		{"several in order", []send{
			{"a", []byte{}}, {"a", []byte("1")}, {"a", pattern(100, 2)}, {"a", pattern(16<<10, 3)}, {"a", pattern(32<<10, 4)},
		}, false},
		{"a whole initial window", []send{{"a", pattern(wantInitialWindow, 5)}}, false},
		{"two IDs on one socket", []send{
			{"user-session", []byte("user data")}, {"admin-session", []byte("admin data")}, {"user-session", []byte("more")},
		}, false},
		{"beyond the initial window", []send{{"a", pattern(wantInitialWindow+1, 6)}, {"a", []byte("after")}}, true},
	}
	forEachTransport(t, func(t *testing.T, tr testTransport) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				ln, cfg := tr.listen(t, nil)
				addr := ln.Addr().String()
				var ids []string
				clients := map[string]*Connection{}
				for _, s := range tc.sends {
					if clients[s.id] == nil {
						ids = append(ids, s.id)
						clients[s.id] = openClient(t, addr, cfg, s.id)
					}
				}
				sendAll := func() error {
					for i, s := range tc.sends {
						if err := clients[s.id].Send(s.msg); err != nil {
							return fmt.Errorf("Send #%d (%d bytes on %q): %w", i, len(s.msg), s.id, err)
						}
					}
					return nil
				}
				var sent <-chan error
				if tc.waits {
					sent = async(sendAll)
				} else if err := within(t, prompt, "Send before the server accepted", sendAll); err != nil {
					t.Fatal(err)
				}
				conn := acceptOne(t, ln)
				servers := map[string]*Connection{}
				for _, id := range ids {
					servers[id] = wrapServer(t, conn, id)
				}
				if tc.waits {
					if err := await(t, sent, testTimeout, "Send beyond the initial window"); err != nil {
						t.Fatal(err)
					}
				}
				for i, s := range tc.sends {
					if got := recvWithin(t, servers[s.id], testTimeout); !bytes.Equal(got, s.msg) {
						t.Fatalf("message #%d on %q: got %d bytes, want %d (or other bytes)", i, s.id, len(got), len(s.msg))
					}
				}
			})
		}
	})
}

// A context that has already ended sends and takes nothing, even when
// credit is available and a message is queued.
func TestEndedContextSendsAndTakesNothing(t *testing.T) {
	ln := listenTCP(t)
	serveEcho(t, ln)
	c := mustDial(t, ln.Addr().String(), WithID("ended"))
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	wantErr(t, c.SendContext(ended, []byte("must not be sent")), context.Canceled)

	mustSend(t, c, []byte("first"))
	eventually(t, "the echo is queued", func() bool { return queued(c) == 1 })
	if _, err := c.ReceiveContext(ended); !errors.Is(err, context.Canceled) {
		t.Fatalf("ReceiveContext with an ended context: %v, want context.Canceled", err)
	}
	if got := string(mustReceive(t, c)); got != "first" {
		t.Fatalf("got %q, want %q (the canceled send went out, or the canceled receive took a message)", got, "first")
	}
	mustRoundTrip(t, c, []byte("still usable"))
}

// A message over the maximum size fails on Send with ErrMessageTooLarge,
// and the connection stays usable; both this side's limit and the one the
// peer announced count.
func TestMessageTooLarge(t *testing.T) {
	const limit = InitialWindow // the smallest a Config may set
	for _, tc := range []struct {
		name           string
		cliCfg, srvCfg *Config
	}{
		{"own limit", &Config{MaxMessageSize: limit}, nil},
		{"peer's limit", nil, &Config{MaxMessageSize: limit}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln := listenTCP(t)
			serveConns(t, ln, func(conn net.Conn) {
				c, err := Wrap(conn, WithConfig(tc.srvCfg))
				if err == nil {
					echoLoop(c)
				}
			})
			c := mustDial(t, ln.Addr().String(), WithID("big"), WithConfig(tc.cliCfg))
			wantErr(t, c.Send(make([]byte, limit+1)), ErrMessageTooLarge)
			mustRoundTrip(t, c, pattern(limit, 1))
			wantErr(t, c.Send(make([]byte, 4*limit)), ErrMessageTooLarge)
			mustRoundTrip(t, c, []byte("small"))
		})
	}
}

func TestReceiveAppendDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own")
	}
	c, srv := namedPair(t, "alloc", 0)
	const runs = 100
	msg := pattern(100, 3)
	// Everything is queued before measuring, so the read loop does not
	// allocate during the runs (AllocsPerRun counts the whole process), and
	// the credit given back stays below the threshold that sends a WINDOW.
	for range runs + 1 {
		mustSend(t, srv, msg)
	}
	eventually(t, "every message to be queued", func() bool { return queued(c) == runs+1 })
	ctx := context.Background()
	buf := make([]byte, 0, 1<<10)
	var err error
	allocs := testing.AllocsPerRun(runs, func() {
		buf, err = c.ReceiveAppend(ctx, buf[:0])
		if err != nil || !bytes.Equal(buf, msg) {
			panic(fmt.Sprintf("ReceiveAppend: %v, %d bytes", err, len(buf)))
		}
	})
	if allocs != 0 {
		t.Errorf("ReceiveAppend allocates %v times per call, want 0", allocs)
	}
}

// TestReceiveHandsOverQueuedMessages: a small message that waits for a
// Connection whose last call was Receive is read into a slice of its
// size, and Receive hands that slice over: taking it allocates nothing
// more (it was a second allocation and a copy out of a pooled buffer).
func TestReceiveHandsOverQueuedMessages(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own")
	}
	c, srv := namedPair(t, "fresh", 0)
	msg := pattern(100, 4)
	mustSend(t, srv, msg)
	if got := mustReceive(t, c); !bytes.Equal(got, msg) { // c's receiver now calls Receive
		t.Fatalf("first message: %d bytes, other bytes", len(got))
	}
	const runs = 100
	for range runs + 1 {
		mustSend(t, srv, msg)
	}
	eventually(t, "every message to be queued", func() bool { return queued(c) == runs+1 })
	allocs := testing.AllocsPerRun(runs, func() {
		if got, err := c.Receive(); err != nil || !bytes.Equal(got, msg) {
			panic(fmt.Sprintf("Receive: %v, %d bytes", err, len(got)))
		}
	})
	if allocs != 0 {
		t.Errorf("Receive of a queued message allocates %v times per call, want 0 (its slice was made when it arrived)", allocs)
	}
}

// TestReceiveReturnsItsOwnSlice: a message Receive returns is the
// caller's, whether the call read it for itself (a small one straight into
// a new slice of its size) or took it from the queue: no later message, of
// any size, changes it. Over every transport, named and catch-all.
func TestReceiveReturnsItsOwnSlice(t *testing.T) {
	sizes := []int{0, 1, 100, 1 << 10, smallMessageLimit, smallMessageLimit + 1, 70 << 10}
	forEachTransport(t, func(t *testing.T, tr testTransport) {
		for _, id := range []string{"own", ""} {
			t.Run(fmt.Sprintf("id=%q", id), func(t *testing.T) {
				ln, cfg := tr.listen(t, nil)
				serveEcho(t, ln)
				c := openClient(t, ln.Addr().String(), cfg, id)
				var got, want [][]byte
				for i, n := range sizes { // round trips: the answer is read by its receiver
					msg := pattern(n, byte(i))
					mustSend(t, c, msg)
					got, want = append(got, recvWithin(t, c, testTimeout)), append(want, msg)
				}
				for i, n := range sizes { // in flight together: some wait in the queue
					msg := pattern(n, byte(100+i))
					mustSend(t, c, msg)
					want = append(want, msg)
				}
				for range sizes {
					got = append(got, recvWithin(t, c, testTimeout))
				}
				for i := range want {
					if !bytes.Equal(got[i], want[i]) {
						t.Fatalf("message #%d (%d bytes) changed after later ones arrived: %d bytes, other bytes", i, len(want[i]), len(got[i]))
					}
				}
			})
		}
	})
}

// ---- every method is safe for concurrent use ----

// numbered is message seq of sender g: [g u16][seq u32] then a body
// derived from both; every 97th is larger than the 32 KiB copy limit.
func numbered(g, seq int) []byte {
	n := 6 + (g*7+seq)%200
	if seq%97 == 0 {
		n = 40 << 10
	}
	b := pattern(n, byte(g*31+seq))
	binary.BigEndian.PutUint16(b, uint16(g))
	binary.BigEndian.PutUint32(b[2:], uint32(seq))
	return b
}

func unnumber(b []byte) (g, seq int, err error) {
	if len(b) < 6 {
		return 0, 0, fmt.Errorf("a message of %d bytes", len(b))
	}
	g, seq = int(binary.BigEndian.Uint16(b)), int(binary.BigEndian.Uint32(b[2:]))
	if !bytes.Equal(b, numbered(g, seq)) {
		return g, seq, fmt.Errorf("message %d/%d corrupted", g, seq)
	}
	return g, seq, nil
}

// tally checks that numbered messages arrive exactly once.
type tally struct {
	want int
	mu   sync.Mutex
	seen map[string]int // "from/g/seq" -> times
	dups []string
	full chan struct{} // closed when want distinct messages arrived
	bad  chan error    // the first failure
}

func newTally(want int) *tally {
	return &tally{want: want, seen: map[string]int{}, full: make(chan struct{}), bad: make(chan error, 1)}
}

func (ta *tally) add(from string, data []byte) {
	g, seq, err := unnumber(data)
	if err != nil {
		ta.fail(err)
		return
	}
	k := fmt.Sprintf("%s/%d/%d", from, g, seq)
	ta.mu.Lock()
	defer ta.mu.Unlock()
	ta.seen[k]++
	if ta.seen[k] > 1 {
		ta.dups = append(ta.dups, k)
	} else if len(ta.seen) == ta.want {
		close(ta.full)
	}
}

func (ta *tally) fail(err error) {
	select {
	case ta.bad <- err:
	default:
	}
}

// wait returns once every message arrived, failing on loss (timeout), a
// failure or a duplicate.
func (ta *tally) wait(t testing.TB) {
	t.Helper()
	select {
	case <-ta.full:
	case err := <-ta.bad:
		t.Fatal(err)
	case <-time.After(testTimeout):
		ta.mu.Lock()
		n := len(ta.seen)
		ta.mu.Unlock()
		t.Fatalf("%d of %d messages arrived within %v", n, ta.want, testTimeout)
	}
	ta.mu.Lock()
	defer ta.mu.Unlock()
	if len(ta.dups) > 0 {
		t.Fatalf("%d duplicates, first %s", len(ta.dups), ta.dups[0])
	}
}

// receiveMode is how receiveAll's goroutines receive; both may read the
// socket themselves (no deadline).
type receiveMode struct {
	name string
	// receiver returns goroutine i's receive call; from is "" where the
	// call does not report the ID.
	receiver func(c *Connection, i int) func() (from string, data []byte, err error)
}

var receiveModes = []receiveMode{
	{"Receive", func(c *Connection, _ int) func() (string, []byte, error) {
		return func() (string, []byte, error) { return c.ReceiveFrom(context.Background()) }
	}},
	// Each goroutine reuses a buffer of its own, which messages are read
	// into in place; its first byte, the goroutine's number, must survive.
	{"ReceiveAppend", appendReceiver(false)},
	// The same with a context that can be canceled: on Linux TCP the
	// receivers read with noWait, elsewhere the background reader hands
	// every message over.
	{"ReceiveAppendContext", appendReceiver(true)},
}

// appendReceiver is receiveModes' ReceiveAppend, with a context that can
// be canceled or context.Background.
func appendReceiver(cancelable bool) func(c *Connection, i int) func() (string, []byte, error) {
	return func(c *Connection, i int) func() (string, []byte, error) {
		buf := append(make([]byte, 0, 64<<10), byte(i))
		ctx, cancel := context.Background(), context.CancelFunc(func() {})
		if cancelable {
			ctx, cancel = context.WithCancel(ctx)
		}
		return func() (string, []byte, error) {
			out, err := c.ReceiveAppend(ctx, buf[:1])
			if err == nil && out[0] != byte(i) {
				err = fmt.Errorf("receiver %d: the first byte of its buffer became %d", i, out[0])
			}
			if err != nil {
				cancel() // the loop ends
				return "", nil, err
			}
			return "", out[1:], nil
		}
	}
}

// forEachReceiveMode runs f as a subtest per receiveModes entry.
func forEachReceiveMode(t *testing.T, f func(t *testing.T, mode receiveMode)) {
	t.Helper()
	for _, mode := range receiveModes {
		t.Run(mode.name, func(t *testing.T) { f(t, mode) })
	}
}

// receiveAll runs n goroutines receiving on c into ta as mode says, until
// an error. The returned stop closes c and waits (bounded) for them: the
// user's way to end receive loops.
func receiveAll(t testing.TB, c *Connection, n int, mode receiveMode, ta *tally) (stop func()) {
	var wg sync.WaitGroup
	var stopping atomic.Bool
	for i := range n {
		wg.Add(1)
		receive := mode.receiver(c, i)
		go func() {
			defer wg.Done()
			for {
				from, data, err := receive()
				if err != nil {
					if !stopping.Load() || !errors.Is(err, ErrClosed) {
						ta.fail(fmt.Errorf("%s on %q: %w", mode.name, c.ID(), err))
					}
					return
				}
				ta.add(from, data)
			}
		}()
	}
	return func() {
		t.Helper()
		stopping.Store(true)
		within(t, prompt, "Close", c.Close)
		within(t, prompt, fmt.Sprintf("%d receivers blocked in Receive, after Close,", n), func() error { wg.Wait(); return nil })
	}
}

const concurrentReceivers = 4

// Concurrent Sends on one Connection deliver whole messages in
// per-goroutine order, while Receive runs concurrently.
func TestConcurrentSendAndReceive(t *testing.T) {
	ln := listenTCP(t)
	serveEcho(t, ln)
	c := closeAtCleanup(t, NewConnectionWithID(ln.Addr().String(), "busy", 0))
	const senders, perSender = 8, 150
	msg := numbered // some larger than the pooled-buffer and copy limits
	recvErr := make(chan error, 1)
	go func() {
		ctx := testContext(t)
		next := make([]int, senders)
		for range senders * perSender {
			got, err := c.ReceiveContext(ctx)
			if err != nil {
				recvErr <- err
				return
			}
			if len(got) < 6 {
				recvErr <- fmt.Errorf("short message of %d bytes", len(got))
				return
			}
			g, seq := int(binary.BigEndian.Uint16(got)), int(binary.BigEndian.Uint32(got[2:]))
			if g >= senders || seq != next[g] {
				recvErr <- fmt.Errorf("got sender %d seq %d, want seq %d", g, seq, next[min(g, senders-1)])
				return
			}
			if !bytes.Equal(got, msg(g, seq)) {
				recvErr <- fmt.Errorf("sender %d seq %d: corrupted body", g, seq)
				return
			}
			next[g]++
		}
		recvErr <- nil
	}()
	var wg sync.WaitGroup
	sendErr := make(chan error, senders)
	for g := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := testContext(t)
			for seq := range perSender {
				if err := c.SendContext(ctx, msg(g, seq)); err != nil {
					sendErr <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(sendErr)
	for err := range sendErr {
		t.Fatal(err)
	}
	if err := <-recvErr; err != nil {
		t.Fatal(err)
	}
}

// TestContractConcurrentReceivers: four goroutines receiving on one
// Connection get each of 2,000 messages exactly once between them.
func TestContractConcurrentReceivers(t *testing.T) {
	const messages = 2000
	forEachTransport(t, func(t *testing.T, tr testTransport) {
		forEachReceiveMode(t, func(t *testing.T, mode receiveMode) {
			ln, cfg := tr.listen(t, nil)
			c := openClient(t, ln.Addr().String(), cfg, "a")
			ctx, cancel := context.WithCancel(testContext(t))
			defer cancel()
			ta := newTally(messages)
			stop := receiveAll(t, c, concurrentReceivers, mode, ta)
			s := wrapServer(t, acceptOne(t, ln), "a")
			sent := async(func() error {
				for seq := range messages {
					if err := s.SendContext(ctx, numbered(0, seq)); err != nil {
						return err
					}
				}
				return nil
			})
			ta.wait(t)
			if err := await(t, sent, testTimeout, "the server's Sends"); err != nil {
				t.Fatal(err)
			}
			stop()
		})
	})
}

// TestContractConcurrentReceiveFrom: four goroutines on one server catch-all
// get every message of four client IDs exactly once, each (ReceiveFrom)
// with the ID it was sent on.
func TestContractConcurrentReceiveFrom(t *testing.T) {
	const perID = 500
	forEachTransport(t, func(t *testing.T, tr testTransport) {
		forEachReceiveMode(t, func(t *testing.T, mode receiveMode) {
			ln, cfg := tr.listen(t, nil)
			ctx, cancel := context.WithCancel(testContext(t))
			defer cancel()
			var sends []<-chan error
			for g := range 4 {
				c := openClient(t, ln.Addr().String(), cfg, fmt.Sprintf("x%d", g))
				sends = append(sends, async(func() error {
					for seq := range perID {
						if err := c.SendContext(ctx, numbered(g, seq)); err != nil {
							return err
						}
					}
					return nil
				}))
			}
			ca := wrapServer(t, acceptOne(t, ln), "")
			ta := newTally(4 * perID)
			stop := receiveAll(t, ca, concurrentReceivers, mode, ta)
			ta.wait(t)
			for g, sent := range sends {
				if err := await(t, sent, testTimeout, "the client's Sends"); err != nil {
					t.Fatalf("sender x%d: %v", g, err)
				}
			}
			stop()
			for k := range ta.seen { // "from/g/seq": sender g sent on ID "x<g>"
				if f := strings.Split(k, "/"); f[0] != "" && f[0] != "x"+f[1] {
					t.Fatalf("message %s arrived with the wrong ID", k)
				}
			}
		})
	})
}

// TestContractConcurrentSendersAndReceivers: four goroutines send on one
// Connection while four others receive the echoes on it; every message
// comes back exactly once.
func TestContractConcurrentSendersAndReceivers(t *testing.T) {
	const senders, perSender = 4, 250
	forEachTransport(t, func(t *testing.T, tr testTransport) {
		forEachReceiveMode(t, func(t *testing.T, mode receiveMode) {
			ln, cfg := tr.listen(t, nil)
			c := openClient(t, ln.Addr().String(), cfg, "a")
			ctx, cancel := context.WithCancel(testContext(t))
			defer cancel()
			var sends []<-chan error
			for g := range senders {
				sends = append(sends, async(func() error {
					for seq := range perSender {
						if err := c.SendContext(ctx, numbered(g, seq)); err != nil {
							return err
						}
					}
					return nil
				}))
			}
			ta := newTally(senders * perSender)
			stop := receiveAll(t, c, concurrentReceivers, mode, ta)
			go echoLoop(wrapServer(t, acceptOne(t, ln), "a"))
			ta.wait(t)
			for g, sent := range sends {
				if err := await(t, sent, testTimeout, "the Sends"); err != nil {
					t.Fatalf("sender %d: %v", g, err)
				}
			}
			stop()
		})
	})
}

// ---- Close is prompt in every state and wakes every blocked call ----

// Close. Calls after Close return ErrClosed, a blocked Receive returns
// promptly, and Close twice is safe (goroutine leaks are checked for the
// whole run by TestMain).
func TestClose(t *testing.T) {
	ln := listenTCP(t)
	conns := make(chan net.Conn, 1)
	serveConns(t, ln, func(conn net.Conn) {
		// Hold the socket open with one Connection until the test ends.
		c := WrapConnectionWithID(conn, "a", 0)
		conns <- conn
		c.Receive()
		c.Close()
	})
	addr := ln.Addr().String()
	mustDial(t, addr, WithID("a"))
	conn := <-conns
	sides := []struct {
		name string
		make func() *Connection
	}{
		{"client", func() *Connection { return NewConnectionWithID(addr, "b", 0) }},
		{"client catch-all", func() *Connection { return NewConnection(addr, 0) }},
		{"server", func() *Connection { return WrapConnectionWithID(conn, "c", 0) }},
		{"server catch-all", func() *Connection { return WrapConnection(conn, 0) }},
	}
	for _, side := range sides {
		t.Run(side.name, func(t *testing.T) {
			c := side.make()
			received := make(chan error, 1)
			go func() {
				_, err := c.ReceiveContext(testContext(t))
				received <- err
			}()
			eventually(t, "Receive to block", func() bool { return receiveBlocked(c) })
			if err := c.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			select {
			case err := <-received:
				wantErr(t, err, ErrClosed)
			case <-time.After(5 * time.Second):
				t.Fatal("a blocked Receive did not return after Close")
			}
			wantErr(t, c.Send([]byte("x")), ErrClosed)
			_, err := c.Receive()
			wantErr(t, err, ErrClosed)
			if err := c.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
		})
	}
}

// blockingCalls block while a client has no link yet: a Send beyond the
// initial window (up to it, Send returns at once) and a Receive.
var blockingCalls = []struct {
	name string
	call func(c *Connection) error
}{
	{"Send beyond the initial window", func(c *Connection) error { return c.Send(make([]byte, wantInitialWindow+1)) }},
	{"Receive", func(c *Connection) error { _, err := c.Receive(); return err }},
}

// blockedAfter: a call that has not returned after this long is taken to
// be blocked (a detection heuristic, not a promise about time).
const blockedAfter = 200 * time.Millisecond

// stillBlocked fails the test if the pending call returned within d: the
// test needs it blocked.
func stillBlocked(t testing.TB, pending <-chan error, d time.Duration, what string) {
	t.Helper()
	select {
	case err := <-pending:
		t.Fatalf("%s returned (%v) but should be blocked", what, err)
	case <-time.After(d):
	}
}

// closeWakes closes c and checks the contract of Close: it returns
// promptly, the blocked call returns ErrClosed promptly, and later calls
// return ErrClosed.
func closeWakes(t testing.TB, c *Connection, pending <-chan error, what string) {
	t.Helper()
	if err := within(t, prompt, "Close", c.Close); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wantErr(t, await(t, pending, prompt, what+" blocked before Close"), ErrClosed)
	wantErr(t, within(t, prompt, "Send after Close", func() error { return c.Send([]byte("x")) }), ErrClosed)
	wantErr(t, within(t, prompt, "Receive after Close", func() error { _, err := c.Receive(); return err }), ErrClosed)
}

// TestContractCloseWhileDialling: Close is prompt while the client's dial
// is still in progress (a Dialer that blocks until its context ends), and
// wakes a call blocked behind the dial.
func TestContractCloseWhileDialling(t *testing.T) {
	for _, tc := range blockingCalls {
		t.Run(tc.name, func(t *testing.T) {
			dialing := make(chan struct{}, 1)
			cfg := &Config{Dialer: func(ctx context.Context, _, _ string) (net.Conn, error) {
				select {
				case dialing <- struct{}{}:
				default:
				}
				<-ctx.Done()
				return nil, ctx.Err()
			}}
			c := openClient(t, "blackhole.invalid:1", cfg, "a")
			pending := async(func() error { return tc.call(c) })
			select {
			case <-dialing:
			case <-time.After(promptRemote):
				t.Fatal("the client did not start dialling")
			}
			stillBlocked(t, pending, blockedAfter, tc.name)
			closeWakes(t, c, pending, tc.name)
		})
	}
}

// TestContractCloseWhileWaitingForHello: Close is prompt while the client
// waits for the server's HELLO (a TCP server that accepts and never reads
// or writes), and wakes the call that waits for it. Dial is the only call
// that waits for the HELLO: its context ending returns promptly.
func TestContractCloseWhileWaitingForHello(t *testing.T) {
	for _, tc := range blockingCalls {
		t.Run(tc.name, func(t *testing.T) {
			ln := listenTCP(t)
			c := openClient(t, ln.Addr().String(), nil, "a")
			pending := async(func() error { return tc.call(c) })
			acceptOne(t, ln) // and never read or write it
			stillBlocked(t, pending, blockedAfter, tc.name)
			closeWakes(t, c, pending, tc.name)
		})
	}
	t.Run("Dial context ends", func(t *testing.T) {
		ln := listenTCP(t)
		const wait = 300 * time.Millisecond
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		err := within(t, wait+prompt, "Dial whose context ends", func() error {
			c, err := Dial(ctx, ln.Addr().String(), WithID("a"))
			if c != nil {
				c.Close()
			}
			return err
		})
		if err == nil || !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, ErrHandshake) {
			t.Fatalf("Dial without a HELLO: %v, want the context's error or ErrHandshake", err)
		}
		acceptOne(t, ln)
	})
}

// windowMessage fills a 64 KiB stream window in fullWindow messages: each
// costs 16 KiB + 32 bytes of credit, and a message may overdraw the credit
// while it is positive, so the fourth is sent and the fifth waits.
const (
	windowMessage = 16 << 10
	fullWindow    = 4
)

// fillWindow connects client "a" to a server Connection "a" whose stream
// window is 64 KiB and which never receives (a second server Connection,
// "keep", holds the socket open when "a" closes), and sends 16 KiB
// messages on the client until the window is full. The sender goroutine then blocks
// in Send; its error arrives on sendErr. opts are added to the client's.
func fillWindow(t *testing.T, tr testTransport, opts ...Option) (c, s *Connection, sendErr <-chan error) {
	t.Helper()
	ln, cfg := tr.listen(t, nil)
	c = Open(ln.Addr().String(), append([]Option{WithID("a"), WithConfig(cfg)}, opts...)...)
	closePromptlyAtCleanup(t, c)
	var sent atomic.Int64
	sendErr = async(func() error {
		msg := make([]byte, windowMessage)
		for range 1000 {
			if err := c.Send(msg); err != nil {
				return err
			}
			sent.Add(1)
		}
		return errors.New("1000 Sends of 16 KiB returned: the 64 KiB window never held one back")
	})
	conn := acceptOne(t, ln)
	s, err := Wrap(conn, WithID("a"), WithConfig(&Config{StreamWindow: 64 << 10}))
	if err != nil {
		t.Fatal(err)
	}
	closePromptlyAtCleanup(t, s)
	wrapServer(t, conn, "keep")
	eventually(t, "the server's queue to hold a full window", func() bool {
		if queued(s) >= fullWindow && sent.Load() >= fullWindow {
			return true
		}
		select {
		case err := <-sendErr:
			t.Fatalf("a Send returned %v before the window was full (%d sent)", err, sent.Load())
		default:
		}
		return false
	})
	return c, s, sendErr
}

// TestContractBlockedSendWakes: a Send blocked on flow-control credit
// (the server never receives) is woken by Close (ErrClosed), by the
// client's idle timeout (ErrIdleTimeout) and by the peer closing the
// logical connection (ErrPeerClosed).
func TestContractBlockedSendWakes(t *testing.T) {
	const idle = 300 * time.Millisecond
	cases := []struct {
		name  string
		opts  []Option
		wake  func(t *testing.T, c, s *Connection)
		want  error
		bound time.Duration
	}{
		{"Close", nil, func(t *testing.T, c, _ *Connection) {
			if err := within(t, prompt, "Close", c.Close); err != nil {
				t.Fatalf("Close: %v", err)
			}
		}, ErrClosed, prompt},
		{"idle timeout", []Option{WithIdleTimeout(idle)}, nil, ErrIdleTimeout, idle + 2*prompt},
		{"peer Close", nil, func(t *testing.T, _, s *Connection) {
			if err := within(t, prompt, "the server's Close", s.Close); err != nil {
				t.Fatalf("server Close: %v", err)
			}
		}, ErrPeerClosed, promptRemote},
	}
	forEachTransport(t, func(t *testing.T, tr testTransport) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				c, s, sendErr := fillWindow(t, tr, tc.opts...)
				if tc.wake != nil {
					stillBlocked(t, sendErr, blockedAfter, "Send on a full window")
					tc.wake(t, c, s)
				}
				wantErr(t, await(t, sendErr, tc.bound, "Send blocked on credit"), tc.want)
			})
		}
	})
}

// TestContractCloseWakesReceive: Close wakes a blocked Receive at once, on
// either side.
func TestContractCloseWakesReceive(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr testTransport) {
		for _, side := range []string{"client", "server"} {
			t.Run(side, func(t *testing.T) {
				ln, cfg := tr.listen(t, nil)
				c := openClient(t, ln.Addr().String(), cfg, "a")
				hello := async(func() error { return c.Send([]byte("hello")) })
				s := wrapServer(t, acceptOne(t, ln), "a")
				if err := await(t, hello, testTimeout, "the client's Send"); err != nil {
					t.Fatal(err)
				}
				if got := recvWithin(t, s, testTimeout); string(got) != "hello" {
					t.Fatalf("server received %q", got)
				}
				if side == "server" {
					c = s
				}
				blocked := async(func() error { _, err := c.Receive(); return err })
				stillBlocked(t, blocked, blockedAfter, "Receive")
				closeWakes(t, c, blocked, "Receive")
			})
		}
	})
}

// TestContractCloseRacesLinkClose: Close while the server closes the socket
// at the same moment is still prompt; the blocked Receive returns promptly
// with ErrClosed or ErrLinkLost (whichever won), later calls with ErrClosed.
func TestContractCloseRacesLinkClose(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr testTransport) {
		for i := range 10 {
			ln, cfg := tr.listen(t, nil)
			c := openClient(t, ln.Addr().String(), cfg, "a")
			hello := async(func() error { return c.Send([]byte("hello")) })
			conn := acceptOne(t, ln)
			s := wrapServer(t, conn, "a")
			if err := await(t, hello, testTimeout, "the client's Send"); err != nil {
				t.Fatal(err)
			}
			if got := recvWithin(t, s, testTimeout); string(got) != "hello" {
				t.Fatalf("server received %q", got)
			}
			blocked := async(func() error { _, err := c.Receive(); return err })
			stillBlocked(t, blocked, blockedAfter, "Receive")
			start := make(chan struct{})
			linkClosed := async(func() error { <-start; return conn.Close() })
			closed := async(func() error { <-start; return c.Close() })
			close(start)
			if err := await(t, closed, prompt, "Close racing the socket's close"); err != nil {
				t.Fatalf("iteration %d: Close: %v", i, err)
			}
			if err := await(t, blocked, prompt, "Receive blocked when Close raced the socket's close"); !errors.Is(err, ErrClosed) && !errors.Is(err, ErrLinkLost) {
				t.Fatalf("iteration %d: the blocked Receive returned %v, want ErrClosed or ErrLinkLost", i, err)
			}
			wantErr(t, within(t, prompt, "Send after Close", func() error { return c.Send([]byte("x")) }), ErrClosed)
			await(t, linkClosed, prompt, "the server socket's Close")
		}
	})
}

// ---- idle timeout and errors ----

// Idle timeout on both sides. A server Connection's blocked Receive returns
// ErrIdleTimeout; a client Connection idles out and reconnects on its next
// use.
func TestIdleTimeout(t *testing.T) {
	const idle = 200 * time.Millisecond
	t.Run("server", func(t *testing.T) {
		ln := listenTCP(t)
		type wrapped struct {
			c  *Connection
			at time.Time
		}
		srvSide := make(chan wrapped, 1)
		serveConns(t, ln, func(conn net.Conn) {
			at := time.Now()
			srvSide <- wrapped{WrapConnectionWithID(conn, "quiet", idle), at}
		})
		mustDial(t, ln.Addr().String(), WithID("quiet"))
		w := <-srvSide
		srv, start := closeAtCleanup(t, w.c), w.at
		_, err := srv.ReceiveContext(testContext(t))
		wantErr(t, err, ErrIdleTimeout)
		if d := time.Since(start); d < idle {
			t.Errorf("idled out after %v, before the %v timeout", d, idle)
		}
		// A server Connection never comes back.
		wantErr(t, srv.Send([]byte("x")), ErrIdleTimeout)
	})
	t.Run("server in use", func(t *testing.T) {
		// Use keeps a Connection; it idles out counted from its last use,
		// never earlier.
		const busyIdle = 2 * idle // a use comes late only after a stall of most of it
		cli, srv := namedPair(t, "busy", busyIdle)
		tick := time.NewTicker(busyIdle / 4) // the pace of use under test, not a synchronization
		defer tick.Stop()
		var last time.Time
		for range 12 { // three idle timeouts long
			<-tick.C
			mustSend(t, cli, []byte("tick"))
			mustReceive(t, srv)
			last = time.Now()
		}
		_, err := srv.ReceiveContext(testContext(t))
		wantErr(t, err, ErrIdleTimeout)
		if d := time.Since(last); d < busyIdle {
			t.Errorf("idled out %v after its last use, before the %v timeout", d, busyIdle)
		}
	})
	t.Run("server after its socket was lost", func(t *testing.T) {
		// The idle timer still runs on a dead link; when it fires, the
		// Connection must keep reporting why it died, not the idle timeout.
		cli, srv := namedPair(t, "lost", idle)
		mustSend(t, cli, []byte("hello"))
		mustReceive(t, srv)
		linkOf(cli).conn.Close()
		_, err := srv.ReceiveContext(testContext(t))
		wantErr(t, err, ErrLinkLost)
		eventually(t, "the idle timer has let go of the dead link", func() bool { return srv.bind.Load() == nil })
		_, err = srv.ReceiveContext(testContext(t))
		wantErr(t, err, ErrLinkLost)
		wantErr(t, srv.Send([]byte("x")), ErrLinkLost)
	})
	t.Run("client", func(t *testing.T) {
		ln := listenTCP(t)
		accepted := serveEcho(t, ln)
		c := mustDial(t, ln.Addr().String(), WithID("quiet"), WithIdleTimeout(idle))
		mustRoundTrip(t, c, []byte("first"))
		_, err := c.ReceiveContext(testContext(t))
		wantErr(t, err, ErrIdleTimeout)
		mustRoundTrip(t, c, []byte("again"))
		eventually(t, "a second socket", func() bool { return len(accepted) == 2 })
	})
}

// TestTimeoutsAreNetErrors: every timeout the library reports satisfies
// net.Error with Timeout() == true (as net.Conn's own do), while still
// matching its sentinel with errors.Is.
func TestTimeoutsAreNetErrors(t *testing.T) {
	isTimeout := func(err error) bool {
		var ne net.Error
		return errors.As(err, &ne) && ne.Timeout()
	}
	for _, err := range []error{ErrIdleTimeout, ErrKeepAliveTimeout, fmt.Errorf("%w: nothing heard for 3s", ErrKeepAliveTimeout)} {
		if !isTimeout(err) {
			t.Errorf("%v is not a net.Error timeout", err)
		}
	}
	for _, err := range []error{ErrClosed, ErrLinkLost, ErrProtocol, ErrPeerClosed} {
		if isTimeout(err) {
			t.Errorf("%v claims to be a timeout", err)
		}
	}

	// A server that accepts and never says HELLO: Dial fails with
	// ErrHandshake, and the error is a timeout.
	ln := listenTCP(t)
	serveConns(t, ln, func(conn net.Conn) { io.Copy(io.Discard, conn) })
	_, err := Dial(testContext(t), ln.Addr().String(), WithConfig(&Config{HandshakeTimeout: 100 * time.Millisecond}))
	if !errors.Is(err, ErrHandshake) || !isTimeout(err) {
		t.Fatalf("Dial to a silent server = %v; want ErrHandshake and a net.Error timeout", err)
	}

	// An idle timeout seen by a blocked Receive.
	ln2 := listenTCP(t)
	serveEcho(t, ln2)
	c := closeAtCleanup(t, NewConnectionWithID(ln2.Addr().String(), "idle", 100*time.Millisecond))
	_, err = c.Receive()
	if !errors.Is(err, ErrIdleTimeout) || !isTimeout(err) {
		t.Fatalf("Receive on an idle connection = %v; want ErrIdleTimeout as a net.Error timeout", err)
	}
}
