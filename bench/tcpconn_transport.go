package bench

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	tcpconn "github.com/pulsyflux/tcp-conn"
)

// manyConfig lifts Config.MaxStreams for the workloads beyond the default
// (the 100,000-connection memory workload). The original constructors take no
// Config, so those workloads use Dial and Wrap with it; every Connection
// gets this same pointer, so they still share one socket.
var manyConfig = &tcpconn.Config{MaxStreams: 1 << 17}

// tcpconnTransport goes through the original TCP-Conn API: the client side
// is one NewConnectionWithID per logical connection (the library pools the
// socket), the server side one catch-all WrapConnection, or one
// WrapConnectionWithID per id when perConn is asked for; Receive returns a
// new slice per message.
// With pooled, Receive is ReceiveAppend into a buffer reused per Conn (the
// opt-in pooled path, what the Conn contract allows and raw does).
func tcpconnTransport(pooled bool) Transport { return tcpconnOver(pooled, nil, plainTCP) }

// tcpconnOver is tcpconnTransport with a client Config (nil: the original
// constructors) and the server's socket wrapper. With a Config the client
// goes through Dial, WithID and WithConfig: every Connection gets the same
// pointer, so they share one socket; that is how a client asks for TLS.
func tcpconnOver(pooled bool, clientCfg *tcpconn.Config, so sockets) Transport {
	name := "tcpconn"
	if pooled {
		name = "tcpconn-pooled"
	}
	wrap := func(c *tcpconn.Connection) Conn {
		if pooled {
			return &pooledConn{Connection: c}
		}
		return c
	}
	return Transport{
		Name:      name,
		NewSlices: !pooled,
		// NewConnectionWithID dials in the background and returns at once. A message
		// for an ID not yet wrapped on the server waits, unclaimed, for
		// WrapConnectionWithID.
		LazyDial: clientCfg == nil,
		Dial: func(addr string, n int) ([]Conn, func() error, error) {
			cs := make([]*tcpconn.Connection, n)
			for i := range cs {
				cfg := clientCfg
				if cfg == nil && n <= tcpconn.DefaultMaxStreams {
					cs[i] = tcpconn.NewConnectionWithID(addr, connID(i), 0)
					continue
				}
				if cfg == nil {
					cfg = manyConfig
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				c, err := tcpconn.Dial(ctx, addr, tcpconn.WithID(connID(i)), tcpconn.WithConfig(cfg))
				cancel()
				if err != nil {
					for _, c := range cs[:i] {
						c.Close()
					}
					return nil, nil, err
				}
				cs[i] = c
			}
			conns := make([]Conn, n)
			for i, c := range cs {
				conns[i] = wrap(c)
			}
			return conns, func() error {
				var first error
				for _, c := range cs {
					if err := c.Close(); err != nil && first == nil {
						first = err
					}
				}
				return first
			}, nil
		},
		Serve: func(sock net.Conn, n int, perConn bool, ready func(), handle func(Conn)) {
			sock = so.wrap(sock)
			cfg := (*tcpconn.Config)(nil)
			if n > tcpconn.DefaultMaxStreams {
				cfg = manyConfig
			}
			if !perConn {
				c, err := tcpconn.Wrap(sock, tcpconn.WithConfig(cfg))
				if err != nil {
					panic(err)
				}
				defer c.Close()
				ready()
				handle(wrap(c))
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
				go func() { defer wg.Done(); defer c.Close(); handle(wrap(c)) }()
			}
			wg.Wait()
		},
	}
}

// pooledConn receives through ReceiveAppend into one buffer per Conn.
type pooledConn struct {
	*tcpconn.Connection
	buf []byte
}

func (c *pooledConn) Receive() ([]byte, error) {
	var err error
	c.buf, err = c.ReceiveAppend(context.Background(), c.buf[:0])
	return c.buf, err
}

func connID(i int) string { return fmt.Sprintf("c%d", i) }
