// SPDX-License-Identifier: MIT

package tcpconn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// The transport matrix: the contract holds over plain TCP, TLS and an
// in-memory net.Pipe, so the tests of the user contract run on all three.

// testTransport is one way for a client to reach a server.
type testTransport struct {
	name string
	// listen returns a listener closed at cleanup, and the client Config
	// that reaches it: a copy of base (nil: zero) with the transport's
	// fields set. Plain TCP with a nil base returns a nil Config, so the
	// original TCP-Conn constructors (NewConnection*) are what the test
	// exercises.
	// Clients share a socket only with the same address and the same
	// *Config pointer: use one returned Config per test.
	listen func(t testing.TB, base *Config) (net.Listener, *Config)
}

var testTransports = []testTransport{
	{"tcp", func(t testing.TB, base *Config) (net.Listener, *Config) {
		return listenTCP(t), copyConfig(base)
	}},
	{"tls", func(t testing.TB, base *Config) (net.Listener, *Config) {
		ca := newTestCA(t, "tcpconn transport CA")
		srvTLS := &tls.Config{Certificates: []tls.Certificate{ca.leaf(t, "server")}, MinVersion: tls.VersionTLS13}
		ln := tls.NewListener(listenTCP(t), srvTLS)
		cfg := copyConfig(base)
		if cfg == nil {
			cfg = &Config{}
		}
		cfg.TLSConfig = &tls.Config{RootCAs: ca.pool, MinVersion: tls.VersionTLS13}
		return ln, cfg
	}},
	{"pipe", func(t testing.TB, base *Config) (net.Listener, *Config) {
		ln := newPipeListener()
		t.Cleanup(func() { ln.Close() })
		cfg := copyConfig(base)
		if cfg == nil {
			cfg = &Config{}
		}
		cfg.Dialer = ln.dial
		return ln, cfg
	}},
}

// forEachTransport runs f as the subtests "tcp", "tls" and "pipe".
func forEachTransport(t *testing.T, f func(t *testing.T, tr testTransport)) {
	t.Helper()
	for _, tr := range testTransports {
		t.Run(tr.name, func(t *testing.T) { f(t, tr) })
	}
}

func copyConfig(c *Config) *Config {
	if c == nil {
		return nil
	}
	cp := *c
	return &cp
}

// pipeListener is an in-memory net.Listener: its dial (a Config.Dialer)
// makes a net.Pipe pair and queues the server end for Accept. The queue is
// buffered, so a dial never waits for Accept.
type pipeListener struct {
	addr  pipeAddr
	conns chan net.Conn
	done  chan struct{}

	mu     sync.Mutex
	closed bool
}

// pipeAddr is a fake address, unique per listener.
type pipeAddr string

func (a pipeAddr) Network() string { return "pipe" }
func (a pipeAddr) String() string  { return string(a) }

var pipeListeners atomic.Int64

func newPipeListener() *pipeListener {
	return &pipeListener{
		addr:  pipeAddr(fmt.Sprintf("pipe-%d:1", pipeListeners.Add(1))),
		conns: make(chan net.Conn, 64),
		done:  make(chan struct{}),
	}
}

func (l *pipeListener) Addr() net.Addr { return l.addr }

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting and closes the server ends nobody accepted.
func (l *pipeListener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	close(l.done)
	for {
		select {
		case c := <-l.conns:
			c.Close()
		default:
			return nil
		}
	}
}

func (l *pipeListener) dial(ctx context.Context, network, address string) (net.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	client, server := net.Pipe()
	l.mu.Lock()
	defer l.mu.Unlock()
	var err error
	if l.closed {
		err = errors.New("connection refused")
	} else {
		select {
		case l.conns <- server:
			return client, nil
		default:
			err = errors.New("accept queue full")
		}
	}
	client.Close()
	server.Close()
	return nil, &net.OpError{Op: "dial", Net: "pipe", Addr: l.addr, Err: err}
}

// openClient makes a client Connection as a user does: with a nil cfg the
// original TCP-Conn NewConnection / NewConnectionWithID, otherwise Open
// with WithConfig. It is closed at cleanup.
func openClient(t testing.TB, addr string, cfg *Config, id string) *Connection {
	t.Helper()
	var c *Connection
	within(t, prompt, "the client constructor", func() error {
		switch {
		case cfg != nil:
			c = Open(addr, WithID(id), WithConfig(cfg))
		case id == "":
			c = NewConnection(addr, 0)
		default:
			c = NewConnectionWithID(addr, id, 0)
		}
		return nil
	})
	if c == nil {
		t.Fatal("the constructor returned nil")
	}
	return closePromptlyAtCleanup(t, c)
}

// wrapServer wraps an accepted socket as the original TCP-Conn server does
// (WrapConnection for the catch-all, WrapConnectionWithID otherwise),
// closed at cleanup.
func wrapServer(t testing.TB, conn net.Conn, id string) *Connection {
	t.Helper()
	var c *Connection
	within(t, prompt, "WrapConnection", func() error {
		if id == "" {
			c = WrapConnection(conn, 0)
		} else {
			c = WrapConnectionWithID(conn, id, 0)
		}
		return nil
	})
	if c == nil {
		t.Fatal("WrapConnection returned nil")
	}
	return closePromptlyAtCleanup(t, c)
}
