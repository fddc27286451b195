// SPDX-License-Identifier: MIT

package tcpconn_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	tcpconn "github.com/pulsyflux/tcp-conn"
)

// One Client, several replicas: a target with a scheme spreads its logical
// connections over every endpoint behind it (each ID on its own replica,
// the same one every time), follows the set as it changes, and moves IDs
// off a replica that drains without losing a message. In production the
// target is a DNS name, "dns:///orders.svc.cluster.local:7000" (a
// Kubernetes headless Service) or "srv:///_orders._tcp.service.consul";
// here a fixed list of two replicas on loopback.
func Example_fleet() {
	var replicas []string
	for name := range strings.SplitSeq("a b", " ") {
		ln, err := tcpconn.Listen("tcp", "127.0.0.1:0", nil)
		if err != nil {
			panic(err)
		}
		defer ln.Close()
		replicas = append(replicas, ln.Addr().String())
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
						if err != nil {
							return // the client moved the ID, or left
						}
						c.Send(append([]byte(name+": "), data...))
					}
				}()
			}
		}()
	}

	var linksUp atomic.Int64
	client, err := tcpconn.NewClient(&tcpconn.Config{
		// Called for LinkUp, LinkGoAway, LinkLost, EndpointEjected,
		// EndpointsResolved and ResolveFailed; it must return quickly.
		OnLinkEvent: func(ev tcpconn.LinkEvent) {
			if ev.Kind == tcpconn.LinkUp {
				linksUp.Add(1)
			}
		},
	})
	if err != nil {
		panic(err)
	}
	defer client.Close()
	target := "list:///" + strings.Join(replicas, ",")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	perReplica := map[string]int{}
	for i := range 100 {
		c := client.Open(target, tcpconn.WithID(fmt.Sprint("user-", i)))
		if err := c.SendContext(ctx, []byte("hi")); err != nil {
			panic(err)
		}
		reply, err := c.ReceiveContext(ctx)
		if err != nil {
			panic(err)
		}
		replica, _, _ := strings.Cut(string(reply), ":")
		perReplica[replica]++
	}
	fmt.Println("replicas used:", len(perReplica), "links up:", linksUp.Load())
	// Output: replicas used: 2 links up: 2
}
