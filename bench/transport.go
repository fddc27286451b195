// Package bench compares tcpconn with a hand-written floor ("raw"), with
// two stream multiplexers (hashicorp/yamux, xtaci/smux) and with gRPC
// streams on the same message-oriented workloads, all in one process over
// 127.0.0.1.
//
// It is its own module so that importers of tcpconn never pull the peers.
package bench

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"sync"
)

// Conn is one logical, message-oriented connection.
type Conn interface {
	Send(p []byte) error
	// Receive returns the next message. The slice may be reused by the next
	// Receive on the same Conn.
	Receive() ([]byte, error)
	Close() error
}

// Transport puts n logical connections on one TCP socket.
type Transport struct {
	Name string
	// Dial connects to addr and opens n logical connections sharing one
	// socket. closeAll closes them and the socket.
	Dial func(addr string, n int) (conns []Conn, closeAll func() error, err error)
	// Serve runs the server side of one accepted socket. n and perConn say
	// what the client will open: with perConn, a transport that must be told
	// its logical connections up front (tcpconn) creates one per id;
	// otherwise it may serve them all through one catch-all Conn. handle runs
	// in its own goroutine for each server-side Conn. ready is called once
	// the server side can take messages. Serve returns when every handle has
	// returned, which happens after the socket is closed.
	Serve func(sock net.Conn, n int, perConn bool, ready func(), handle func(Conn))
	// LazyDial means Dial may return before the socket is connected (the
	// first Send connects), so setup must not wait for the server.
	LazyDial bool
	// MaxConns, if positive, is the most logical connections one socket
	// can carry through the API used here; larger workloads are skipped.
	MaxConns int
	// SocketPerConn means Dial opens one socket per logical connection and
	// Serve runs once per socket (the floor of the Mixed workloads): the
	// harness then expects n accepts instead of one.
	SocketPerConn bool
	// NewSlices means Receive returns a new slice for every message, which
	// the caller keeps (tcpconn's Receive). The Mixed tables compare such a
	// transport with floor-alloc, the floor receiving the same way: in Go a
	// new multi-megabyte slice per message brings zeroing and collection
	// cycles that a reused buffer never pays, whichever transport fills it.
	NewSlices bool
}

// sockets says how a transport's client gets its socket and what its
// server puts around an accepted one: plain TCP, or TLS 1.3 (tls.go).
type sockets struct {
	dial func(addr string) (net.Conn, error)
	wrap func(net.Conn) net.Conn
}

var plainTCP = sockets{
	dial: func(addr string) (net.Conn, error) { return net.Dial("tcp", addr) },
	wrap: func(c net.Conn) net.Conn { return c },
}

// Transports returns every transport, raw first.
func Transports() []Transport {
	var ts []Transport
	for _, t := range []Transport{rawTransport(), yamuxTransport(), smuxTransport(), grpcTransport(), tcpconnTransport(false), tcpconnTransport(true)} {
		if t.Name != "" {
			ts = append(ts, t)
		}
	}
	return ts
}

// ---------------------------------------------------------------------------
// Length-prefixed framing on a byte stream: u32 big-endian length + payload.

type framed struct {
	rw   io.ReadWriteCloser
	rd   io.Reader    // rw, or a bufio.Reader on it (newRawFramed)
	tcp  *net.TCPConn // set when rw is a plain TCP socket: writev path
	hdr  [4]byte
	vec  [2][]byte   // backing array for bufs, so writev does not allocate
	bufs net.Buffers // consumed by WriteTo
	rhdr [4]byte
	wbuf []byte // header+payload for streams that lack writev
	rbuf []byte
	// newSlices: Receive allocates a new slice per message instead of
	// reusing rbuf (floor-alloc).
	newSlices bool
}

func newFramed(rw io.ReadWriteCloser) *framed {
	f := &framed{rw: rw, rd: rw}
	f.tcp, _ = rw.(*net.TCPConn)
	return f
}

// rawReadBuffer is raw's read buffer on a plain TCP socket, the size of
// tcpconn's: a message that arrived whole is read with one read call, its
// length and payload together, as tcpconn reads it. Unbuffered, raw would
// make a call for the length and another for the payload (six read calls
// per round trip to tcpconn's four) and look slower than it is. A
// *tls.Conn buffers a record already.
const rawReadBuffer = 64 << 10

// newRawFramed is raw's framing on sock: reads go through a bufio.Reader
// on a plain TCP socket.
func newRawFramed(sock net.Conn) *framed {
	f := newFramed(sock)
	f.rd = bufferedReader(sock)
	return f
}

// bufferedReader returns sock behind a rawReadBuffer bufio.Reader if it is
// a plain TCP socket, else sock itself.
func bufferedReader(sock net.Conn) io.Reader {
	if _, ok := sock.(*net.TCPConn); ok {
		return bufio.NewReaderSize(sock, rawReadBuffer)
	}
	return sock
}

// Send writes header and payload with one write call.
func (f *framed) Send(p []byte) error {
	if f.tcp != nil {
		binary.BigEndian.PutUint32(f.hdr[:], uint32(len(p)))
		f.vec = [2][]byte{f.hdr[:], p}
		f.bufs = f.vec[:]
		_, err := f.bufs.WriteTo(f.tcp)
		f.vec = [2][]byte{}
		return err
	}
	f.wbuf = binary.BigEndian.AppendUint32(f.wbuf[:0], uint32(len(p)))
	f.wbuf = append(f.wbuf, p...)
	_, err := f.rw.Write(f.wbuf)
	return err
}

