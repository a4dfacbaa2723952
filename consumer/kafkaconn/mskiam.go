//go:build !nomskiam && !lean

package kafkaconn

import (
	"context"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/aws_msk_iam_v2"
)

// MSKIAMBuilt reports whether this build has AWS_MSK_IAM (not with the
// tag nomskiam or lean).
const MSKIAMBuilt = true

// awsMSKIAM is the AWS_MSK_IAM mechanism, signed with the credentials of
// the AWS SDK's default chain (environment, shared files, web identity,
// container and instance roles) in AWS_REGION.
func awsMSKIAM() (sasl.Mechanism, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	awsCfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fieldErr("Mechanism", "AWS_MSK_IAM: cannot load AWS credentials (the default chain, AWS_REGION): %v", err)
	}
	if awsCfg.Region == "" {
		return nil, fieldErr("Mechanism", "AWS_MSK_IAM needs AWS_REGION")
	}
	return aws_msk_iam_v2.NewMechanism(awsCfg), nil
}
