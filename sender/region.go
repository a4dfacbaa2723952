package sender

import (
	"fmt"
	"sort"
	"strings"
)

// Region is one of Tencent Cloud Chat's documented API regions: a primary
// domain and the documented standby used for failover.
type Region struct {
	// Name is the region's configuration name, e.g. "singapore".
	Name string
	// Primary is the domain used first.
	Primary string
	// Standby is the failover domain; empty when none is documented.
	Standby string
}

// Regions lists every documented region by configuration name.
var Regions = map[string]Region{
	"china":         {"china", "console.tim.qq.com", "adminapi.my-imcloud.com"},
	"singapore":     {"singapore", "adminapisgp.im.qcloud.com", "adminapisgp.my-imcloud.com"},
	"seoul":         {"seoul", "adminapikr.im.qcloud.com", "adminapikr.my-imcloud.com"},
	"frankfurt":     {"frankfurt", "adminapiger.im.qcloud.com", "adminapiger.my-imcloud.com"},
	"siliconvalley": {"siliconvalley", "adminapiusa.im.qcloud.com", "adminapiusa.my-imcloud.com"},
	"jakarta":       {"jakarta", "adminapiidn.im.qcloud.com", "adminapiidn.my-imcloud.com"},
	"tokyo":         {"tokyo", "adminapijpn.im.qcloud.com", ""},
}

// RegionNames returns the configuration names of all regions, sorted.
func RegionNames() []string {
	names := make([]string, 0, len(Regions))
	for n := range Regions {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// RegionEndpoints returns the HTTPS base URLs of a region, primary first.
// Names are matched case-insensitively, ignoring spaces, dashes and
// underscores ("Silicon Valley" is "siliconvalley").
func RegionEndpoints(name string) ([]string, error) {
	key := strings.NewReplacer(" ", "", "-", "", "_", "").Replace(strings.ToLower(name))
	r, ok := Regions[key]
	if !ok {
		return nil, fmt.Errorf("unknown region %q (known: %s)", name, strings.Join(RegionNames(), ", "))
	}
	eps := []string{"https://" + r.Primary}
	if r.Standby != "" {
		eps = append(eps, "https://"+r.Standby)
	}
	return eps, nil
}
