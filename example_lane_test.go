// SPDX-License-Identifier: MIT

package tcpconn_test

import (
	"bytes"
	"fmt"
	"time"

	tcpconn "github.com/pulsyflux/tcp-conn"
)

// A bulk lane: small messages share the link, so the large message that
// follows opens a second socket to the server, and large messages travel
// on it from then on; LinkStats.Lane shows it. Order holds across both.
func Example_bulkLane() {
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
			go func() { // echo
				defer c.Close()
				for {
					m, err := c.Receive()
					if err != nil || c.Send(m) != nil {
						return
					}
				}
			}()
		}
	}()

	client, err := tcpconn.NewClient(nil)
	if err != nil {
		panic(err)
	}
	defer client.Close()
	c := client.Open(ln.Addr().String(), tcpconn.WithID("files"))
	file := bytes.Repeat([]byte("x"), 4<<20)
	for _, m := range [][]byte{[]byte("list"), file, []byte("done"), file} {
		if err := c.Send(m); err != nil {
			panic(err)
		}
		got, err := c.Receive()
		if err != nil {
			panic(err)
		}
		fmt.Println(len(got))
	}
	// The lane opens in the background: the first large message went in
	// parts on the socket meanwhile.
	for deadline := time.Now().Add(5 * time.Second); !client.Links()[0].Lane && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	fmt.Println("lane:", client.Links()[0].Lane)
	// Output:
	// 4
	// 4194304
	// 4
	// 4194304
	// lane: true
}
