// SPDX-License-Identifier: MIT

package tcpconn

// Config: Validate refuses every invalid field, naming it, and Dial refuses
// such a Config before touching the network; the zero Config and
// DefaultConfig are valid.

import (
	"context"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestConfigValidateNamesField(t *testing.T) {
	type validateCase struct {
		field string
		cfg   Config
	}
	cases := []validateCase{
		{"MaxMessageSize", Config{MaxMessageSize: -1}},
		{"StreamWindow", Config{StreamWindow: -1}},
		{"StreamWindow", Config{StreamWindow: InitialWindow - 1}},
		{"MaxMessageSize", Config{MaxMessageSize: 1 << 10}},
		{"LinkWindow", Config{LinkWindow: -5}},
		{"LinkWindow", Config{StreamWindow: 1 << 20, LinkWindow: 1 << 10}},
		{"LinkWindow", Config{StreamWindow: 1 << 20, LinkWindow: 1 << 20}}, // one unread ID could hold it all
		{"MaxStreams", Config{MaxStreams: -1}},
		{"AcceptBacklog", Config{AcceptBacklog: -1}},
		{"KeepAliveTimeout", Config{KeepAliveInterval: time.Second, KeepAliveTimeout: time.Millisecond}},
		{"MaxControlFramesPerSecond", Config{MaxControlFramesPerSecond: -1}},
		{"HandshakeTimeout", Config{HandshakeTimeout: -1}},
		{"DialTimeout", Config{DialTimeout: -1}},
		{"ReconnectBackoffMax", Config{ReconnectBackoffMin: time.Second, ReconnectBackoffMax: time.Millisecond}},
		{"SocketReadBuffer", Config{SocketReadBuffer: -1}},
		{"SocketWriteBuffer", Config{SocketWriteBuffer: -1}},
		{"LaneThreshold", Config{LaneThreshold: 100}},
		{"ResolveInterval", Config{ResolveInterval: -1}},
		{"MaxLinkAge", Config{MaxLinkAge: -1}},
		{"MaxLinkAgeGrace", Config{MaxLinkAgeGrace: -1}},
		{"PlacementBalance", Config{PlacementBalance: 0.9}},
		{"PlacementBalance", Config{PlacementBalance: math.NaN()}},
	}
	if strconv.IntSize == 64 {
		// 8 GiB, beyond the u32 length field. A 32-bit int cannot exceed
		// the limit, so the case exists on 64-bit only; the value is built
		// at run time so that 32-bit builds compile.
		eightGiB := uint64(1) << 33
		cases = append(cases, validateCase{"MaxMessageSize", Config{MaxMessageSize: int(eightGiB)}})
	}
	for _, tc := range cases {
		t.Run(tc.field, func(t *testing.T) {
			err := tc.cfg.Validate()
			wantErr(t, err, ErrInvalidConfig)
			if !strings.Contains(err.Error(), tc.field) {
				t.Errorf("error %q does not name %s", err, tc.field)
			}
			// Dial and Wrap refuse it too, before touching the network.
			_, err = Dial(context.Background(), "127.0.0.1:1", WithConfig(&tc.cfg))
			wantErr(t, err, ErrInvalidConfig)
		})
	}
	if err := (&Config{}).Validate(); err != nil {
		t.Errorf("the zero Config is invalid: %v", err)
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig is invalid: %v", err)
	}
	if err := (&Config{PlacementBalance: math.Inf(1)}).Validate(); err != nil {
		t.Errorf("PlacementBalance +Inf (no bound) is invalid: %v", err)
	}
}
