// SPDX-License-Identifier: MIT

// Command demo runs a tcpconn server and multiplexed clients in one process
// over 127.0.0.1 and prints what flows where.
package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"time"

	tcpconn "github.com/pulsyflux/tcp-conn"
)

func main() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	accepts := make(chan struct{}, 16)

	// The seed's server: a plain echo loop on each accepted socket's
	// catch-all. Its replies reach the logical connection they answer.
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			accepts <- struct{}{}
			fmt.Printf("server: accepted socket from %s\n", conn.RemoteAddr())
			c := tcpconn.WrapConnection(conn, time.Minute)
			go func() {
				defer c.Close()
				for {
					id, data, err := c.ReceiveFrom(context.Background())
					if err != nil {
						fmt.Printf("server: socket done: %v\n", err)
						return
					}
					fmt.Printf("server: %-14q -> %q, echoing\n", id, data)
					if err := c.Send(append([]byte("echo: "), data...)); err != nil {
						return
					}
				}
			}()
		}
	}()

	// Two logical connections; the pool gives them one TCP socket.
	user := tcpconn.NewConnectionWithID(addr, "user-session", time.Minute)
	admin := tcpconn.NewConnectionWithID(addr, "admin-session", time.Minute)
	for i := 1; i <= 2; i++ {
		for _, c := range []*tcpconn.Connection{user, admin} {
			msg := fmt.Sprintf("%s message %d", c.ID(), i)
			if err := c.Send([]byte(msg)); err != nil {
				log.Fatal(err)
			}
			reply, err := c.Receive()
			if err != nil {
				log.Fatal(err)
			}
			fmt.Printf("client %-14q <- %q\n", c.ID(), reply)
		}
	}
	fmt.Printf("sockets accepted for 2 logical connections: %d\n", len(accepts))
	s := tcpconn.ReadStats()
	fmt.Printf("stats: links=%d logical=%d messages in/out=%d/%d\n", s.Links, s.Connections, s.MessagesIn, s.MessagesOut)
	user.Close()
	admin.Close()
}
