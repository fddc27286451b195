package bench

import (
	"io"
	"net"
	"sync"

	"github.com/hashicorp/yamux"
	"github.com/xtaci/smux"
)

// session is what yamux and smux have in common once wrapped.
type session struct {
	open   func() (io.ReadWriteCloser, error)
	accept func() (io.ReadWriteCloser, error)
	close  func() error
}

// streamTransport runs one stream per logical connection, messages
// length-prefixed on the stream.
func streamTransport(name string, so sockets, client, server func(net.Conn) (session, error)) Transport {
	return Transport{
		Name: name,
		Dial: func(addr string, n int) ([]Conn, func() error, error) {
			sock, err := so.dial(addr)
			if err != nil {
				return nil, nil, err
			}
			s, err := client(sock)
			if err != nil {
				sock.Close()
				return nil, nil, err
			}
			conns := make([]Conn, n)
			for i := range conns {
				st, err := s.open()
				if err != nil {
					s.close()
					return nil, nil, err
				}
				conns[i] = newFramed(st)
			}
			// Close the streams one by one before the session: a yamux
			// v0.1.2 Stream.Read blocked when its session closes spins
			// until Session.Close reaches that stream, which with 20,000
			// blocked readers took minutes. Closing streams first lets each
			// peer reader see EOF and return.
			closeAll := func() error {
				for _, c := range conns {
					c.Close()
				}
				return s.close()
			}
			return conns, closeAll, nil
		},
		Serve: func(sock net.Conn, n int, _ bool, ready func(), handle func(Conn)) {
			sock = so.wrap(sock)
			s, err := server(sock)
			if err != nil {
				sock.Close()
				ready()
				return
			}
			defer s.close()
			ready()
			var wg sync.WaitGroup
			for {
				st, err := s.accept()
				if err != nil {
					break
				}
				wg.Add(1)
				go func() { defer wg.Done(); defer st.Close(); handle(newFramed(st)) }()
			}
			wg.Wait()
		},
	}
}

func yamuxTransport() Transport { return yamuxOver(plainTCP) }

func yamuxOver(so sockets) Transport {
	cfg := func() *yamux.Config {
		c := yamux.DefaultConfig()
		c.LogOutput = io.Discard
		return c
	}
	wrap := func(s *yamux.Session) session {
		return session{
			open:   func() (io.ReadWriteCloser, error) { return s.OpenStream() },
			accept: func() (io.ReadWriteCloser, error) { return s.AcceptStream() },
			close:  s.Close,
		}
	}
	return streamTransport("yamux", so,
		func(c net.Conn) (session, error) { s, err := yamux.Client(c, cfg()); return wrap(s), err },
		func(c net.Conn) (session, error) { s, err := yamux.Server(c, cfg()); return wrap(s), err })
}

func smuxTransport() Transport { return smuxOver(plainTCP) }

func smuxOver(so sockets) Transport {
	wrap := func(s *smux.Session) session {
		return session{
			open:   func() (io.ReadWriteCloser, error) { return s.OpenStream() },
			accept: func() (io.ReadWriteCloser, error) { return s.AcceptStream() },
			close:  s.Close,
		}
	}
	return streamTransport("smux", so,
		func(c net.Conn) (session, error) { s, err := smux.Client(c, nil); return wrap(s), err },
		func(c net.Conn) (session, error) { s, err := smux.Server(c, nil); return wrap(s), err })
}
