package bench

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"sync"
	"time"

	tcpconn "github.com/pulsyflux/tcp-conn"
)

// TLS 1.3 on loopback with a self-signed ECDSA P-256 certificate for
// 127.0.0.1, made once per process. Handshakes happen in setup, outside the
// timer.

var tlsConfigs = sync.OnceValues(func() (client, server *tls.Config) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "tcpconn-bench"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	server = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}},
		MinVersion:   tls.VersionTLS13,
	}
	client = &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}
	return client, server
})

// tlsSockets dials TLS (handshake done before Dial returns) and wraps
// accepted sockets with tls.Server.
func tlsSockets() sockets {
	client, server := tlsConfigs()
	d := &net.Dialer{Timeout: 10 * time.Second}
	return sockets{
		dial: func(addr string) (net.Conn, error) { return tls.DialWithDialer(d, "tcp", addr, client) },
		wrap: func(c net.Conn) net.Conn { return tls.Server(c, server) },
	}
}

// tcpconnTLS is the tcpconn transport over TLS through the public API: the
// client sets Config.TLSConfig and uses Dial(WithID, WithConfig); the server
// wraps tls.Server(sock) with WrapConnection / WrapConnectionWithID.
// With pooled, it receives through ReceiveAppend as tcpconn-pooled does.
func tcpconnTLS(pooled bool) Transport {
	client, _ := tlsConfigs()
	return tcpconnOver(pooled, &tcpconn.Config{TLSConfig: client}, tlsSockets())
}
