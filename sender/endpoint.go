package sender

import (
	"fmt"
	"net"
	"net/url"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"
)

// region is one of Tencent Cloud Chat's documented API regions: a primary
// domain and the documented standby used for failover.
type region struct {
	// Name is the region's configuration name, e.g. "singapore".
	Name string
	// Primary is the domain used first.
	Primary string
	// Standby is the failover domain; empty when none is documented.
	Standby string
}

// regions lists every documented region by configuration name: the
// domains of the REST API overview (primary, then the documented standby
// "for DNS hijacking"). Mumbai is on the overview, not on the broadcast
// page.
var regions = map[string]region{
	"china":         {"china", "console.tim.qq.com", "adminapi.my-imcloud.com"},
	"singapore":     {"singapore", "adminapisgp.im.qcloud.com", "adminapisgp.my-imcloud.com"},
	"seoul":         {"seoul", "adminapikr.im.qcloud.com", "adminapikr.my-imcloud.com"},
	"frankfurt":     {"frankfurt", "adminapiger.im.qcloud.com", "adminapiger.my-imcloud.com"},
	"siliconvalley": {"siliconvalley", "adminapiusa.im.qcloud.com", "adminapiusa.my-imcloud.com"},
	"jakarta":       {"jakarta", "adminapiidn.im.qcloud.com", "adminapiidn.my-imcloud.com"},
	"tokyo":         {"tokyo", "adminapijpn.im.qcloud.com", "adminapijpn.my-imcloud.com"},
	"mumbai":        {"mumbai", "adminapiind.im.qcloud.com", "adminapiind.my-imcloud.com"},
}

// RegionNames returns the configuration names of all regions, sorted.
func RegionNames() []string {
	names := make([]string, 0, len(regions))
	for n := range regions {
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
	r, ok := regions[key]
	if !ok {
		return nil, fmt.Errorf("unknown region %q (known: %s)", name, strings.Join(RegionNames(), ", "))
	}
	eps := []string{"https://" + r.Primary}
	if r.Standby != "" {
		eps = append(eps, "https://"+r.Standby)
	}
	return eps, nil
}

// endpoint returns the base URL to use now, failing back to the primary
// once FailbackAfter has passed on a standby.
func (c *Client) endpoint() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.active != 0 && time.Since(c.switchedAt) >= c.cfg.FailbackAfter {
		c.active = 0
		c.switchedAt = time.Now()
		c.log.Info("failing back to the primary endpoint", zap.String("endpoint", c.cfg.Endpoints[0]))
	}
	return c.cfg.Endpoints[c.active]
}

// failover moves to the next endpoint after a network failure on failed.
func (c *Client) failover(failed string) {
	if len(c.cfg.Endpoints) < 2 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cfg.Endpoints[c.active] != failed {
		return // another caller already moved on
	}
	c.active = (c.active + 1) % len(c.cfg.Endpoints)
	c.switchedAt = time.Now()
	c.log.Warn("failing over to the next endpoint", zap.String("from", failed), zap.String("to", c.cfg.Endpoints[c.active]))
}

// CheckEndpoint checks an explicit base URL: https, or http only to a
// loopback address (an emulator, tests): plain HTTP would carry the
// UserSig in clear text, and the REST API is served over HTTPS only.
func CheckEndpoint(ep string) error {
	u, err := url.Parse(ep)
	if err == nil && u.User != nil {
		return fmt.Errorf("endpoint %q carries credentials (user:password@): the API takes none there; remove them", u.Redacted())
	}
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("endpoint %q is not an https base URL such as https://adminapisgp.im.qcloud.com", ep)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("endpoint %q must not carry a query or fragment", ep)
	}
	if u.Scheme == "http" && !IsLoopback(u.Hostname()) {
		return fmt.Errorf("endpoint %q uses http to a non-loopback host: the UserSig would travel in clear text; use https (http is accepted only for 127.0.0.0/8, ::1 and localhost)", ep)
	}
	return nil
}

// IsLoopback reports whether host is a loopback address or localhost
// (resolved by no one: a name other than localhost is not trusted).
func IsLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
