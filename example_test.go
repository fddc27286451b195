// SPDX-License-Identifier: MIT

package tcpconn_test

// The original TCP-Conn README's examples, runnable. The calls are the original
// API's own (NewConnection, NewConnectionWithID, WrapConnection,
// WrapConnectionWithID, Send, Receive); only the addresses differ: an
// in-process server listens on 127.0.0.1:0 where the README says
// "localhost:8080", and every example closes what it opened.

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	tcpconn "github.com/pulsyflux/tcp-conn"
)

// echoServer is the original README's "Server-Side Usage" loop, run in process.
type echoServer struct {
	addr     string
	listener net.Listener
	accepted atomic.Int32
	wg       sync.WaitGroup
}

func startEchoServer() *echoServer {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	s := &echoServer{addr: listener.Addr().String(), listener: listener}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			conn, err := listener.Accept()
			if err != nil {
				return // listener closed
			}
			s.accepted.Add(1)

			// Wrap accepted connection
			c := tcpconn.WrapConnection(conn, 5*time.Minute)

			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				for {
					data, err := c.Receive()
					if err != nil {
						return // Client disconnected or idle timeout
					}
					c.Send(data) // Echo back
				}
			}()
		}
	}()
	return s
}

// stop closes the listener and waits for the server's goroutines, which end
// once their clients have closed.
func (s *echoServer) stop() {
	s.listener.Close()
	s.wg.Wait()
}

// The original README's "Basic Client Connection".
func Example() {
	server := startEchoServer()
	defer server.stop()

	// Simple connection with defaults
	c := tcpconn.NewConnection(server.addr, 5*time.Minute)
	defer c.Close()

	c.Send([]byte("hello"))
	data, _ := c.Receive()
	fmt.Println(string(data))
	// Output: hello
}

// The original README's "Connection Multiplexing": two logical connections
// share one TCP socket, and each receives only its own messages, even from the
// original plain echo server.
func Example_multiplexing() {
	server := startEchoServer()
	defer server.stop()

	// Both connections share the same underlying TCP socket
	conn1 := tcpconn.NewConnectionWithID(server.addr, "user", 5*time.Minute)
	conn2 := tcpconn.NewConnectionWithID(server.addr, "admin", 5*time.Minute)
	defer conn1.Close()
	defer conn2.Close()

	// Messages are routed by ID
	conn1.Send([]byte("user data"))  // Tagged with "user"
	conn2.Send([]byte("admin data")) // Tagged with "admin"

	// Each receives only its own messages
	userData, _ := conn1.Receive()  // Gets "user data" only
	adminData, _ := conn2.Receive() // Gets "admin data" only

	fmt.Println(string(userData))
	fmt.Println(string(adminData))
	fmt.Println("sockets:", server.accepted.Load())
	// Output:
	// user data
	// admin data
	// sockets: 1
}

// The original README's "Server-Side Usage": wrap each accepted socket and
// echo.
func ExampleWrapConnection() {
	listener, _ := net.Listen("tcp", "127.0.0.1:0")
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := listener.Accept()
			if err != nil {
				return
			}

			// Wrap accepted connection
			c := tcpconn.WrapConnection(conn, 5*time.Minute)

			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					data, err := c.Receive()
					if err != nil {
						return // Client disconnected or idle timeout
					}
					c.Send(data) // Echo back
				}
			}()
		}
	}()

	client := tcpconn.NewConnection(listener.Addr().String(), 5*time.Minute)
	client.Send([]byte("echo me"))
	data, _ := client.Receive()
	fmt.Println(string(data))

	client.Close()
	listener.Close()
	wg.Wait()
	// Output: echo me
}

// handleID answers each message with the ID that received it.
func handleID(c *tcpconn.Connection, wg *sync.WaitGroup) {
	defer wg.Done()
	defer c.Close()
	for {
		data, err := c.Receive()
		if err != nil {
			return
		}
		c.Send([]byte(c.ID() + " got " + string(data)))
	}
}

// The original README's "Server with Multiple Logical Connections": several
// logical connections over the same accepted socket.
func ExampleWrapConnectionWithID() {
	listener, _ := net.Listen("tcp", "127.0.0.1:0")
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := listener.Accept()
			if err != nil {
				return
			}

			// Create multiple logical connections over same accepted socket
			orders := tcpconn.WrapConnectionWithID(conn, "orders", 5*time.Minute)
			billing := tcpconn.WrapConnectionWithID(conn, "billing", 5*time.Minute)

			wg.Add(2)
			go handleID(orders, &wg)
			go handleID(billing, &wg)
		}
	}()

	addr := listener.Addr().String()
	c1 := tcpconn.NewConnectionWithID(addr, "orders", 5*time.Minute)
	c2 := tcpconn.NewConnectionWithID(addr, "billing", 5*time.Minute)
	c2.Send([]byte("second"))
	c1.Send([]byte("first"))
	r1, _ := c1.Receive()
	r2, _ := c2.Receive()
	fmt.Println(string(r1))
	fmt.Println(string(r2))

	c1.Close()
	c2.Close()
	listener.Close()
	wg.Wait()
	// Output:
	// orders got first
	// billing got second
}

