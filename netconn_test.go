// SPDX-License-Identifier: MIT

package tcpconn

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"
)

// The adapters: a logical connection as a net.Conn, a Listener as a
// net.Listener, and DialConn, used the way stream protocols use them.

// netConnPair returns both ends of one logical connection as net.Conns,
// over tr, closed at cleanup.
func netConnPair(t *testing.T, tr testTransport) (client, server net.Conn) {
	t.Helper()
	raw, cfg := tr.listen(t, &Config{})
	ln, err := NewListener(raw, &Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	cl, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	accepted := async(func() error {
		c, err := ln.NetListener().Accept()
		server = c
		return err
	})
	client, err = cl.DialConn(testContext(t), "tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	// The server learns of the connection with its first bytes or OPEN.
	if err := await(t, accepted, testTimeout, "Accept"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	return client, server
}

// Bytes written in pieces of any size arrive in order, read in pieces of
// any other size, both ways, over TCP, TLS and net.Pipe.
func TestNetConnIsAByteStream(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr testTransport) {
		client, server := netConnPair(t, tr)
		data := pattern(3<<20+17, 5) // more than one message's worth
		for _, dir := range []struct {
			name     string
			from, to net.Conn
		}{{"client to server", client, server}, {"server to client", server, client}} {
			sent := async(func() error {
				for off, step := 0, 1; off < len(data); off, step = off+step, step*3+1 {
					if _, err := dir.from.Write(data[off:min(len(data), off+step)]); err != nil {
						return err
					}
				}
				return nil
			})
			got := make([]byte, 0, len(data))
			buf := make([]byte, 7001)
			for len(got) < len(data) {
				n, err := dir.to.Read(buf[:1+len(got)%len(buf)])
				if err != nil {
					t.Fatalf("%s: Read after %d bytes: %v", dir.name, len(got), err)
				}
				got = append(got, buf[:n]...)
			}
			if err := await(t, sent, testTimeout, "Write"); err != nil {
				t.Fatalf("%s: Write: %v", dir.name, err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("%s: the stream arrived altered", dir.name)
			}
		}
	})
}

// Close on one end is io.EOF on the other, after what was written; a
// zero-length Write sends nothing; Write after the peer closed fails.
func TestNetConnCloseIsEOF(t *testing.T) {
	client, server := netConnPair(t, testTransports[0])
	if n, err := client.Write(nil); n != 0 || err != nil {
		t.Fatalf("zero-length Write = %d, %v", n, err)
	}
	if _, err := client.Write([]byte("last words")); err != nil {
		t.Fatal(err)
	}
	client.Close()
	got, err := io.ReadAll(server)
	if err != nil || string(got) != "last words" {
		t.Fatalf("ReadAll = %q, %v; want the last words and io.EOF", got, err)
	}
	eventually(t, "Write to fail after the peer closed", func() bool {
		_, err := server.Write([]byte("x"))
		return err != nil
	})
	if _, err := client.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read after Close = %v, want net.ErrClosed", err)
	}
}

// Deadlines: a passed one fails at once with a timeout; one set while a
// Read waits wakes it; moving it away lets the call go on; Close wakes a
// waiting Read.
func TestNetConnDeadlines(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr testTransport) {
		// A Read waits parked below interruptibleReadMin bytes, in the
		// socket read itself from there.
		for _, size := range []int{1, interruptibleReadMin} {
			t.Run(fmt.Sprint("read=", size), func(t *testing.T) { testNetConnDeadlines(t, tr, size) })
		}
	})
}

