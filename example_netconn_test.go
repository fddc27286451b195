// SPDX-License-Identifier: MIT

package tcpconn_test

import (
	"fmt"
	"io"
	"net/http"

	tcpconn "github.com/pulsyflux/tcp-conn"
)

// HTTP over logical connections: the server serves on the Listener as a
// net.Listener, the client dials each HTTP connection as a new logical
// connection, and all of them share one pooled socket.
func ExampleListener_NetListener() {
	ln, err := tcpconn.Listen("tcp", "127.0.0.1:0", nil)
	if err != nil {
		panic(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello over %s", r.Proto)
	})}
	go srv.Serve(ln.NetListener())
	defer srv.Close()

	cl, err := tcpconn.NewClient(nil)
	if err != nil {
		panic(err)
	}
	defer cl.Close()
	transport := &http.Transport{DialContext: cl.DialConn}
	defer transport.CloseIdleConnections()
	resp, err := (&http.Client{Transport: transport}).Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Printf("%s; sockets: %d\n", body, cl.Stats().Links)
	// Output: hello over HTTP/1.1; sockets: 1
}
