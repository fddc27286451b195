package bench

import (
	"testing"
	"time"
)

// TestReplicasSmall runs the Replicas workload at a small size: no error
// and no failed round trip through the drain, every ID placed, the scale-up
// and the return seen.
func TestReplicasSmall(t *testing.T) {
	cfg := ReplicasConfig{Replicas: 6, Added: 2, Drained: 2, IDs: 600, Rate: 1500,
		ResolveInterval: 200 * time.Millisecond, MaxLinkAge: 500 * time.Millisecond, Steady: 300 * time.Millisecond}
	r, err := MeasureReplicas(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", r)
	switch {
	case r.DrainErrors != 0:
		t.Errorf("%d round trips failed through the drain", r.DrainErrors)
	case r.ScaleUp == 0:
		t.Errorf("the added replicas never reached 0.8x their mean share")
	case r.Returned < 0.9:
		t.Errorf("%.1f %% of IDs returned", 100*r.Returned)
	case r.KillRecovery > time.Second:
		t.Errorf("an ID answered again only after %v", r.KillRecovery)
	}
}
