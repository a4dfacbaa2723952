package sender_test

import (
	"context"
	"fmt"

	"github.com/timbroadcast/timbroadcast/sender"
	"github.com/timbroadcast/timbroadcast/sender/sendertest"
)

// Send one announcement to every audio-video group of an app; here the app
// is the emulator on a loopback port.
func ExampleClient_Send() {
	emu := sendertest.NewServer(sendertest.Options{AppID: 1400000000, Admin: "administrator", SecretKey: "example-key"})
	defer emu.Close()

	client, err := sender.New(sender.Config{
		AppID: 1400000000, Admin: "administrator", SecretKey: "example-key",
		Endpoints: []string{emu.URL}, // or sender.RegionEndpoints("singapore")
	})
	if err != nil {
		panic(err)
	}
	defer client.Close()

	resp, err := client.Send(context.Background(), &sender.Message{
		Random:  20260101,
		MsgBody: []sender.Element{sender.Text("Doors open in 5 minutes!")},
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(resp.ActionStatus, resp.MsgSeq, resp.Attempts)
	// Output: OK 1 1
}
