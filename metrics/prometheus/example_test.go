// SPDX-License-Identifier: MIT

package tcpconnprom_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	tcpconn "github.com/pulsyflux/tcp-conn"
	tcpconnprom "github.com/pulsyflux/tcp-conn/metrics/prometheus"
)

// A server and a client register their Collectors, with the process's, on
// one registry served at /metrics; a scrape after three round trips shows
// what each side sent.
func Example() {
	ln, err := tcpconn.Listen("tcp", "127.0.0.1:0", nil)
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	go func() { // echo every message
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				for {
					m, err := c.Receive()
					if err != nil || c.Send(m) != nil {
						return
					}
				}
			}()
		}
	}()
	client, err := tcpconn.NewClient(nil)
	if err != nil {
		panic(err)
	}
	defer client.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(
		tcpconnprom.NewCollector(tcpconnprom.ProcessSource(), nil),
		tcpconnprom.NewCollector(tcpconnprom.ClientSource(client), nil),
		tcpconnprom.NewCollector(tcpconnprom.ListenerSource(ln), nil),
	)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, ln.Addr().String(), tcpconn.WithID("orders"))
	if err != nil {
		panic(err)
	}
	for _, m := range []string{"one", "two", "three"} {
		if err := c.SendContext(ctx, []byte(m)); err != nil {
			panic(err)
		}
		if _, err := c.ReceiveContext(ctx); err != nil {
			panic(err)
		}
	}

	resp, err := http.Get(srv.URL) // what Prometheus scrapes
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "tcpconn_sent_") && !strings.Contains(line, `"process"`) {
			fmt.Println(line)
		}
	}
	// Output:
	// tcpconn_sent_bytes_total{component="client"} 11
	// tcpconn_sent_bytes_total{component="listener"} 11
	// tcpconn_sent_messages_total{component="client"} 3
	// tcpconn_sent_messages_total{component="listener"} 3
}
