package bench

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// TestDelayProxy checks the WAN path: a small round trip takes the delay
// (and not much more), a bulk transfer pipelines through it byte-exact
// instead of paying the delay per read, and a FIN passes through.
func TestDelayProxy(t *testing.T) {
	const rtt = 40 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p, err := newDelayProxy(ln.Addr().String(), rtt/2)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	// The server echoes one byte, then reads the rest until EOF and hands
	// it to the test.
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b := make([]byte, 1)
		if _, err := io.ReadFull(c, b); err != nil {
			return
		}
		c.Write(b)
		all, _ := io.ReadAll(c)
		got <- all
	}()

	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	c.Write([]byte{7})
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < rtt || took > rtt+50*time.Millisecond {
		t.Errorf("a 1-byte round trip took %v through a %v path", took, rtt)
	}

	// 64 MiB in 64 KiB writes: paid per read, the delay would make this
	// take minutes; pipelined it takes the delay plus the copying.
	bulk := messagePattern(64 << 20)
	start = time.Now()
	for off := 0; off < len(bulk); off += 64 << 10 {
		if _, err := c.Write(bulk[off : off+64<<10]); err != nil {
			t.Fatal(err)
		}
	}
	c.(*net.TCPConn).CloseWrite()
	select {
	case all := <-got:
		took := time.Since(start)
		if !bytes.Equal(all, bulk) {
			t.Fatalf("the server got %d bytes, not the %d sent, or different ones", len(all), len(bulk))
		}
		if took > 5*time.Second {
			t.Errorf("64 MiB took %v through a %v path: the proxy does not pipeline", took, rtt)
		}
		t.Logf("64 MiB through a %v path in %v (%.0f MB/s)", rtt, took.Round(time.Millisecond), float64(len(bulk))/took.Seconds()/1e6)
	case <-time.After(time.Minute):
		t.Fatal("the server never saw the FIN")
	}
}
