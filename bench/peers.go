package bench

import (
	"io"
	"net"
	"sync"
	"time"

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
	return streamTransport("yamux", so,
		func(c net.Conn) (session, error) { return yamuxSession(c, false, 0) },
		func(c net.Conn) (session, error) { return yamuxSession(c, true, 0) })
}

// yamuxSession starts a yamux session on c, logging discarded. A positive
// keepAlive replaces yamux's 30 s ping interval, and its connection write
// timeout (which is also how long a ping waits for its answer) becomes
// three intervals, as smux's and tcpconn's keepalive timeouts are.
func yamuxSession(c net.Conn, server bool, keepAlive time.Duration) (session, error) {
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	if keepAlive > 0 {
		cfg.KeepAliveInterval = keepAlive
		cfg.ConnectionWriteTimeout = 3 * keepAlive
	}
	start := yamux.Client
	if server {
		start = yamux.Server
	}
	s, err := start(c, cfg)
	if err != nil {
		return session{}, err
	}
	return session{
		open:   func() (io.ReadWriteCloser, error) { return s.OpenStream() },
		accept: func() (io.ReadWriteCloser, error) { return s.AcceptStream() },
		close:  s.Close,
	}, nil
}

func smuxTransport() Transport { return smuxOver(plainTCP) }

func smuxOver(so sockets) Transport {
	return streamTransport("smux", so,
		func(c net.Conn) (session, error) { return smuxSession(c, false, 0) },
		func(c net.Conn) (session, error) { return smuxSession(c, true, 0) })
}

// smuxSession starts an smux session on c. A positive keepAlive replaces
// smux's 10 s NOP interval, and its keepalive timeout becomes three
// intervals (smux's own ratio, 10 s / 30 s).
func smuxSession(c net.Conn, server bool, keepAlive time.Duration) (session, error) {
	var cfg *smux.Config // nil: smux's defaults
	if keepAlive > 0 {
		cfg = smux.DefaultConfig()
		cfg.KeepAliveInterval = keepAlive
		cfg.KeepAliveTimeout = 3 * keepAlive
	}
	start := smux.Client
	if server {
		start = smux.Server
	}
	s, err := start(c, cfg)
	if err != nil {
		return session{}, err
	}
	return session{
		open:   func() (io.ReadWriteCloser, error) { return s.OpenStream() },
		accept: func() (io.ReadWriteCloser, error) { return s.AcceptStream() },
		close:  s.Close,
	}, nil
}
