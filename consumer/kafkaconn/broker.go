package kafkaconn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/apiversions"
	"github.com/segmentio/kafka-go/protocol/saslauthenticate"
	"github.com/segmentio/kafka-go/protocol/saslhandshake"
	"github.com/segmentio/kafka-go/sasl"
)

// BrokerConn is one connection to one broker, kept open and reused for
// every request sent to that broker: the group member sends its group
// requests (join, sync, heartbeat, commits) over one to the group's
// coordinator. kafka-go's Transport looks the coordinator up again for
// every group request and routes a Heartbeat to any broker; a BrokerConn
// goes where it is told and opens a new connection only when the last one
// broke (with TLS and SASL as the Conn's dialer says).
//
// Requests are sent one at a time, each bounded by its context. Versions
// are negotiated once per connection (ApiVersions) and capped at the
// highest non-flexible version of each API, which kafka-go encodes
// faithfully.
type BrokerConn struct {
	c    *Conn
	addr string

	mu       sync.Mutex
	pc       *protocol.Conn
	raw      net.Conn
	versions map[protocol.ApiKey]int16
	// offered is the highest version the broker offers of each API, before
	// the caps of maxVersions (raw exchanges pick their own).
	offered map[protocol.ApiKey]int16
}

// maxVersions caps the versions a BrokerConn uses: the last version of each
// API before its flexible encoding (KIP-482), which kafka-go encodes
// faithfully.
var maxVersions = map[protocol.ApiKey]int16{
	protocol.FindCoordinator: 2,
	protocol.JoinGroup:       5,
	protocol.SyncGroup:       3,
	protocol.Heartbeat:       3,
	protocol.LeaveGroup:      0, // kafka-go decodes v1+ answers in the wrong field order

	protocol.OffsetCommit:   7,
	protocol.OffsetFetch:    5,
	protocol.DescribeGroups: 4,
	protocol.ListOffsets:    5,
	protocol.Metadata:       8,
}

// Broker returns a kept connection to the broker at addr (host:port). It
// connects on its first request.
func (c *Conn) Broker(addr string) *BrokerConn { return &BrokerConn{c: c, addr: addr} }

// Version is the version b uses for key, negotiated with the broker; -1
// before the first connection or when the broker lacks the API.
func (b *BrokerConn) Version(key protocol.ApiKey) int16 {
	b.mu.Lock()
	defer b.mu.Unlock()
	if v, ok := b.versions[key]; ok {
		return v
	}
	return -1
}

// RoundTrip sends req and returns the broker's answer, connecting first if
// need be. A failed request closes the connection (a partial exchange
// leaves it unusable); the next request opens a new one.
func (b *BrokerConn) RoundTrip(ctx context.Context, req protocol.Message) (protocol.Message, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if b.pc == nil {
		if err := b.connect(ctx); err != nil {
			return nil, fmt.Errorf("connect to %s: %w", b.addr, err)
		}
	}
	if _, ok := b.versions[req.ApiKey()]; !ok {
		return nil, fmt.Errorf("broker %s does not support %s", b.addr, req.ApiKey())
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Time{}
	}
	_ = b.pc.SetDeadline(deadline)
	// Unblock at once when ctx ends. The connection is captured: the
	// function may still run after closeLocked has dropped b.raw.
	raw := b.raw
	stop := context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Unix(1, 0)) })
	resp, err := b.pc.RoundTrip(req)
	interrupted := !stop()
	if err != nil {
		b.closeLocked()
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return nil, fmt.Errorf("%s to %s: %w", req.ApiKey(), b.addr, err)
	}
	if interrupted {
		b.closeLocked() // its deadline was moved: the next request reconnects
	}
	return resp, nil
}

// Close closes the connection, if open.
func (b *BrokerConn) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closeLocked()
}

func (b *BrokerConn) closeLocked() {
	if b.pc != nil {
		_ = b.pc.Close()
		b.pc, b.raw = nil, nil
	}
}

// connect dials the broker, negotiates versions and authenticates.
func (b *BrokerConn) connect(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	d := b.c.Dialer
	dial := d.DialFunc
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	raw, err := dial(ctx, "tcp", b.addr)
	if err != nil {
		return err
	}
	if d.TLS != nil {
		cfg := d.TLS
		if cfg.ServerName == "" {
			host, _, _ := net.SplitHostPort(b.addr)
			cfg = cfg.Clone()
			cfg.ServerName = host
		}
		raw = tls.Client(raw, cfg)
	}
	pc := protocol.NewConn(raw, ClientID)
	deadline, _ := ctx.Deadline()
	_ = pc.SetDeadline(deadline)
	ok := false
	defer func() {
		if !ok {
			_ = pc.Close()
		}
	}()
	msg, err := pc.RoundTrip(&apiversions.Request{})
	if err != nil {
		return fmt.Errorf("ApiVersions: %w", err)
	}
	av := msg.(*apiversions.Response)
	if av.ErrorCode != 0 {
		return fmt.Errorf("ApiVersions: %w", kafka.Error(av.ErrorCode))
	}
	versions, offered := map[protocol.ApiKey]int16{}, map[protocol.ApiKey]int16{}
	for _, k := range av.ApiKeys {
		key := protocol.ApiKey(k.ApiKey)
		offered[key] = k.MaxVersion
		v := key.SelectVersion(k.MinVersion, k.MaxVersion)
		if limit, ok := maxVersions[key]; ok && v > limit {
			v = limit
		}
		if v >= k.MinVersion {
			versions[key] = v
		}
	}
	pc.SetVersions(versions)
	if d.SASLMechanism != nil {
		host, port, _ := net.SplitHostPort(b.addr)
		portNum, _ := strconv.Atoi(port)
		mctx := sasl.WithMetadata(ctx, &sasl.Metadata{Host: host, Port: portNum})
		if err := authenticate(mctx, pc, d.SASLMechanism); err != nil {
			return err
		}
	}
	_ = pc.SetDeadline(time.Time{})
	b.pc, b.raw, b.versions, b.offered, ok = pc, raw, versions, offered, true
	return nil
}

// authenticate runs the SASL exchange of mechanism on pc (SaslHandshake,
// then SaslAuthenticate rounds), as kafka-go's Transport does.
func authenticate(ctx context.Context, pc *protocol.Conn, mechanism sasl.Mechanism) error {
	msg, err := pc.RoundTrip(&saslhandshake.Request{Mechanism: mechanism.Name()})
	if err != nil {
		return fmt.Errorf("SASL handshake: %w", err)
	}
	if code := msg.(*saslhandshake.Response).ErrorCode; code != 0 {
		return fmt.Errorf("SASL handshake: %w", kafka.Error(code))
	}
	sess, state, err := mechanism.Start(ctx)
	if err != nil {
		return err
	}
	for done := false; !done; {
		msg, err := pc.RoundTrip(&saslauthenticate.Request{AuthBytes: state})
		if errors.Is(err, io.EOF) {
			return kafka.SASLAuthenticationFailed
		}
		if err != nil {
			return fmt.Errorf("SASL authenticate: %w", err)
		}
		res := msg.(*saslauthenticate.Response)
		if res.ErrorCode != 0 {
			return fmt.Errorf("SASL authenticate: %w: %s", kafka.Error(res.ErrorCode), res.ErrorMessage)
		}
		if done, state, err = sess.Next(ctx, res.AuthBytes); err != nil {
			return err
		}
	}
	return nil
}
