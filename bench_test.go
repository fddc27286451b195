// SPDX-License-Identifier: MIT

package tcpconn

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
)

// In-package benchmarks for profiling the hot paths; the comparison with raw
// TCP, yamux and smux lives in the bench/ module.

func BenchmarkRoundTrip(b *testing.B) {
	for _, size := range []int{100, 1 << 10, 200 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("size=%d/raw", size), func(b *testing.B) { rawRoundTrip(b, size) })
		b.Run(fmt.Sprintf("size=%d/tcpconn", size), func(b *testing.B) {
			ln := listenTCP(b)
			serveEcho(b, ln)
			c := NewConnectionWithID(ln.Addr().String(), "bench", 0)
			defer c.Close()
			msg := make([]byte, size)
			buf := make([]byte, 0, size)
			ctx := context.Background()
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := c.Send(msg); err != nil {
					b.Fatal(err)
				}
				var err error
				if buf, err = c.ReceiveAppend(ctx, buf[:0]); err != nil || len(buf) != size {
					b.Fatal(err, len(buf))
				}
			}
		})
	}
}

// BenchmarkSendOnly measures Send alone: the server drains, and the timer
// stops once it has received every message.
func BenchmarkSendOnly(b *testing.B) {
	ln := listenTCP(b)
	got := make(chan int, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		s := WrapConnectionWithID(conn, "bench", 0)
		defer s.Close()
		got <- drainCount(s)
	}()
	c := NewConnectionWithID(ln.Addr().String(), "bench", 0)
	defer c.Close()
	sendCounted(b, c, make([]byte, 1<<10), got)
}

// drainCount receives until an empty message (the end marker) or an error
// and returns how many messages came before it.
func drainCount(s *Connection) int {
	var buf []byte
	var err error
	for n := 0; ; n++ {
		if buf, err = s.ReceiveAppend(context.Background(), buf[:0]); err != nil || len(buf) == 0 {
			return n
		}
	}
}

// sendCounted times b.N Sends of msg on c, then sends the end marker and
// checks the count the server's drainCount reports on got.
func sendCounted(b *testing.B, c *Connection, msg []byte, got <-chan int) {
	b.Helper()
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := c.Send(msg); err != nil {
			b.Fatal(err)
		}
	}
	if err := c.Send(nil); err != nil {
		b.Fatal(err)
	}
	if n := <-got; n != b.N {
		b.Fatalf("server got %d of %d", n, b.N)
	}
}

// BenchmarkHeader compares the build's big-endian accessors (frame_amd64.go
// on amd64, frame_generic.go with -tags purego or elsewhere) on a data
// header round trip; run it both ways to see whether the amd64 file earns
// its place.
func BenchmarkHeader(b *testing.B) {
	var buf [maxDataHeader]byte
	var sum uint32
	for i := 0; i < b.N; i++ {
		h := appendDataHeader(buf[:0], "user-session", i)
		sum += loadU32(h[len(h)-sizeOfLength:])
	}
	if sum == 1 {
		b.Log(sum)
	}
}

// rawRoundTrip is the floor: a length-prefixed echo on a plain socket, one
// write per message, reads through a bufio.Reader the size of tcpconn's
// read buffer (so a message is one read call, as in tcpconn), in the same
// run as the tcpconn numbers.
func rawRoundTrip(b *testing.B, size int) {
	ln := listenTCP(b)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		rd := bufio.NewReaderSize(conn, readBufferSize)
		var buf []byte
		for {
			if buf, err = rawRead(rd, buf); err != nil {
				return
			}
			if rawWrite(conn, buf) != nil {
				return
			}
		}
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	rd := bufio.NewReaderSize(conn, readBufferSize)
	msg := make([]byte, size)
	var buf []byte
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := rawWrite(conn, msg); err != nil {
			b.Fatal(err)
		}
		if buf, err = rawRead(rd, buf); err != nil || len(buf) != size {
			b.Fatal(err)
		}
	}
}

func rawWrite(conn net.Conn, msg []byte) error {
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(msg)))
	bufs := net.Buffers{hdr[:], msg}
	_, err := bufs.WriteTo(conn)
	return err
}

func rawRead(rd io.Reader, buf []byte) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(rd, hdr[:]); err != nil {
		return buf, err
	}
	n := int(binary.BigEndian.Uint32(hdr[:]))
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	_, err := io.ReadFull(rd, buf)
	return buf, err
}