// The original README's "Request-Response Pattern".
func Example_requestResponse() {
	// Server
	listener, _ := net.Listen("tcp", "127.0.0.1:0")
	served := make(chan struct{})
	go func() {
		defer close(served)
		conn, _ := listener.Accept()
		wrapped := tcpconn.WrapConnection(conn, 5*time.Minute)
		defer wrapped.Close()
		request, _ := wrapped.Receive()
		fmt.Println("server got", string(request))
		wrapped.Send([]byte("RESPONSE"))
		wrapped.Receive() // until the client is done
	}()

	// Client
	client := tcpconn.NewConnection(listener.Addr().String(), 5*time.Minute)
	client.Send([]byte("REQUEST"))
	response, _ := client.Receive()
	fmt.Println("client got", string(response))

	client.Close()
	<-served
	listener.Close()
	// Output:
	// server got REQUEST
	// client got RESPONSE
}

// The original README's "Bidirectional Streaming": one goroutine receives while
// another sends on the same connection (bounded here, and without the sleep).
func Example_bidirectionalStreaming() {
	server := startEchoServer()
	defer server.stop()
	conn := tcpconn.NewConnectionWithID(server.addr, "stream", 5*time.Minute)
	defer conn.Close()

	const n = 5
	var wg sync.WaitGroup
	wg.Add(2)
	// Both sides can send/receive concurrently
	go func() {
		defer wg.Done()
		for range n {
			data, _ := conn.Receive()
			fmt.Println("received", string(data))
		}
	}()
	go func() {
		defer wg.Done()
		for i := range n {
			conn.Send([]byte(fmt.Sprint("data ", i)))
		}
	}()
	wg.Wait()
	// Output:
	// received data 0
	// received data 1
	// received data 2
	// received data 3
	// received data 4
}

// The original README's "Connection Pool Sharing": three logical connections,
// one TCP connection.
func Example_connectionPoolSharing() {
	server := startEchoServer()
	defer server.stop()

	// All three share the same TCP connection
	conn1 := tcpconn.NewConnectionWithID(server.addr, "user-1", 5*time.Minute)
	conn2 := tcpconn.NewConnectionWithID(server.addr, "user-2", 5*time.Minute)
	conn3 := tcpconn.NewConnectionWithID(server.addr, "user-3", 5*time.Minute)

	for _, c := range []*tcpconn.Connection{conn1, conn2, conn3} {
		c.Send([]byte("hi from " + c.ID()))
	}
	for _, c := range []*tcpconn.Connection{conn1, conn2, conn3} {
		data, _ := c.Receive()
		fmt.Println(string(data))
	}
	fmt.Println("TCP connections:", server.accepted.Load())

	conn1.Close()
	conn2.Close()
	conn3.Close()
	// Output:
	// hi from user-1
	// hi from user-2
	// hi from user-3
	// TCP connections: 1
}

// The original README's "Connection IDs": the empty ID receives everything no
// ID claims; an ID receives only its own.
func ExampleNewConnectionWithID() {
	server := startEchoServer()
	defer server.stop()

	// No filtering - receives all messages
	c1 := tcpconn.NewConnection(server.addr, 5*time.Minute)
	defer c1.Close()

	// Filtered - only receives messages for "user-123"
	c2 := tcpconn.NewConnectionWithID(server.addr, "user-123", 5*time.Minute)
	defer c2.Close()

	c2.Send([]byte("for user-123"))
	c1.Send([]byte("for the catch-all"))
	d2, _ := c2.Receive()
	d1, _ := c1.Receive()
	fmt.Println(string(d1))
	fmt.Println(string(d2))
	// Output:
	// for the catch-all
	// for user-123
}

// The original README's "Idle Timeout" configuration (one at a time: a socket
// has one catch-all).
func ExampleNewConnection() {
	server := startEchoServer()
	defer server.stop()

	// Custom timeout
	c := tcpconn.NewConnection(server.addr, 10*time.Minute)
	c.Send([]byte("ten minutes"))
	data, _ := c.Receive()
	fmt.Println(string(data))
	c.Close()

	// Use default (5 minutes)
	c = tcpconn.NewConnection(server.addr, 0)
	c.Send([]byte("default"))
	data, _ = c.Receive()
	fmt.Println(string(data))
	c.Close()
	// Output:
	// ten minutes
	// default
}

// The original README's "Error Handling": errors tell the connection's state.
func ExampleConnection_Send() {
	server := startEchoServer()
	defer server.stop()
	conn := tcpconn.NewConnection(server.addr, 5*time.Minute)

	err := conn.Send([]byte("data"))
	if err != nil {
		// Connection closed, reconnect failed, or network error
		fmt.Println("send:", err)
	}
	data, err := conn.Receive()
	if err != nil {
		// Connection closed, reconnect failed, or network error
		fmt.Println("receive:", err)
	}
	fmt.Println(string(data))

	conn.Close()
	err = conn.Send([]byte("data"))
	fmt.Println(errors.Is(err, tcpconn.ErrClosed), err)
	// Output:
	// data
	// true tcpconn: connection closed
}
