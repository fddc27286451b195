// SPDX-License-Identifier: MIT

package tcpconn_test

// Runnable examples of the API beyond the original TCP-Conn one: Dial with a
// context, Listener.Accept with graceful shutdown, and the pooled receive path.

import (
	"context"
	"errors"
	"fmt"
	"net"
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

// A Client scopes sockets, settings and figures to one part of a program:
// its Connections to one address share one socket, its Stats count only its
// traffic, and Close ends everything it made.
func ExampleClient() {
	ln, err := tcpconn.Listen("tcp", "127.0.0.1:0", nil)
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for {
					data, err := c.Receive()
					if err != nil || c.Send(data) != nil {
						return
					}
				}
			}()
		}
	}()

	client, err := tcpconn.NewClient(&tcpconn.Config{IdleTimeout: time.Minute})
	if err != nil {
		panic(err)
	}
	defer client.Close()
	for _, id := range []string{"a", "b", "c"} {
		c := client.Open(ln.Addr().String(), tcpconn.WithID(id))
		c.Send([]byte("ping"))
		if _, err := c.Receive(); err != nil {
			panic(err)
		}
	}
	st := client.Stats()
	fmt.Printf("client: %d socket, %d connections, %d messages out\n", st.Links, st.Connections, st.MessagesOut)
	fmt.Printf("server: %d socket, %d connections\n", ln.Stats().Links, ln.Stats().Connections)
	// Output:
	// client: 1 socket, 3 connections, 3 messages out
	// server: 1 socket, 3 connections
}

// A server that speaks first: the client only receives. NewConnectionWithID
// dials at once and announces its ID, so Accept returns it before the
// client sends anything.
func ExampleOpen_serverSpeaksFirst() {
	ln, err := tcpconn.Listen("tcp", "127.0.0.1:0", nil)
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Send([]byte("welcome, " + c.ID()))
		c.Receive() // until the client goes
	}()

	c := tcpconn.Open(ln.Addr().String(), tcpconn.WithID("listener-only"))
	defer c.Close()
	msg, err := c.Receive()
	if err != nil {
		panic(err)
	}
	fmt.Println(string(msg))
	// Output: welcome, listener-only
}

// One goroutine, the original TCP-Conn way: the client sends before the server
// has even accepted the socket. Send does not wait for the server (up to
// InitialWindow bytes go out before its HELLO), so nothing deadlocks.
func Example_sendBeforeAccept() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()

	client := tcpconn.NewConnectionWithID(ln.Addr().String(), "early", 0)
	defer client.Close()
	if err := client.Send([]byte("sent before Accept")); err != nil {
		panic(err)
	}

	conn, err := ln.Accept()
	if err != nil {
		panic(err)
	}
	server := tcpconn.WrapConnectionWithID(conn, "early", 0)
	defer server.Close()
	msg, err := server.Receive()
	if err != nil {
		panic(err)
	}
	fmt.Println(string(msg))
	// Output: sent before Accept
}

// A Listener with a memory budget of its own: whatever its clients send,
// its sockets hold at most their starting windows plus 32 MiB together,
// and senders wait (nothing is dropped) once it is spent.
func ExampleNewBudget() {
	budget := tcpconn.NewBudget(32 << 20)
	ln, err := tcpconn.Listen("tcp", "127.0.0.1:0", &tcpconn.Config{Budget: budget, LinkWindow: 512 << 10, StreamWindow: 256 << 10})
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		for {
			if _, err := c.Receive(); err != nil {
				return
			}
		}
	}()

	c, err := tcpconn.Dial(context.Background(), ln.Addr().String(), tcpconn.WithID("upload"))
	if err != nil {
		panic(err)
	}
	defer c.Close()
	msg := make([]byte, 1<<20) // larger than the link's window: it grows from the budget
	for range 8 {
		if err := c.Send(msg); err != nil {
			panic(err)
		}
	}
	fmt.Printf("8 MiB sent; in use within the %d MiB budget: %v\n", budget.Limit()>>20, budget.InUse() <= budget.Limit())
	// Output: 8 MiB sent; in use within the 32 MiB budget: true
}
