// SPDX-License-Identifier: MIT

package tcpconnotel_test

import (
	"context"
	"fmt"
	"sort"
	"time"

	tcpconn "github.com/pulsyflux/tcp-conn"
	tcpconnotel "github.com/pulsyflux/tcp-conn/metrics/otel"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// A server and a client are observed, with the process, through one Meter;
// a collection after three round trips shows what each side moved. Any
// reader or exporter (OTLP, Prometheus, stdout) takes the ManualReader's
// place.
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

	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer provider.Shutdown(context.Background())
	reg, err := tcpconnotel.Register(provider.Meter(tcpconnotel.ScopeName), nil,
		tcpconnotel.ProcessSource(),
		tcpconnotel.ClientSource(client),
		tcpconnotel.ListenerSource(ln))
	if err != nil {
		panic(err)
	}
	defer reg.Unregister()

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

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		panic(err)
	}
	var lines []string
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "tcpconn.message.count" && m.Name != "tcpconn.io" {
				continue
			}
			for _, p := range m.Data.(metricdata.Sum[int64]).DataPoints {
				component, _ := p.Attributes.Value(tcpconnotel.ComponentKey)
				direction, _ := p.Attributes.Value("network.io.direction")
				if component.AsString() != "process" {
					lines = append(lines, fmt.Sprintf("%s %s %s=%s %s=%s %d", m.Name, m.Unit,
						tcpconnotel.ComponentKey, component.AsString(), "network.io.direction", direction.AsString(), p.Value))
				}
			}
		}
	}
	sort.Strings(lines)
	for _, l := range lines {
		fmt.Println(l)
	}
	// Output:
	// tcpconn.io By tcpconn.component=client network.io.direction=receive 11
	// tcpconn.io By tcpconn.component=client network.io.direction=transmit 11
	// tcpconn.io By tcpconn.component=listener network.io.direction=receive 11
	// tcpconn.io By tcpconn.component=listener network.io.direction=transmit 11
	// tcpconn.message.count {message} tcpconn.component=client network.io.direction=receive 3
	// tcpconn.message.count {message} tcpconn.component=client network.io.direction=transmit 3
	// tcpconn.message.count {message} tcpconn.component=listener network.io.direction=receive 3
	// tcpconn.message.count {message} tcpconn.component=listener network.io.direction=transmit 3
}
