package bench

import (
	"context"
	"fmt"
	"net"
	"time"

	tcpconn "github.com/pulsyflux/tcp-conn"
)

// The transports as the Sockets workload uses them: one logical connection
// per physical socket, and a keepalive every interval (raw has none: the
// reference is what the socket and the application's own goroutine cost).

// SocketsTransports are the transports the Sockets workload runs, in
// table order.
var SocketsTransports = []string{"raw", "yamux", "smux", "tcpconn"}

// socketDialTimeout bounds one dial, handshakes included.
const socketDialTimeout = 10 * time.Second

// socketPeer is one transport for the Sockets workload.
type socketPeer struct {
	// dial opens one socket to addr and one logical connection on it;
	// closing the Conn closes everything dial made.
	dial func(addr string) (Conn, error)
	// wrap makes the server side of one accepted socket and returns its
	// logical connection once the client has opened it; closing the Conn
	// closes everything wrap made (the server closes sock as well).
	wrap func(sock net.Conn) (Conn, error)
}

func dialSocket(addr string) (net.Conn, error) {
	return net.DialTimeout("tcp", addr, socketDialTimeout)
}

func socketPeerFor(name string, keepAlive time.Duration) (socketPeer, error) {
	switch name {
	case "raw":
		return socketPeer{
			dial: func(addr string) (Conn, error) {
				sock, err := dialSocket(addr)
				if err != nil {
					return nil, err
				}
				return newFramed(sock), nil
			},
			wrap: func(sock net.Conn) (Conn, error) { return newFramed(sock), nil },
		}, nil
	case "yamux":
		return sessionPeer(yamuxSession, keepAlive), nil
	case "smux":
		return sessionPeer(smuxSession, keepAlive), nil
	case "tcpconn":
		return tcpconnPeer(keepAlive)
	}
	return socketPeer{}, fmt.Errorf("no transport %q for the Sockets workload", name)
}

// sessionPeer opens (client) or accepts (server) one stream per session;
// the stream is closed before its session (see streamTransport).
func sessionPeer(start func(c net.Conn, server bool, keepAlive time.Duration) (session, error), keepAlive time.Duration) socketPeer {
	onSession := func(sock net.Conn, server bool) (Conn, error) {
		s, err := start(sock, server, keepAlive)
		if err != nil {
			return nil, err
		}
		open := s.open
		if server {
			open = s.accept
		}
		stream, err := open()
		if err != nil {
			s.close()
			return nil, err
		}
		return sessionStream{newFramed(stream), s}, nil
	}
	return socketPeer{
		dial: func(addr string) (Conn, error) {
			sock, err := dialSocket(addr)
			if err != nil {
				return nil, err
			}
			c, err := onSession(sock, false)
			if err != nil {
				sock.Close()
			}
			return c, err
		},
		wrap: func(sock net.Conn) (Conn, error) { return onSession(sock, true) },
	}
}

// sessionStream is a session's one stream, framed; Close closes the stream,
// then the session.
type sessionStream struct {
	*framed
	s session
}

func (c sessionStream) Close() error {
	err := c.framed.Close()
	if err2 := c.s.close(); err == nil {
		err = err2
	}
	return err
}

// tcpconnPeer gives each socket's client its own Client (a Client pools
// one socket per address, so N sockets to one server need N Clients, as N
// client processes would have) dialling the catch-all; the server wraps
// each accepted socket's catch-all. Both sides use the same Config.
func tcpconnPeer(keepAlive time.Duration) (socketPeer, error) {
	cfg := &tcpconn.Config{KeepAliveInterval: keepAlive}
	if err := cfg.Validate(); err != nil {
		return socketPeer{}, err
	}
	return socketPeer{
		dial: func(addr string) (Conn, error) {
			cl, err := tcpconn.NewClient(cfg)
			if err != nil {
				return nil, err
			}
			ctx, cancel := context.WithTimeout(context.Background(), socketDialTimeout)
			defer cancel()
			c, err := cl.Dial(ctx, addr)
			if err != nil {
				cl.Close()
				return nil, err
			}
			return tcpconnSocket{c, cl}, nil
		},
		wrap: func(sock net.Conn) (Conn, error) {
			return tcpconn.Wrap(sock, tcpconn.WithConfig(cfg))
		},
	}, nil
}

// tcpconnSocket is a client's one logical connection and its own Client.
type tcpconnSocket struct {
	*tcpconn.Connection
	client *tcpconn.Client
}

func (s tcpconnSocket) Close() error {
	s.Connection.Close()
	return s.client.Close()
}

func (s tcpconnSocket) redialled() bool { return s.client.Stats().Reconnects > 0 }

// redialler is a client Conn that dials a new socket by itself after its
// socket is lost (tcpconn, on the next call): a round trip after that did
// not go over the socket the workload measures.
type redialler interface{ redialled() bool }