func testNetConnDeadlines(t *testing.T, tr testTransport, readSize int) {
	client, server := netConnPair(t, tr)
	wantTimeout := func(what string, err error) {
		t.Helper()
		var ne net.Error
		if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("%s: %v, want a net.Error timeout matching os.ErrDeadlineExceeded", what, err)
		}
	}
	client.SetReadDeadline(time.Now().Add(-time.Second))
	_, err := client.Read(make([]byte, readSize))
	wantTimeout("Read past its deadline", err)

	client.SetReadDeadline(time.Time{})
	pending := async(func() error { _, err := client.Read(make([]byte, readSize)); return err })
	eventually(t, "the Read to wait", func() bool { return readWaiting(client) })
	client.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	wantTimeout("Read whose deadline was set while it waited", await(t, pending, testTimeout, "Read"))

	client.SetReadDeadline(time.Now().Add(time.Hour))
	got := async(func() error {
		b := make([]byte, 5)
		_, err := io.ReadFull(client, b)
		if err == nil && string(b) != "later" {
			err = fmt.Errorf("read %q", b)
		}
		return err
	})
	if _, err := server.Write([]byte("later")); err != nil {
		t.Fatal(err)
	}
	if err := await(t, got, testTimeout, "Read"); err != nil {
		t.Fatal(err)
	}

	client.SetWriteDeadline(time.Now().Add(-time.Second))
	_, err = client.Write([]byte("x"))
	wantTimeout("Write past its deadline", err)

	client.SetReadDeadline(time.Time{})
	client.SetWriteDeadline(time.Now().Add(time.Hour))
	pending = async(func() error { _, err := client.Read(make([]byte, readSize)); return err })
	eventually(t, "the Read to wait", func() bool { return readWaiting(client) })
	client.Close()
	if err := await(t, pending, prompt, "Read at Close"); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read at Close = %v, want net.ErrClosed", err)
	}
	// Deadlines may still be set once closed (gRPC's transport does).
	within(t, prompt, "SetDeadline after Close", func() error { return client.SetDeadline(time.Now().Add(time.Hour)) })
}

