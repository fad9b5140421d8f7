package inventory_test

import (
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/warden-sre/warden/internal/authsim"
	"github.com/warden-sre/warden/internal/inventory"
)

// TestAuthServiceContractMatchesSimulator checks the auth-service metrics
// the rules and dashboards rely on against the simulator of the contract:
// same names, same types.
func TestAuthServiceContractMatchesSimulator(t *testing.T) {
	sim, err := authsim.New(authsim.Config{InstanceID: "inventory"})
	if err != nil {
		t.Fatal(err)
	}
	mfs, err := sim.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]dto.MetricType{}
	for _, mf := range mfs {
		types[mf.GetName()] = mf.GetType()
	}
	want := map[inventory.Type]dto.MetricType{
		inventory.Counter:   dto.MetricType_COUNTER,
		inventory.Gauge:     dto.MetricType_GAUGE,
		inventory.Histogram: dto.MetricType_HISTOGRAM,
	}
	contract := inventory.BySource(inventory.AuthService)
	if len(contract) == 0 {
		t.Fatal("the inventory lists no auth-service metric")
	}
	for _, m := range contract {
		got, ok := types[m.Name]
		if !ok {
			t.Errorf("%s: in the auth-service contract (internal/inventory) but the simulator does not expose it", m.Name)
			continue
		}
		if got != want[m.Type] {
			t.Errorf("%s: the simulator exposes a %s; the inventory says %s", m.Name, got, m.Type)
		}
	}
}
