package deploy_test

import (
	"os/exec"
	"reflect"
	"testing"
)

// TestAlertRules: promtool checks the rule file and runs its unit tests
// (alerts_test.yaml); the PrometheusRule wrapper holds the same groups.
func TestAlertRules(t *testing.T) {
	rules := decodeAll(t, "prometheus/alerts.yaml")
	wrapper := decodeAll(t, "prometheus/prometheusrule.yaml")
	if len(rules) != 1 || len(wrapper) != 1 {
		t.Fatalf("%d rule documents and %d PrometheusRule documents, want one each", len(rules), len(wrapper))
	}
	if !reflect.DeepEqual(rules[0]["groups"], get(wrapper[0], "spec", "groups")) {
		t.Error("prometheusrule.yaml's spec.groups differ from alerts.yaml's groups: keep them in step")
	}
	if wrapper[0]["kind"] != "PrometheusRule" {
		t.Errorf("prometheusrule.yaml is a %v", wrapper[0]["kind"])
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (Debian's prometheus package has it; .ci/run installs it): rule syntax and unit tests not run")
	}
	for _, args := range [][]string{{"check", "rules", "prometheus/alerts.yaml"}, {"test", "rules", "prometheus/alerts_test.yaml"}} {
		if out, err := exec.Command(promtool, args...).CombinedOutput(); err != nil {
			t.Errorf("promtool %v: %v\n%s", args, err, out)
		}
	}
}
