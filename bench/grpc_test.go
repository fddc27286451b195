package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// gRPC over the adapters (tcpconn's NetListener and DialConn): a real
// grpc.Server and grpc.ClientConn, with raw-bytes messages (grpcraw_test.go).
// Every test is bounded by a context; nothing sleeps to synchronise.

const grpcTestTimeout = 30 * time.Second

// 64 goroutines make unary calls at once through 4 ClientConns: 4 logical
// connections, each an HTTP/2 connection multiplexing 16 callers, all on
// one tcpconn socket.
func TestGRPCConcurrentUnaryOneSocket(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), grpcTestTimeout)
	defer cancel()
	p := startGRPC(t, "tcpconn", nil)
	const conns, callers, calls = 4, 64, 8
	ccs := make([]*grpc.ClientConn, conns)
	for i := range ccs {
		ccs[i] = p.client(t)
	}
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for g := range callers {
		wg.Go(func() {
			cc := ccs[g%conns]
			var out []byte
			for i := range calls {
				// Sizes from 8 B to about 70 KiB, tagged with caller and call.
				in := bodyPattern()[:8+(g*calls+i)*137]
				in = binary.BigEndian.AppendUint32(append([]byte(nil), in...), uint32(g<<16|i))
				if err := cc.Invoke(ctx, grpcEcho, in, &out); err != nil {
					errs <- fmt.Errorf("caller %d call %d: %w", g, i, err)
					return
				}
				if !bytes.Equal(out, in) {
					errs <- fmt.Errorf("caller %d call %d: %d bytes back, not the %d sent", g, i, len(out), len(in))
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := p.dials.Load(); n != conns {
		t.Errorf("the ClientConns dialled %d times, want %d", n, conns)
	}
	if s := p.cl.Stats(); s.Links != 1 || s.Connections != conns {
		t.Errorf("client: %d sockets carrying %d logical connections, want 1 carrying %d", s.Links, s.Connections, conns)
	}
	if s := p.ln.Stats(); s.Links != 1 {
		t.Errorf("server: %d sockets, want 1", s.Links)
	}
}

// A unary call whose deadline passes fails with DeadlineExceeded, the
// server's handler sees its context end, and the connection carries the
// next call.
func TestGRPCDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), grpcTestTimeout)
	defer cancel()
	hung := make(chan error, 1)
	p := startGRPC(t, "tcpconn", &grpcServerHooks{hangReturned: func(err error) { hung <- err }})
	cc := p.client(t)

	callCtx, callCancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer callCancel()
	var out []byte
	err := cc.Invoke(callCtx, grpcHang, []byte("wait"), &out)
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a call past its deadline = %v, want code DeadlineExceeded", err)
	}
	select {
	case err := <-hung:
		if err == nil {
			t.Error("the handler's context ended without an error")
		}
	case <-ctx.Done():
		t.Fatal("the server's handler never saw its context end")
	}
	if err := cc.Invoke(ctx, grpcEcho, []byte("after"), &out); err != nil || string(out) != "after" {
		t.Fatalf("a call after the deadline = %q, %v; want the echo", out, err)
	}
	if n := p.dials.Load(); n != 1 {
		t.Errorf("the client dialled %d times, want 1", n)
	}
}

