package bench

import (
	"os"
	"testing"
	"time"
)

// TestMain lets the test binary be the fleet's child process too, and an
// end of a Sockets cell.
func TestMain(m *testing.M) {
	if IsAttackerProcess() {
		os.Exit(RunAttackerProcess())
	}
	if IsSocketsEndProcess() {
		os.Exit(RunSocketsEndProcess())
	}
	os.Exit(m.Run())
}

// TestFleetSmoke runs a small fleet: whatever the windows and budget
// allow, every message whose Send returned nil must reach the server, the
// fill must stall by itself, and the bystander must keep its round trips.
func TestFleetSmoke(t *testing.T) {
	cfg := DefaultFleetConfig(2)
	cfg.IDsPerSocket, cfg.Quiet, cfg.FillLimit = 8, 500*time.Millisecond, 30*time.Second
	r, err := MeasureFleet(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if r.Stopped != "" {
		t.Fatalf("cut short: %s", r.Stopped)
	}
	if r.SentBytes == 0 || r.AcceptedBytes != r.SentBytes {
		t.Errorf("the fleet's Sends returned nil for %d bytes, the server accepted %d", r.SentBytes, r.AcceptedBytes)
	}
	if len(r.SendErrors) > 0 {
		t.Errorf("fleet Sends failed: %v", r.SendErrors)
	}
	if r.Bystander.Err != "" || r.Bystander.RoundTrips == 0 {
		t.Errorf("bystander: %d round trips, error %q", r.Bystander.RoundTrips, r.Bystander.Err)
	}
	t.Logf("2 sockets x 8 IDs: %d bytes accepted in %v; heap +%d MiB peak, +%d MiB live; bystander %d round trips, p50 %v, p99 %v",
		r.AcceptedBytes, r.Fill.Round(time.Millisecond), r.PeakRise()>>20, r.LiveRise()>>20, r.Bystander.RoundTrips, r.Bystander.P50, r.Bystander.P99)
}
