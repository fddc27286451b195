// SPDX-License-Identifier: MIT

package tcpconn

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"
)

// testCA is a certificate authority made in the test; leaf issues
// certificates for 127.0.0.1 signed by it.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

func (ca *testCA) leaf(t testing.TB, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// mutualTLSListener is a Listener (closed at cleanup) that requires client
// certificates, and makes client Configs whose certificate names a client.
func mutualTLSListener(t testing.TB) (*Listener, func(client string) *Config) {
	t.Helper()
	ca := newTestCA(t, "tcpconn test CA")
	srvTLS := &tls.Config{
		Certificates: []tls.Certificate{ca.leaf(t, "server")},
		ClientCAs:    ca.pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}
	srv, err := NewListener(tls.NewListener(listenTCP(t), srvTLS), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv, func(client string) *Config {
		return &Config{TLSConfig: &tls.Config{RootCAs: ca.pool, Certificates: []tls.Certificate{ca.leaf(t, client)}}}
	}
}

// TestTLSWrapConnection: a server wraps each accepted *tls.Conn (the
// original TCP-Conn WrapConnection) and a client dials with
// Config.TLSConfig.
func TestTLSWrapConnection(t *testing.T) {
	ca := newTestCA(t, "tcpconn test CA")
	srvTLS := &tls.Config{Certificates: []tls.Certificate{ca.leaf(t, "server")}, MinVersion: tls.VersionTLS13}
	ln := listenTCP(t)
	serveConns(t, ln, func(conn net.Conn) {
		echoLoop(WrapConnection(tls.Server(conn, srvTLS), 0))
	})
	cfg := &Config{TLSConfig: &tls.Config{RootCAs: ca.pool, MinVersion: tls.VersionTLS13}}
	a := mustDial(t, ln.Addr().String(), WithID("tls-a"), WithConfig(cfg))
	b := mustDial(t, ln.Addr().String(), WithID("tls-b"), WithConfig(cfg))
	if _, ok := linkOf(a).conn.(*tls.Conn); !ok {
		t.Fatalf("client link is %T, want *tls.Conn", linkOf(a).conn)
	}
	var bytes int
	for i, n := range []int{0, 1, 100, 16 << 10, 16<<10 + 1, 1 << 20} {
		mustRoundTrip(t, a, pattern(n, byte(i)))
		mustRoundTrip(t, b, pattern(n, byte(i+50)))
		bytes += 4 * n
	}
	t.Logf("figures: TLS 1.3 WrapConnection: 24 messages, %d payload bytes echoed over 2 logical connections on 1 TLS socket", bytes)
}

// TestTLSListener: NewListener over tls.NewListener, with mutual TLS.
func TestTLSListener(t *testing.T) {
	srv, clientConfig := mutualTLSListener(t)
	serveListener(t, srv, echoHandler)
	cfg := clientConfig("client")
	for i := range 10 {
		c := mustDial(t, srv.Addr().String(), WithID(string(rune('a'+i))), WithConfig(cfg))
		mustRoundTrip(t, c, pattern(64<<10, byte(i)))
	}
	t.Logf("figures: TLS Listener with client certificates: 10 logical connections, 10 round trips of 64 KiB")
}

// TestTLSWrongCertificate: a peer whose certificate does not verify is
// refused with ErrHandshake, in both directions, and the message says why.
func TestTLSWrongCertificate(t *testing.T) {
	good := newTestCA(t, "good CA")
	evil := newTestCA(t, "evil CA")

	t.Run("server-not-trusted", func(t *testing.T) {
		srvTLS := &tls.Config{Certificates: []tls.Certificate{evil.leaf(t, "impostor")}}
		srv, err := NewListener(tls.NewListener(listenTCP(t), srvTLS), nil)
		if err != nil {
			t.Fatal(err)
		}
		serveListener(t, srv, echoHandler)
		cfg := &Config{TLSConfig: &tls.Config{RootCAs: good.pool}, ReconnectBackoffMax: 10 * time.Millisecond}
		_, err = Dial(testContext(t), srv.Addr().String(), WithID("x"), WithConfig(cfg))
		wantErr(t, err, ErrHandshake)
		var uae x509.UnknownAuthorityError
		if !strings.Contains(err.Error(), "certificate") {
			t.Errorf("error %q does not name the certificate problem (%T)", err, uae)
		}
		t.Logf("figures: TLS wrong server certificate: Dial refused with %q", err)
	})

	t.Run("client-not-trusted", func(t *testing.T) {
		srvTLS := &tls.Config{
			Certificates: []tls.Certificate{good.leaf(t, "server")},
			ClientCAs:    good.pool,
			ClientAuth:   tls.RequireAndVerifyClientCert,
		}
		ln := listenTCP(t)
		serverErr := make(chan error, 1)
		serveConns(t, ln, func(conn net.Conn) {
			c := WrapConnection(tls.Server(conn, srvTLS), 0)
			defer c.Close()
			_, err := c.Receive()
			select {
			case serverErr <- err:
			default:
			}
		})
		cfg := &Config{
			TLSConfig:           &tls.Config{RootCAs: good.pool, Certificates: []tls.Certificate{evil.leaf(t, "impostor")}},
			ReconnectBackoffMax: 10 * time.Millisecond,
		}
		_, err := Dial(testContext(t), ln.Addr().String(), WithID("x"), WithConfig(cfg))
		wantErr(t, err, ErrHandshake)
		serr := <-serverErr
		wantErr(t, serr, ErrHandshake)
		if !strings.Contains(serr.Error(), "certificate") {
			t.Errorf("server error %q does not name the certificate", serr)
		}
		t.Logf("figures: TLS wrong client certificate: client Dial refused with %q; server side %q", err, serr)
	})
}

// TestTLSPeerIdentity: under mutual TLS a server Connection tells who its
// client is (the certificate's subject, its address), and a client sees the
// server's certificate; a plain TCP Connection reports no TLS state.
func TestTLSPeerIdentity(t *testing.T) {
	srv, clientConfig := mutualTLSListener(t)
	c := mustDial(t, srv.Addr().String(), WithID("who"), WithConfig(clientConfig("client-7")))
	s, err := srv.AcceptContext(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	closeAtCleanup(t, s)
	mustSend(t, c, []byte("hi")) // the server's TLS handshake completes on its read
	mustReceive(t, s)
	st, ok := s.TLSConnectionState()
	if !ok || len(st.PeerCertificates) == 0 || st.PeerCertificates[0].Subject.CommonName != "client-7" {
		t.Fatalf("server TLSConnectionState = ok %v, %d peer certificates; want client-7", ok, len(st.PeerCertificates))
	}
	if s.RemoteAddr() == nil || s.RemoteAddr().String() != c.LocalAddr().String() {
		t.Fatalf("server RemoteAddr %v, client LocalAddr %v: want equal", s.RemoteAddr(), c.LocalAddr())
	}
	if st, ok := c.TLSConnectionState(); !ok || st.PeerCertificates[0].Subject.CommonName != "server" {
		t.Fatalf("client TLSConnectionState = ok %v; want the server's certificate", ok)
	}

	ln := listenTCP(t)
	serveEcho(t, ln)
	plain := mustDial(t, ln.Addr().String())
	if _, ok := plain.TLSConnectionState(); ok {
		t.Fatal("plain TCP Connection reports a TLS state")
	}
	if plain.RemoteAddr().String() != ln.Addr().String() {
		t.Fatalf("RemoteAddr %v, want %v", plain.RemoteAddr(), ln.Addr())
	}
	plain.Close()
	if plain.RemoteAddr() != nil {
		t.Fatal("a closed Connection still reports an address")
	}
}

// TestTLSAuthoriseByCertificate: a server authorises each logical
// connection by its client's certificate; a client it turns away sees
// ErrPeerClosed, an allowed one is served.
func TestTLSAuthoriseByCertificate(t *testing.T) {
	srv, clientConfig := mutualTLSListener(t)
	serveListener(t, srv, func(c *Connection) {
		st, ok := c.TLSConnectionState()
		for !ok { // complete once the server has read from the socket
			if _, err := c.Receive(); err != nil {
				return
			}
			st, ok = c.TLSConnectionState()
		}
		if st.PeerCertificates[0].Subject.CommonName != "billing" {
			return // serveListener closes c: the client is told
		}
		echoHandler(c)
	})
	allowed := mustDial(t, srv.Addr().String(), WithID("job"), WithConfig(clientConfig("billing")))
	intruder := mustDial(t, srv.Addr().String(), WithID("job"), WithConfig(clientConfig("intruder")))
	_, err := intruder.ReceiveContext(testContext(t)) // turned away on Accept
	wantErr(t, err, ErrPeerClosed)
	mustRoundTrip(t, allowed, []byte("invoice"))
}
