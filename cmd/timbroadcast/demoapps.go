package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/segmentio/kafka-go"

	"github.com/timbroadcast/timbroadcast/consumer"
	"github.com/timbroadcast/timbroadcast/consumer/wire"
	"github.com/timbroadcast/timbroadcast/sender"
	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// demoApps is `timbroadcast demo --apps N`: the emulator hosting N apps
// behind one endpoint, each its own key, limit and dedupe; the last app
// is switched off (10007) after its first delivery and on again once the
// others delivered all of theirs.
type demoApps struct {
	emu     *sendertest.Apps
	apps    []consumer.App
	clients []*sender.Client
	ids     map[string]int
	off     string
	// left counts each app's samples not yet final; switched says the
	// off app was switched off (and then on again: back).
	left           map[string]int
	switched, back bool
}

func newDemoApps(n int, base sender.Config) (*demoApps, error) {
	d := &demoApps{ids: map[string]int{}, left: map[string]int{}}
	var opts []sendertest.Options
	keys := map[int]string{}
	for i := range n {
		id := demoAppID + 1 + i
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		keys[id] = hex.EncodeToString(b)
		opts = append(opts, sendertest.Options{AppID: id, Admin: demoAdmin, SecretKey: keys[id], Rate: base.Rate})
	}
	d.emu = sendertest.NewApps(opts...)
	for i := range n {
		id := demoAppID + 1 + i
		name := fmt.Sprintf("demo-%d", i+1)
		cfg := base
		cfg.AppID, cfg.Admin, cfg.SecretKey, cfg.Endpoints = id, demoAdmin, keys[id], []string{d.emu.URL}
		cfg.Logger = base.Logger.Named(name)
		client, err := sender.New(cfg)
		if err != nil {
			d.close()
			return nil, configError{err}
		}
		d.clients = append(d.clients, client)
		d.ids[name] = id
		d.apps = append(d.apps, consumer.App{Name: name, SDKAppID: uint64(id), Sender: client, Rate: base.Rate})
	}
	d.off = d.apps[n-1].Name
	return d, nil
}

func (d *demoApps) names() []string {
	out := make([]string, len(d.apps))
	for i, a := range d.apps {
		out[i] = a.Name
	}
	return out
}

// samples are three announcements per app, each record naming its app.
func (d *demoApps) samples(run string) (map[string]demoSample, []kafka.Message) {
	pending := map[string]demoSample{}
	var msgs []kafka.Message
	for i := range 3 {
		for _, a := range d.apps {
			text := fmt.Sprintf("Announcement %d for every room of %s", i+1, a.Name)
			v, _ := json.Marshal(map[string]any{"MsgBody": []sender.Element{sender.Text(text)}})
			k := fmt.Sprintf("demo-%s-%s-%d", run, a.Name, i+1)
			pending[k] = demoSample{value: string(v), text: text}
			d.left[a.Name]++
			msgs = append(msgs, kafka.Message{Key: []byte(k), Value: v, Headers: []kafka.Header{{Key: wire.HeaderApp, Value: []byte(a.Name)}}})
		}
	}
	return pending, msgs
}

// outcome follows the run: the off app switched off after its first
// delivery, and on again once every other app delivered all.
func (d *demoApps) outcome(out io.Writer, o consumer.Outcome) {
	d.left[o.App]--
	if o.App == d.off && !d.switched {
		d.switched = true
		d.emu.App(d.ids[d.off]).SetFaults(sendertest.Faults{FeatureOff: true})
		fmt.Fprintf(out, "  -- %s is switched off now (broadcast off in its console: 10007); the others flow on\n", d.off)
	}
	others := 0
	for name, n := range d.left {
		if name != d.off {
			others += n
		}
	}
	if d.switched && !d.back && others == 0 {
		d.back = true
		fmt.Fprintf(out, "  -- every other app delivered all of its announcements while %s was off; switching it on again\n", d.off)
		d.emu.App(d.ids[d.off]).SetFaults(sendertest.Faults{})
	}
}

// summary prints each app's calls as its emulator counted them.
func (d *demoApps) summary(out io.Writer) {
	var lines []string
	for _, a := range d.apps {
		st := d.emu.App(d.ids[a.Name]).Stats()
		lines = append(lines, fmt.Sprintf("%s %d delivered, %d answered 10007, %d answered 10023", a.Name, st.Delivered, st.ByCode[10007], st.ByCode[10023]))
	}
	fmt.Fprintf(out, "Emulator, per app: %s.\n", strings.Join(lines, "; "))
}

func (d *demoApps) close() {
	for _, c := range d.clients {
		c.Close()
	}
	d.emu.Close()
}
