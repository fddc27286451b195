// SPDX-License-Identifier: MIT

package tcpconn_test

// Runnable examples of the API beyond the seed: Dial with a context,
// Listener.Accept with graceful shutdown, and the pooled receive path.

import (
	"context"
	"errors"
	"fmt"
	"time"

	tcpconn "github.com/pulsyflux/tcp-conn"
)

// A server that does not know its clients' IDs in advance accepts each new
// logical connection from a Listener; Dial reports a dial or handshake error
// at once instead of on first use.
func ExampleListener_Accept() {
	ln, err := tcpconn.Listen("tcp", "127.0.0.1:0", nil)
	if err != nil {
		panic(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // shut down
			}
			go func() {
				defer c.Close()
				for {
					data, err := c.Receive()
					if err != nil {
						return
					}
					c.Send(append([]byte(c.ID()+": "), data...))
				}
			}()
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, id := range []string{"orders", "billing"} {
		c, err := tcpconn.Dial(ctx, ln.Addr().String(), tcpconn.WithID(id))
		if err != nil {
			panic(err)
		}
		if err := c.SendContext(ctx, []byte("hello")); err != nil {
			panic(err)
		}
		reply, err := c.ReceiveContext(ctx)
		if err != nil {
			panic(err)
		}
		fmt.Println(string(reply))
		c.Close()
	}
	fmt.Println("shutdown:", ln.Shutdown(ctx))
	// Output:
	// orders: hello
	// billing: hello
	// shutdown: <nil>
}

// Dial fails at once when nobody listens; the error says why and matches
// ErrLinkLost.
func ExampleDial() {
	ln, _ := tcpconn.Listen("tcp", "127.0.0.1:0", nil)
	addr := ln.Addr().String()
	ln.Close() // nobody listens there any more

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := tcpconn.Dial(ctx, addr, tcpconn.WithID("late"))
	fmt.Println(errors.Is(err, tcpconn.ErrLinkLost))
	// Output: true
}

// ReceiveAppend reuses the caller's buffer: with enough capacity a receive
// allocates nothing.
func ExampleConnection_ReceiveAppend() {
	srv := startEchoServer()
	defer srv.stop()

	c := tcpconn.NewConnectionWithID(srv.addr, "metrics", 0)
	defer c.Close()
	ctx := context.Background()
	buf := make([]byte, 0, 64<<10)
	for i := range 3 {
		c.Send(fmt.Appendf(nil, "sample %d", i))
		var err error
		if buf, err = c.ReceiveAppend(ctx, buf[:0]); err != nil {
			panic(err)
		}
		fmt.Println(string(buf))
	}
	// Output:
	// sample 0
	// sample 1
	// sample 2
}
