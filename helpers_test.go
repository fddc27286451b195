// SPDX-License-Identifier: MIT

package tcpconn

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// testTimeout bounds every blocking step of a test; generous because the
// machines are shared and loaded.
const testTimeout = 20 * time.Second

func testContext(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// listenTCP returns a loopback listener closed at cleanup.
func listenTCP(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// serveEcho accepts sockets on ln and echoes on each socket's catch-all
// with the seed's plain loop (WrapConnection + Receive/Send). It returns a
// channel that receives every accepted socket.
func serveEcho(t testing.TB, ln net.Listener) <-chan net.Conn {
	t.Helper()
	accepted := make(chan net.Conn, 64)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case accepted <- conn:
			default:
			}
			c := WrapConnection(conn, 0)
			go func() {
				defer c.Close()
				for {
					data, err := c.Receive()
					if err != nil {
						return
					}
					if c.Send(data) != nil {
						return
					}
				}
			}()
		}
	}()
	return accepted
}

// eventually polls cond until it holds or the test timeout passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func mustSend(t testing.TB, c *Connection, data []byte) {
	t.Helper()
	if err := c.SendContext(testContext(t), data); err != nil {
		t.Fatalf("send on %q: %v", c.ID(), err)
	}
}

func mustReceive(t testing.TB, c *Connection) []byte {
	t.Helper()
	data, err := c.ReceiveContext(testContext(t))
	if err != nil {
		t.Fatalf("receive on %q: %v", c.ID(), err)
	}
	return data
}

func wantErr(t testing.TB, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("got error %v, want %v", err, target)
	}
}
