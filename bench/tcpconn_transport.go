package bench

import (
	"fmt"
	"net"
	"sync"

	tcpconn "github.com/pulsyflux/tcp-conn"
)

// tcpconnTransport uses the seed API only: the client side is one
// NewConnectionWithID per logical connection (the library pools the socket);
// the server side is one catch-all WrapConnection, or one
// WrapConnectionWithID per id when perConn is asked for.
func tcpconnTransport() Transport {
	return Transport{
		Name: "tcpconn",
		// NewConnectionWithID does not dial: the first Send does. A message
		// for an ID not yet wrapped on the server waits, unclaimed, for
		// WrapConnectionWithID.
		LazyDial: true,
		// Config.MaxStreams lifts this, but the seed API takes no Config.
		MaxConns: tcpconn.DefaultMaxStreams,
		Dial: func(addr string, n int) ([]Conn, func() error, error) {
			conns := make([]Conn, n)
			for i := range conns {
				conns[i] = tcpconn.NewConnectionWithID(addr, connID(i), 0)
			}
			return conns, func() error {
				var first error
				for _, c := range conns {
					if err := c.Close(); err != nil && first == nil {
						first = err
					}
				}
				return first
			}, nil
		},
		Serve: func(sock net.Conn, n int, perConn bool, ready func(), handle func(Conn)) {
			if !perConn {
				c := tcpconn.WrapConnection(sock, 0)
				defer c.Close()
				ready()
				handle(c)
				return
			}
			var wg sync.WaitGroup
			cs := make([]*tcpconn.Connection, n)
			for i := range cs {
				cs[i] = tcpconn.WrapConnectionWithID(sock, connID(i), 0)
			}
			ready()
			for _, c := range cs {
				wg.Add(1)
				go func() { defer wg.Done(); defer c.Close(); handle(c) }()
			}
			wg.Wait()
		},
	}
}

func connID(i int) string { return fmt.Sprintf("c%d", i) }