// A lost socket ends the stream for good: a net.Conn never reconnects
// behind its user's back.
func TestNetConnDoesNotReconnect(t *testing.T) {
	ln := listenTCP(t)
	srv, err := NewListener(ln, &Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	cl, err := NewClient(fastReconnect())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	c, err := cl.DialConn(testContext(t), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	l := linkOf(c.(*streamConn).c)
	l.conn.Close()
	eventually(t, "the loss of the socket", l.failed)
	if _, err := c.Write([]byte("after the loss")); !errors.Is(err, ErrLinkLost) {
		t.Fatalf("Write after the loss = %v, want ErrLinkLost", err)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, ErrLinkLost) {
		t.Fatalf("Read after the loss = %v, want ErrLinkLost", err)
	}
	if got := linkOf(c.(*streamConn).c); got != l {
		t.Fatal("the connection moved to another socket")
	}
}

// net/http runs over the adapters: many requests at once over one
// socket, 16 MiB bodies both ways, a client timeout, and a server that
// cuts a response short.
func TestHTTPOverNetConn(t *testing.T) {
	ln := listenTCP(t)
	srvLn, err := NewListener(ln, &Config{})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		size, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.Header().Set("Content-Length", strconv.Itoa(size))
		w.Write(pattern(size, 9))
	})
	mux.HandleFunc("/hang", func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	mux.HandleFunc("/cut", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(http.StatusOK)
		w.Write(make([]byte, 500))
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: testTimeout}
	served := async(func() error { return hs.Serve(srvLn.NetListener()) })
	t.Cleanup(func() {
		hs.Close()
		await(t, served, testTimeout, "http.Server.Serve")
	})

	cl, err := NewClient(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	transport := &http.Transport{DialContext: cl.DialConn, MaxConnsPerHost: 64}
	t.Cleanup(transport.CloseIdleConnections)
	client := &http.Client{Transport: transport}
	base := "http://" + ln.Addr().String()

	t.Run("concurrent requests share one socket", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		for g := range 32 {
			wg.Go(func() {
				for i := range 4 {
					body := pattern(1000+g*37+i, byte(g))
					resp, err := client.Post(base+"/echo", "application/octet-stream", bytes.NewReader(body))
					if err != nil {
						errs <- err
						return
					}
					got, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if want := fmt.Sprintf("%d %x", len(body), sha256.Sum256(body)); err != nil || string(got) != want {
						errs <- fmt.Errorf("echo: got %q (%v), want %q", got, err, want)
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if n := cl.Stats().Links; n != 1 {
			t.Fatalf("the requests used %d sockets, want 1", n)
		}
	})

	t.Run("16 MiB bodies", func(t *testing.T) {
		body := pattern(16<<20, 3)
		resp, err := client.Post(base+"/echo", "application/octet-stream", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf("%d %x", len(body), sha256.Sum256(body)); string(got) != want {
			t.Fatalf("upload: got %q, want %q", got, want)
		}
		resp, err = client.Get(base + "/big?n=" + strconv.Itoa(16<<20))
		if err != nil {
			t.Fatal(err)
		}
		got, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || !bytes.Equal(got, pattern(16<<20, 9)) {
			t.Fatalf("download: %d bytes (%v), not the 16 MiB sent", len(got), err)
		}
	})

	t.Run("client timeout", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/hang", nil)
		_, err := client.Do(req)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("a request past its deadline = %v, want context.DeadlineExceeded", err)
		}
	})

	t.Run("server cuts a response short", func(t *testing.T) {
		resp, err := client.Get(base + "/cut")
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("reading a response cut short = %v, want io.ErrUnexpectedEOF", err)
		}
	})
}

// An empty message from a peer that sends messages (not a NetConn) carries
// no bytes of the stream: Read never returns 0 bytes without an error.
func TestNetConnSkipsEmptyMessages(t *testing.T) {
	client, server := netConnPair(t, testTransports[0])
	peer := server.(*streamConn).c
	mustSend(t, peer, nil)
	mustSend(t, peer, []byte("after"))
	for _, size := range []int{64, 1} { // read in place, and through the library's buffer
		b := make([]byte, size)
		n, err := client.Read(b)
		if n == 0 || err != nil {
			t.Fatalf("Read(%d bytes) = %d, %v; want bytes of the stream", size, n, err)
		}
		if size == 1 {
			break
		}
		if string(b[:n]) != "after" {
			t.Fatalf("Read = %q, want %q", b[:n], "after")
		}
		mustSend(t, peer, nil)
		mustSend(t, peer, []byte("x"))
	}
}

// readWaiting reports whether a Read waits on nc: parked, or reading the
// socket for itself (the only receiver on its side of the link).
func readWaiting(nc net.Conn) bool {
	c := nc.(*streamConn).c
	if receiveBlocked(c) {
		return true
	}
	l := linkOf(c)
	return l != nil && l.token.direct.Load()
}

// TestNetConnReadInterruptedInPlace: a Read waits for its message reading
// the socket for itself (no hand-off through the background reader), and
// a message that fits in p is read straight into p. Its deadline, or
// Close, ends it in the middle of such a payload: it returns at once, and
// p is never written after it returned; after a deadline, the next Read
// gets the whole message, what arrived before the deadline included. The
// peer is a raw peer on a net.Pipe, whose Write returns only once the
// library has read it all, with a bystander ID "b" on the same link.
func TestNetConnReadInterruptedInPlace(t *testing.T) {
	const size = 48 << 10
	payload := pattern(size, 7)
	for _, tc := range []struct {
		name    string
		stop    func(nc net.Conn)
		wantErr func(error) bool
	}{
		{"deadline", func(nc net.Conn) { nc.SetReadDeadline(time.Now()) }, func(err error) bool {
			var ne net.Error
			return errors.Is(err, os.ErrDeadlineExceeded) && errors.As(err, &ne) && ne.Timeout()
		}},
		{"close", func(nc net.Conn) { nc.Close() }, func(err error) bool { return errors.Is(err, net.ErrClosed) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, peer, conns := wrapBesideRawPeer(t, "a", "b")
			c, bystander := conns[0], conns[1]
			nc := c.NetConn()

			// The background reader steps back once it handed a message
			// over, so a few messages settle who reads.
			l := linkOf(c)
			buf := make([]byte, 64<<10)
			type result struct {
				n   int
				err error
			}
			var done chan result
			read := func() {
				done = make(chan result, 1)
				go func() {
					n, err := nc.Read(buf)
					done <- result{n, err}
				}()
			}
			for i := 0; ; i++ {
				read()
				if pollFor(200*time.Millisecond, l.token.direct.Load) {
					break
				}
				if i == 20 {
					t.Fatal("no Read read the socket for itself")
				}
				peer.write(dataFrame("a", "settle"))
				if r := <-done; r.err != nil || string(buf[:r.n]) != "settle" {
					t.Fatalf("Read = %q, %v; want \"settle\"", buf[:r.n], r.err)
				}
			}

			peer.write(append(appendDataHeader(nil, "a", size), payload[:size/2]...))
			if !bytes.Equal(buf[:size/2], payload[:size/2]) {
				t.Fatal("the first half of the payload is not in p: it was not read in place")
			}
			tc.stop(nc)
			select {
			case r := <-done:
				if r.n != 0 || !tc.wantErr(r.err) {
					t.Fatalf("Read = %d, %v; want 0 and the %s's error", r.n, r.err, tc.name)
				}
			case <-time.After(prompt):
				t.Fatalf("Read did not return within %v of its %s", prompt, tc.name)
			}
			for i := range buf { // nothing may write to p any more
				buf[i] = 0xee
			}
			peer.write(payload[size/2:], dataFrame("b", "after"))
			if m := recvWithin(t, bystander, testTimeout); string(m) != "after" {
				t.Fatalf("bystander got %q, want \"after\"", m)
			}
			for i, b := range buf {
				if b != 0xee {
					t.Fatalf("byte %d of p was written after Read returned", i)
				}
			}
			if tc.name == "close" {
				return
			}
			nc.SetReadDeadline(time.Time{})
			got := make([]byte, size)
			if _, err := io.ReadFull(nc, got); err != nil || !bytes.Equal(got, payload) {
				t.Fatalf("after the deadline: %v, or not the whole message", err)
			}
		})
	}
}

// A Write goes out in messages of at most half the window the peer gives
// the ID, so that one is in flight while the peer reads the one before:
// with messages as large as the window, each would wait for the credit of
// the one before it.
func TestNetConnWriteFitsHalfTheWindow(t *testing.T) {
	for _, window := range []int{DefaultStreamWindow, 256 << 10} {
		t.Run(fmt.Sprint("window=", window), func(t *testing.T) {
			ln, err := Listen("tcp", "127.0.0.1:0", &Config{StreamWindow: window})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			cl, err := NewClient(nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cl.Close() })
			ctx := testContext(t)
			nc, err := cl.DialConn(ctx, "tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { nc.Close() })
			body := pattern(4*window+1000, 3)
			wrote := async(func() error { _, err := nc.Write(body); return err })
			srv, err := ln.AcceptContext(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var got []byte
			for len(got) < len(body) {
				m, err := srv.ReceiveContext(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if len(m) > window/2 {
					t.Fatalf("a message of %d bytes in a window of %d", len(m), window)
				}
				got = append(got, m...)
			}
			if err := await(t, wrote, testTimeout, "Write"); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, body) {
				t.Fatal("the messages are not the bytes written, in order")
			}
		})
	}
}

// TestNetConnDeadlineBesideADirectReader: a Read's deadline interrupts
// whoever reads the link's socket for itself, here a plain Receive on
// another ID of the link: that receiver goes on unharmed, and each side
// gets its messages afterwards. The peer is a raw peer on a net.Pipe.
func TestNetConnDeadlineBesideADirectReader(t *testing.T) {
	_, peer, conns := wrapBesideRawPeer(t, "a", "b")
	a, b := conns[0], conns[1]
	nc := a.NetConn()

	// A plain Receive on b reads the socket for itself once the
	// background reader has stepped back: a few messages settle it.
	l := linkOf(b)
	got := make(chan []byte, 1)
	receive := func() {
		go func() {
			m, err := b.Receive()
			if err != nil {
				m = []byte(err.Error())
			}
			got <- m
		}()
	}
	receive()
	for i := 0; !pollFor(200*time.Millisecond, l.token.direct.Load); i++ {
		if i == 20 {
			t.Fatal("no plain Receive read the socket for itself")
		}
		peer.write(dataFrame("b", "settle"))
		<-got
		receive()
	}

	read := async(func() error {
		buf := make([]byte, 64)
		_, err := nc.Read(buf)
		return err
	})
	eventually(t, "the Read to wait", func() bool { return readWaiting(nc) })
	nc.SetReadDeadline(time.Now())
	var ne net.Error
	if err := await(t, read, prompt, "Read at its deadline"); !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read at its deadline = %v, want a timeout", err)
	}

	peer.write(dataFrame("b", "for b"), dataFrame("a", "for a"))
	select {
	case m := <-got:
		if string(m) != "for b" {
			t.Fatalf("Receive on b = %q, want \"for b\"", m)
		}
	case <-time.After(testTimeout):
		t.Fatal("the Receive on b got nothing")
	}
	nc.SetReadDeadline(time.Time{})
	buf := make([]byte, 64)
	if n, err := nc.Read(buf); err != nil || string(buf[:n]) != "for a" {
		t.Fatalf("Read after the deadline = %q, %v; want \"for a\"", buf[:n], err)
	}
}
