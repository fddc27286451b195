// SPDX-License-Identifier: MIT

package tcpconn

import (
	"bytes"
	"context"
	"errors"
	"net"
	"testing"
)

// TestReceiveAppendCancelableReadsInPlace: on Linux TCP a ReceiveAppend
// whose context can be canceled still reads the socket itself, without
// waiting in a read (the background reader waits), so a stream of
// messages lands in place in its buffer; canceled while nothing comes, it
// returns at once.
func TestReceiveAppendCancelableReadsInPlace(t *testing.T) {
	const n, size = 300, 48 << 10
	ln := listenTCP(t)
	srv := make(chan *Connection, 1)
	serveConns(t, ln, func(conn net.Conn) { srv <- mustWrap(t, conn, WithID("a")) })
	c := mustDial(t, ln.Addr().String(), WithID("a"))
	s := <-srv
	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	sent := async(func() error {
		for i := range n {
			if err := s.SendContext(ctx, pattern(size, byte(i))); err != nil {
				return err
			}
		}
		return nil
	})
	buf := make([]byte, 0, 64<<10)
	inPlace := 0
	for i := range n {
		out, err := c.ReceiveAppend(ctx, buf[:0])
		if err != nil || !bytes.Equal(out, pattern(size, byte(i))) {
			t.Fatalf("message %d: %d bytes, %v; want %d intact bytes", i, len(out), err, size)
		}
		if &out[0] == &buf[:1][0] {
			inPlace++
		}
	}
	if err := await(t, sent, testTimeout, "the server's Sends"); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d of %d messages read in place", inPlace, n)
	if inPlace == 0 {
		t.Fatal("no message was read in place")
	}
	waiting := async(func() error { _, err := c.ReceiveAppend(ctx, buf[:0]); return err })
	cancel()
	if err := await(t, waiting, prompt, "ReceiveAppend after its context was canceled"); !errors.Is(err, context.Canceled) {
		t.Fatalf("ReceiveAppend after cancel = %v, want context.Canceled", err)
	}
}