// A server stream that ends early: the client gets what was sent, then an
// error, and nothing hangs. Three ways: the handler returns an error; the
// server Stops while the handler waits; the tcpconn Listener (and so the
// socket) closes while the handler waits.
func TestGRPCServerCutsStream(t *testing.T) {
	const chunk, total = 64 << 10, 256 << 10
	recvAll := func(t *testing.T, stream grpc.ClientStream, want int) error {
		t.Helper()
		got := 0
		var m []byte
		for {
			err := stream.RecvMsg(&m)
			if err != nil {
				if got != want && err != io.EOF {
					t.Errorf("the stream failed after %d bytes of %d: %v", got, want, err)
				}
				return err
			}
			if !bytes.Equal(m, bodyPattern()[got:got+len(m)]) {
				t.Fatalf("chunk at %d: wrong bytes", got)
			}
			got += len(m)
			if got == want {
				return nil
			}
		}
	}
	open := func(ctx context.Context, t *testing.T, cc *grpc.ClientConn, how byte) grpc.ClientStream {
		t.Helper()
		stream, err := cc.NewStream(ctx, grpcDownloadDesc, grpcDownload)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.SendMsg(downloadRequest{total: total, chunk: chunk, how: how}.encode()); err != nil {
			t.Fatal(err)
		}
		if err := stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		return stream
	}

	t.Run("handler returns an error", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), grpcTestTimeout)
		defer cancel()
		p := startGRPC(t, "tcpconn", nil)
		cc := p.client(t)
		stream := open(ctx, t, cc, 'f')
		if err := recvAll(t, stream, total); err != nil {
			t.Fatal(err)
		}
		var m []byte
		err := stream.RecvMsg(&m)
		if st := status.Convert(err); st.Code() != codes.Aborted || st.Message() != fmt.Sprintf("cut short after %d bytes", total) {
			t.Fatalf("the end of the stream = %v, want the handler's Aborted", err)
		}
		// The connection is still good.
		if err := cc.Invoke(ctx, grpcEcho, []byte("after"), &m); err != nil || string(m) != "after" {
			t.Fatalf("a call after the failed stream = %q, %v; want the echo", m, err)
		}
	})

	for _, cut := range []string{"server stops", "tcpconn listener closes"} {
		t.Run(cut, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), grpcTestTimeout)
			defer cancel()
			waiting := make(chan struct{})
			ended := make(chan error, 1)
			p := startGRPC(t, "tcpconn", &grpcServerHooks{
				downloadHung: func(int) { close(waiting) },
				downloadEnd:  func(_ int, err error) { ended <- err },
			})
			cc := p.client(t)
			stream := open(ctx, t, cc, 'h')
			if err := recvAll(t, stream, total); err != nil {
				t.Fatal(err)
			}
			select {
			case <-waiting:
			case <-ctx.Done():
				t.Fatal("the handler never reached its wait")
			}
			switch cut {
			case "server stops":
				go p.srv.Stop()
			default:
				go p.ln.Close()
			}
			var m []byte
			err := stream.RecvMsg(&m)
			if err == nil || err == io.EOF {
				t.Fatalf("RecvMsg after the cut = %v, want an error", err)
			}
			if code := status.Code(err); code != codes.Unavailable {
				t.Errorf("RecvMsg after the cut = %v, want code Unavailable", err)
			}
			t.Logf("the client saw: %v", err)
			select {
			case err := <-ended:
				if err == nil {
					t.Error("the handler returned nil after the cut")
				}
			case <-ctx.Done():
				t.Fatal("the server's handler never returned")
			}
			// A new call fails (the server is gone) instead of hanging.
			err = cc.Invoke(ctx, grpcEcho, []byte("after"), &m)
			if err == nil {
				t.Fatal("a call after the cut succeeded")
			}
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				t.Fatal("a call after the cut waited for the test's deadline")
			}
		})
	}
}

// 16 MiB, as a server stream of 64 KiB chunks and as one message each way
// (the message limits raised to 32 MiB on both ends).
func TestGRPC16MiB(t *testing.T) {
	const size = 16 << 20
	t.Run("server stream", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), grpcTestTimeout)
		defer cancel()
		p := startGRPC(t, "tcpconn", nil)
		cc := p.client(t)
		stream, err := cc.NewStream(ctx, grpcDownloadDesc, grpcDownload)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.SendMsg(downloadRequest{total: size, chunk: 64 << 10, how: 'o'}.encode()); err != nil {
			t.Fatal(err)
		}
		if err := stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		got, msgs := 0, 0
		var m []byte
		for {
			err := stream.RecvMsg(&m)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("after %d bytes: %v", got, err)
			}
			if got+len(m) > size || !bytes.Equal(m, bodyPattern()[got:got+len(m)]) {
				t.Fatalf("message %d at %d: wrong bytes", msgs, got)
			}
			got += len(m)
			msgs++
		}
		if got != size || msgs != size/(64<<10) {
			t.Fatalf("got %d bytes in %d messages, want %d in %d", got, msgs, size, size/(64<<10))
		}
	})

	t.Run("one message each way", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), grpcTestTimeout)
		defer cancel()
		p := startGRPC(t, "tcpconn", nil)
		cc := p.client(t)
		in := bodyPattern()[:size]
		var out []byte
		if err := cc.Invoke(ctx, grpcEcho, in, &out); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, in) {
			t.Fatalf("%d bytes back, not the %d sent", len(out), len(in))
		}
		// Beyond the raised limit: refused, not hung.
		big := make([]byte, grpcMaxMsg+1)
		if err := cc.Invoke(ctx, grpcEcho, big, &out); status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("a message over the limit = %v, want code ResourceExhausted", err)
		}
	})
}
