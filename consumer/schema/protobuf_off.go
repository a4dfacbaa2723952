//go:build noprotobuf || lean

package schema

import (
	"context"
	"errors"
)

// ProtobufBuilt reports whether this build decodes Protobuf schemas (not
// with the tag noprotobuf or lean).
const ProtobufBuilt = false

// compileProtobuf is left out of this build (tag noprotobuf or lean, which
// spares the binary protocompile and protobuf reflection: 2.8 MB of
// resident memory). A record of a Protobuf schema is dead-lettered as
// decode_failed with this error, to be replayed by a full build.
func compileProtobuf(context.Context, string, map[string]string) (*compiled, error) {
	return nil, errors.New("schemas of type PROTOBUF are not in this build (built with -tags noprotobuf or lean); run a build without them and replay the dead letters")
}
