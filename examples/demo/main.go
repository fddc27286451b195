// SPDX-License-Identifier: MIT

// Command demo runs a tcpconn server and multiplexed clients in one process
// over 127.0.0.1 and prints what flows where, then the figures of each side
// and of the process, which add up.
package main

import (
	"fmt"
	"log"
	"time"

	tcpconn "github.com/pulsyflux/tcp-conn"
)

func main() {
	srv, err := tcpconn.Listen("tcp", "127.0.0.1:0", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	addr := srv.Addr().String()

	// The server: one goroutine per logical connection, whatever its ID.
	go func() {
		for {
			c, err := srv.Accept()
			if err != nil {
				return
			}
			fmt.Printf("server: new logical connection %q from %s\n", c.ID(), c.RemoteAddr())
			go func() {
				defer c.Close()
				for {
					data, err := c.Receive()
					if err != nil {
						return
					}
					fmt.Printf("server: %-15q -> %q, echoing\n", c.ID(), data)
					if err := c.Send(append([]byte("echo: "), data...)); err != nil {
						return
					}
				}
			}()
		}
	}()

	// Two logical connections with the original constructors; the pool
	// (DefaultClient) gives them one TCP socket.
	user := tcpconn.NewConnectionWithID(addr, "user-session", time.Minute)
	admin := tcpconn.NewConnectionWithID(addr, "admin-session", time.Minute)
	defer user.Close()
	defer admin.Close()
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
			fmt.Printf("client %-15q <- %q\n", c.ID(), reply)
		}
	}

	show := func(who string, s tcpconn.Stats) {
		fmt.Printf("%-8s sockets=%d logical connections=%d messages in/out=%d/%d\n", who, s.Links, s.Connections, s.MessagesIn, s.MessagesOut)
	}
	fmt.Println("\nfigures (both ends live in this process, so the process counts the socket twice):")
	show("client:", tcpconn.DefaultClient.Stats())
	show("server:", srv.Stats())
	show("process:", tcpconn.ReadStats())
	for _, l := range tcpconn.DefaultClient.Links() {
		fmt.Printf("client socket %s %s -> %s\n", l.ID, l.LocalAddr, l.RemoteAddr)
	}
	for _, l := range srv.Links() {
		fmt.Printf("server socket %s %s <- %s (same ID on both ends)\n", l.ID, l.LocalAddr, l.RemoteAddr)
	}
}
