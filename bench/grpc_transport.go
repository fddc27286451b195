package bench

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// gRPC as a peer: one grpc.ClientConn, its one HTTP/2 connection on the
// harness's socket, and one bidirectional stream per logical connection,
// each message one gRPC message (bytesCodec). Everything else is gRPC's
// default, as a user would get it: flow-control windows with BDP
// estimation, no keepalive, no limit on concurrent streams (grpc-go's
// server sends no SETTINGS_MAX_CONCURRENT_STREAMS; its client allows 100
// streams only until the server's first SETTINGS frame arrives).

// grpcMaxMsg is the message size limit, raised from gRPC's 4 MiB receive
// default so that 16 MiB messages (Mixed16MB, the adapter tests) pass. The
// transport raises only the receive limits, on both ends: the send limit's
// default is already 2 GiB.
const grpcMaxMsg = 32 << 20

const (
	grpcConnService = "tcpconnbench.Conns"
	grpcConnMethod  = "/" + grpcConnService + "/Conn" // bidirectional stream: one logical connection
)

var grpcConnDesc = grpc.StreamDesc{StreamName: "Conn", ServerStreams: true, ClientStreams: true}

var errSocketTaken = errors.New("bench: the gRPC client's one socket was dialled already")

func grpcTransport() Transport { return grpcOver(plainTCP) }

// grpcOver is the gRPC transport on so's sockets. Over TLS, gRPC runs with
// insecure credentials on the *tls.Conn the harness made, as yamux and smux
// do, rather than doing the handshake itself.
func grpcOver(so sockets) Transport {
	return Transport{
		Name: "grpc",
		Dial: func(addr string, n int) ([]Conn, func() error, error) {
			sock, err := so.dial(addr)
			if err != nil {
				return nil, nil, err
			}
			cc, err := grpc.NewClient("passthrough:///"+addr,
				grpc.WithContextDialer(dialOnce(sock)),
				grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithDefaultCallOptions(
					grpc.ForceCodecV2(bytesCodec{}),
					grpc.MaxCallRecvMsgSize(grpcMaxMsg),
				),
			)
			if err != nil {
				sock.Close()
				return nil, nil, err
			}
			// The streams live until closeAll cancels their context.
			ctx, cancel := context.WithCancel(context.Background())
			closeAll := func() error {
				cancel()
				err := cc.Close()
				sock.Close() // in case gRPC never dialled
				return err
			}
			conns := make([]Conn, n)
			for i := range conns {
				st, err := cc.NewStream(ctx, &grpcConnDesc, grpcConnMethod)
				if err != nil {
					closeAll()
					return nil, nil, err
				}
				conns[i] = &grpcConn{stream: st}
			}
			return conns, closeAll, nil
		},
		Serve: func(sock net.Conn, _ int, _ bool, ready func(), handle func(Conn)) {
			conn := &closeNotifyConn{Conn: so.wrap(sock), closed: make(chan struct{})}
			srv := newGRPCConnServer(handle,
				grpc.MaxRecvMsgSize(grpcMaxMsg),
				// Stop then waits for every handler: Serve's contract.
				grpc.WaitForHandlers(true),
			)
			served := make(chan struct{})
			go func() {
				defer close(served)
				srv.Serve(newConnListener(conn))
			}()
			ready()
			// gRPC closes the socket once it fails or the client leaves.
			<-conn.closed
			srv.Stop()
			<-served
		},
	}
}

// newGRPCConnServer is a grpc.Server whose one service takes each
// bidirectional stream as a logical connection and hands it to handle; the
// stream ends when handle returns. Messages are bytesCodec's.
func newGRPCConnServer(handle func(Conn), opts ...grpc.ServerOption) *grpc.Server {
	srv := grpc.NewServer(append([]grpc.ServerOption{grpc.ForceServerCodecV2(bytesCodec{})}, opts...)...)
	conns := grpcConnDesc
	conns.Handler = func(_ any, st grpc.ServerStream) error {
		handle(&grpcConn{stream: st})
		return nil
	}
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: grpcConnService,
		HandlerType: (*any)(nil),
		Streams:     []grpc.StreamDesc{conns},
	}, nil)
	return srv
}

// grpcConn is one logical connection: a gRPC stream, client or server end.
type grpcConn struct {
	stream interface {
		SendMsg(m any) error
		RecvMsg(m any) error
	}
	buf []byte // the last message received, reused by the next
}

func (c *grpcConn) Send(p []byte) error { return c.stream.SendMsg(p) }

func (c *grpcConn) Receive() ([]byte, error) {
	if err := c.stream.RecvMsg(&c.buf); err != nil {
		return nil, err
	}
	return c.buf, nil
}

// Close half-closes a client stream (the server's Receive then returns
// io.EOF); a server stream ends when its handler returns.
func (c *grpcConn) Close() error {
	if cs, ok := c.stream.(grpc.ClientStream); ok {
		return cs.CloseSend()
	}
	return nil
}

// dialOnce is a gRPC dialer that returns sock the first time and fails
// after: gRPC redials a lost connection, and a run uses one socket.
func dialOnce(sock net.Conn) func(context.Context, string) (net.Conn, error) {
	var dialled atomic.Bool
	return func(context.Context, string) (net.Conn, error) {
		if dialled.Swap(true) {
			return nil, errSocketTaken
		}
		return sock, nil
	}
}

// closeNotifyConn closes closed when the connection is first closed.
type closeNotifyConn struct {
	net.Conn
	once   sync.Once
	closed chan struct{}
}

func (c *closeNotifyConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// connListener is a net.Listener that accepts one given connection, then
// waits in Accept until it is closed: how a grpc.Server serves a socket
// accepted elsewhere.
type connListener struct {
	conns     chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
	addr      net.Addr
}

func newConnListener(c net.Conn) *connListener {
	l := &connListener{conns: make(chan net.Conn, 1), closed: make(chan struct{}), addr: c.LocalAddr()}
	l.conns <- c
	return l
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case <-l.closed:
		return nil, net.ErrClosed
	default:
	}
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }
