//go:build nomskiam || lean

package kafkaconn

import "github.com/segmentio/kafka-go/sasl"

// MSKIAMBuilt reports whether this build has AWS_MSK_IAM (not with the
// tag nomskiam or lean).
const MSKIAMBuilt = false

// awsMSKIAM is left out of this build (tag nomskiam or lean, which spares
// the binary the AWS SDK: 3 MB of resident memory).
func awsMSKIAM() (sasl.Mechanism, error) {
	return nil, fieldErr("Mechanism", "AWS_MSK_IAM is not in this build (built with -tags nomskiam or lean); use a build without them")
}