// BenchmarkMux measures 1 KiB round trips from many logical connections on
// one socket, each served by its own WrapConnectionWithID goroutine, or
// (server=catch-all) all by one WrapConnection catch-all that answers
// each message with Send, as the original TCP-Conn's servers do.
func BenchmarkMux(b *testing.B) {
	for _, n := range []int{16, 256} {
		for _, catchAll := range []bool{false, true} {
			name := fmt.Sprintf("conns=%d", n)
			if catchAll {
				name += "/server=catch-all"
			}
			b.Run(name, func(b *testing.B) { benchMux(b, n, catchAll) })
		}
	}
}

func benchMux(b *testing.B, n int, catchAll bool) {
	ln := listenTCP(b)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		if catchAll {
			go echoLoop(WrapConnection(conn, 0))
			return
		}
		for i := 0; i < n; i++ {
			s := WrapConnectionWithID(conn, fmt.Sprint("m", i), 0)
			go func() {
				defer s.Close()
				for {
					data, err := s.Receive()
					if err != nil || s.Send(data) != nil {
						return
					}
				}
			}()
		}
	}()
	conns := make([]*Connection, n)
	for i := range conns {
		conns[i] = NewConnectionWithID(ln.Addr().String(), fmt.Sprint("m", i), 0)
		defer conns[i].Close()
	}
	msg := make([]byte, 1<<10)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	per := b.N/n + 1
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 0, len(msg))
			for i := 0; i < per; i++ {
				if err := c.Send(msg); err != nil {
					b.Error(err)
					return
				}
				var err error
				if buf, err = c.ReceiveAppend(context.Background(), buf[:0]); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// BenchmarkSocketBuffers streams 64 KiB messages one way with the kernel's
// auto-tuned socket buffers (0) and with SO_SNDBUF/SO_RCVBUF fixed, to back
// the Config.SocketReadBuffer/SocketWriteBuffer advice with a number.
func BenchmarkSocketBuffers(b *testing.B) {
	for _, size := range []int{0, 64 << 10, 256 << 10, 4 << 20} {
		b.Run(fmt.Sprintf("buf=%d", size), func(b *testing.B) {
			cfg := &Config{SocketReadBuffer: size, SocketWriteBuffer: size}
			ln := listenTCP(b)
			got := make(chan int, 1)
			go func() {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				s, err := Wrap(conn, WithID("s"), WithConfig(cfg))
				if err != nil {
					return
				}
				defer s.Close()
				got <- drainCount(s)
			}()
			c, err := Dial(context.Background(), ln.Addr().String(), WithID("s"), WithConfig(cfg))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			sendCounted(b, c, make([]byte, 64<<10), got)
		})
	}
}

// BenchmarkReceiveContext: ReceiveAppend with a context that cannot be
// canceled (context.Background) and with one that can, on a stream of
// 64 KiB messages from the server and on 1 KiB round trips. A receiver
// with a context that can be canceled must not wait in a read that only a
// deadline interrupts: on Linux TCP it reads what has arrived itself
// (noWait reads) and leaves the waiting to the background reader; where it
// cannot, every message is handed over by the background reader, which
// takes about twice as long on the stream.
func BenchmarkReceiveContext(b *testing.B) {
	contexts := []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
	}{
		{"background", func() (context.Context, context.CancelFunc) { return context.Background(), func() {} }},
		{"cancelable", func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) }},
	}
	for _, cc := range contexts {
		b.Run("stream64KB/"+cc.name, func(b *testing.B) {
			ln := listenTCP(b)
			msg := make([]byte, 64<<10)
			serveConns(b, ln, func(conn net.Conn) {
				s := WrapConnectionWithID(conn, "bench", 0)
				defer s.Close()
				for s.Send(msg) == nil { // until the client closes
				}
			})
			c := NewConnectionWithID(ln.Addr().String(), "bench", 0)
			defer c.Close()
			ctx, cancel := cc.ctx()
			defer cancel()
			buf := make([]byte, 0, len(msg))
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				var err error
				if buf, err = c.ReceiveAppend(ctx, buf[:0]); err != nil || len(buf) != len(msg) {
					b.Fatal(err, len(buf))
				}
			}
		})
	}
	for _, cc := range contexts {
		b.Run("rtt1KB/"+cc.name, func(b *testing.B) {
			ln := listenTCP(b)
			serveEcho(b, ln)
			c := NewConnectionWithID(ln.Addr().String(), "bench", 0)
			defer c.Close()
			ctx, cancel := cc.ctx()
			defer cancel()
			msg := make([]byte, 1<<10)
			buf := make([]byte, 0, len(msg))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if err := c.Send(msg); err != nil {
					b.Fatal(err)
				}
				var err error
				if buf, err = c.ReceiveAppend(ctx, buf[:0]); err != nil || len(buf) != len(msg) {
					b.Fatal(err, len(buf))
				}
			}
		})
	}
}
