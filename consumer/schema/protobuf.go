//go:build !noprotobuf && !lean

package schema

import (
	"context"
	"fmt"

	"github.com/bufbuild/protocompile"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/timbroadcast/timbroadcast/consumer/mapping"
)

// protoMaxDepth caps how deep a Protobuf value's messages nest (the
// library's default is 10,000).
const protoMaxDepth = 64

// mainFile is the name the registry's schema text is compiled under.
const mainFile = "timbroadcast-registry-schema.proto"

// ProtobufBuilt reports whether this build decodes Protobuf schemas (not
// with the tag noprotobuf or lean).
const ProtobufBuilt = true

// compileProtobuf compiles the .proto text of a schema (and the files its
// references name) into a decoder; the message index chooses the message.
func compileProtobuf(ctx context.Context, text string, refs map[string]string) (*compiled, error) {
	files := map[string]string{mainFile: text}
	for name, ref := range refs {
		files[name] = ref
	}
	c := protocompile.Compiler{Resolver: protocompile.WithStandardImports(&protocompile.SourceResolver{
		Accessor: protocompile.SourceAccessorFromMap(files)})}
	linked, err := c.Compile(ctx, mainFile)
	if err != nil {
		return nil, err
	}
	fd := linked[0]
	return &compiled{decode: func(payload []byte, index []int) (any, error) {
		md, err := messageAt(fd, index)
		if err != nil {
			return nil, err
		}
		msg := dynamicpb.NewMessage(md)
		if err := (proto.UnmarshalOptions{RecursionLimit: protoMaxDepth}).Unmarshal(payload, msg); err != nil {
			return nil, err
		}
		b, err := protojson.Marshal(msg)
		if err != nil {
			return nil, err
		}
		return mapping.ParseJSON(b)
	}}, nil
}

// messageAt follows the Confluent message-index path: the i-th top-level
// message, then its j-th nested message, and so on.
func messageAt(fd protoreflect.FileDescriptor, index []int) (protoreflect.MessageDescriptor, error) {
	if len(index) == 0 {
		index = []int{0}
	}
	msgs := fd.Messages()
	var md protoreflect.MessageDescriptor
	for depth, i := range index {
		if i < 0 || i >= msgs.Len() {
			return nil, fmt.Errorf("message index %v: no message %d at depth %d", index, i, depth)
		}
		md = msgs.Get(i)
		msgs = md.Messages()
	}
	return md, nil
}
