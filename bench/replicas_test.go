package bench

import (
	"testing"
	"time"
)

// smallReplicasConfig is the Replicas workload at a size that runs in
// seconds.
func smallReplicasConfig() ReplicasConfig {
	return ReplicasConfig{Replicas: 6, Added: 2, Drained: 2, IDs: 600, Rate: 1500,
		ResolveInterval: 200 * time.Millisecond, MaxLinkAge: 500 * time.Millisecond, Steady: 300 * time.Millisecond}
}

// TestReplicasSmall runs the Replicas workload at a small size: no error
// and no failed round trip through the drain, every ID placed, the scale-up
// and the return seen.
func TestReplicasSmall(t *testing.T) {
	r, err := MeasureReplicas(smallReplicasConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", r)
	switch {
	case r.DrainErrors != 0:
		t.Errorf("%d round trips failed through the drain", r.DrainErrors)
	case r.ScaleUp == 0:
		t.Errorf("the added replicas never reached 0.8x their mean share")
	case r.SpreadIDs > 1.15:
		t.Errorf("the busiest replica holds %.2fx the mean of IDs", r.SpreadIDs)
	case r.Returned < 0.90:
		// The workload's goal is 95 %, measured at its full size. At 6
		// replicas of about 100 IDs each, the few IDs that the load bound
		// places by history are a larger share: 93.5-100 % in -race runs
		// beside other tests.
		t.Errorf("%.1f %% of IDs returned", 100*r.Returned)
	case r.KillRecovery > time.Second:
		t.Errorf("an ID answered again only after %v", r.KillRecovery)
	}
}

// TestReplicasGRPCSmall runs gRPC's side at the same size. It checks only
// what gRPC does by design: every stream placed and spread, every ID
// answering again after the kill (a broken stream is reopened elsewhere).
// gRPC never reaching the scale-up's share makes it wait out the phases'
// limits: seconds more than tcpconn's side, so -short skips it.
func TestReplicasGRPCSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out the scale-up and return limits")
	}
	r, err := MeasureReplicasGRPC(smallReplicasConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", r)
	switch {
	case r.SpreadIDs == 0 || r.SpreadMessages == 0:
		t.Errorf("no spread measured: IDs %.2fx, messages %.2fx", r.SpreadIDs, r.SpreadMessages)
	case r.KillRecovery > time.Second:
		t.Errorf("an ID answered again only after %v", r.KillRecovery)
	}
}
