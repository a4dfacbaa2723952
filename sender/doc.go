// Package sender is a client for Tencent Cloud Chat's
// v4/group_open_http_svc/send_broadcast_msg REST API: it validates and
// encodes messages, signs requests with a cached UserSig, paces calls to the
// app's rate limit, classifies the server's answers and retries what can be
// retried with the same body bytes and Random. It knows nothing of Kafka.
//
// Files follow one call: message.go (the request body and its validation),
// client.go (the Client), pacing.go (the rate limit and its adaptation),
// retry.go (the attempt loop and its backoff), usersig.go (signatures),
// endpoint.go (regions, failover), request.go (one HTTP request, redacted),
// transport.go (the keep-alive connections it goes over, written and read
// on the caller's goroutine; peek_*.go checks an idle one), response.go
// (the answer), errors.go (the error table and classes).
package sender