func (f *framed) Receive() ([]byte, error) {
	if _, err := io.ReadFull(f.rd, f.rhdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(f.rhdr[:]))
	if cap(f.rbuf) < n || f.newSlices {
		f.rbuf = make([]byte, n)
	}
	f.rbuf = f.rbuf[:n]
	if _, err := io.ReadFull(f.rd, f.rbuf); err != nil {
		return nil, err
	}
	return f.rbuf, nil
}

func (f *framed) Close() error { return f.rw.Close() }

// ---------------------------------------------------------------------------
// raw: plain framing for one logical connection; for more, a minimal mux on
// one socket: frame [u32 conn index][u32 len][payload], one reader goroutine
// per side dispatching to per-connection channels, writes under a mutex.
// It has no flow control: a connection that stops reading stalls the socket.

func rawTransport() Transport { return rawOver(plainTCP) }

func rawOver(so sockets) Transport {
	return Transport{
		Name: "raw",
		Dial: func(addr string, n int) ([]Conn, func() error, error) {
			sock, err := so.dial(addr)
			if err != nil {
				return nil, nil, err
			}
			if n == 1 {
				f := newRawFramed(sock)
				return []Conn{f}, f.Close, nil
			}
			m := newRawMux(sock)
			conns := make([]Conn, n)
			for i := range conns {
				conns[i] = m.conn(uint32(i))
			}
			go m.readLoop(nil)
			return conns, m.close, nil
		},
		Serve: func(sock net.Conn, n int, _ bool, ready func(), handle func(Conn)) {
			sock = so.wrap(sock)
			if n == 1 {
				ready()
				handle(newRawFramed(sock))
				return
			}
			m := newRawMux(sock)
			var wg sync.WaitGroup
			ready()
			m.readLoop(func(c *rawMuxConn) {
				wg.Add(1)
				go func() { defer wg.Done(); handle(c) }()
			})
			wg.Wait()
		},
	}
}

// floorOver puts each logical connection on its own socket, framed as raw
// does: no multiplexing at all. In the Mixed workloads it is the floor: the
// probe and the bulk sender share only the CPU and the kernel. With
// newSlices it is floor-alloc, whose Receive returns a new slice per
// message (Transport.NewSlices).
func floorOver(so sockets, newSlices bool) Transport {
	name := "floor"
	if newSlices {
		name = "floor-alloc"
	}
	framedSock := func(sock net.Conn) *framed {
		f := newRawFramed(sock)
		f.newSlices = newSlices
		return f
	}
	return Transport{
		Name:          name,
		NewSlices:     newSlices,
		SocketPerConn: true,
		Dial: func(addr string, n int) ([]Conn, func() error, error) {
			conns := make([]Conn, 0, n)
			closeAll := func() error {
				for _, c := range conns {
					c.Close()
				}
				return nil
			}
			for range n {
				sock, err := so.dial(addr)
				if err != nil {
					closeAll()
					return nil, nil, err
				}
				conns = append(conns, framedSock(sock))
			}
			return conns, closeAll, nil
		},
		Serve: func(sock net.Conn, _ int, _ bool, ready func(), handle func(Conn)) {
			ready()
			handle(framedSock(so.wrap(sock)))
		},
	}
}

type rawMux struct {
	sock  net.Conn
	rd    io.Reader // sock, buffered (bufferedReader)
	wmu   sync.Mutex
	whdr  [8]byte
	wvec  [2][]byte
	wbufs net.Buffers
	mu    sync.Mutex
	conns map[uint32]*rawMuxConn
}

type rawMuxConn struct {
	m  *rawMux
	id uint32
	ch chan []byte
}

func newRawMux(sock net.Conn) *rawMux {
	return &rawMux{sock: sock, rd: bufferedReader(sock), conns: make(map[uint32]*rawMuxConn)}
}

func (m *rawMux) conn(id uint32) *rawMuxConn {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.conns[id]
	if c == nil {
		c = &rawMuxConn{m: m, id: id, ch: make(chan []byte, 4)}
		m.conns[id] = c
	}
	return c
}

// readLoop dispatches frames until the socket fails, then closes every
// connection's channel. accept, if set, is called for each new index.
func (m *rawMux) readLoop(accept func(*rawMuxConn)) {
	var hdr [8]byte
	for {
		if _, err := io.ReadFull(m.rd, hdr[:]); err != nil {
			break
		}
		id := binary.BigEndian.Uint32(hdr[:4])
		p := make([]byte, binary.BigEndian.Uint32(hdr[4:]))
		if _, err := io.ReadFull(m.rd, p); err != nil {
			break
		}
		m.mu.Lock()
		c := m.conns[id]
		m.mu.Unlock()
		if c == nil {
			if accept == nil {
				continue
			}
			c = m.conn(id)
			accept(c)
		}
		c.ch <- p
	}
	m.mu.Lock()
	for _, c := range m.conns {
		close(c.ch)
	}
	m.conns = nil
	m.mu.Unlock()
}

func (m *rawMux) close() error { return m.sock.Close() }

func (c *rawMuxConn) Send(p []byte) error {
	m := c.m
	m.wmu.Lock()
	defer m.wmu.Unlock()
	binary.BigEndian.PutUint32(m.whdr[:4], c.id)
	binary.BigEndian.PutUint32(m.whdr[4:], uint32(len(p)))
	m.wvec = [2][]byte{m.whdr[:], p}
	m.wbufs = m.wvec[:]
	_, err := m.wbufs.WriteTo(m.sock)
	m.wvec = [2][]byte{}
	return err
}

func (c *rawMuxConn) Receive() ([]byte, error) {
	p, ok := <-c.ch
	if !ok {
		return nil, io.EOF
	}
	return p, nil
}

func (c *rawMuxConn) Close() error { return nil }
