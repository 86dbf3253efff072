package events

import "strings"

// Bucket notification CloudEvent types, as the CloudEvents AWS S3 adapter
// spec names them: "com.amazonaws.s3." plus the record's eventName without
// MinIO's and versitygw's "s3:" prefix. The data is one S3Record.
const (
	TypeS3ObjectCreatedPut       = "com.amazonaws.s3.ObjectCreated:Put"
	TypeS3ObjectCreatedPost      = "com.amazonaws.s3.ObjectCreated:Post"
	TypeS3ObjectCreatedCopy      = "com.amazonaws.s3.ObjectCreated:Copy"
	TypeS3ObjectCreatedMultipart = "com.amazonaws.s3.ObjectCreated:CompleteMultipartUpload"
)

// S3ObjectCreatedTypes lists the bucket notification CloudEvent types that
// mean a new object.
var S3ObjectCreatedTypes = []string{TypeS3ObjectCreatedPut, TypeS3ObjectCreatedPost, TypeS3ObjectCreatedCopy, TypeS3ObjectCreatedMultipart}

// S3TestEvent is the Event of the message a store sends to check a new
// webhook (AWS, and versitygw at every start); it carries no records.
const S3TestEvent = "s3:TestEvent"

// S3Notification is the JSON body an S3-compatible store POSTs to a webhook:
// AWS and versitygw send Records; MinIO adds EventName and Key; a test
// message has Event "s3:TestEvent" and no records.
type S3Notification struct {
	Records   []S3Record `json:"Records,omitempty"`
	Event     string     `json:"Event,omitempty"`
	EventName string     `json:"EventName,omitempty"`
	Key       string     `json:"Key,omitempty"`
}

// S3Record is one notification record, and the data of the bucket
// notification CloudEvents. Only the fields the platform reads or a sample
// shows are modelled; others are ignored when decoding.
type S3Record struct {
	EventVersion     string              `json:"eventVersion,omitempty"`
	EventSource      string              `json:"eventSource,omitempty"`
	AWSRegion        string              `json:"awsRegion,omitempty"`
	EventTime        string              `json:"eventTime,omitempty"`
	EventName        string              `json:"eventName"`
	ResponseElements *S3ResponseElements `json:"responseElements,omitempty"`
	S3               S3Entity            `json:"s3"`
}

// S3ResponseElements identify the request that caused the event; the AWS
// S3 adapter spec builds the CloudEvent id from them.
type S3ResponseElements struct {
	RequestID string `json:"x-amz-request-id,omitempty"`
	ID2       string `json:"x-amz-id-2,omitempty"`
}

// S3Entity names the bucket and the object.
type S3Entity struct {
	SchemaVersion   string   `json:"s3SchemaVersion,omitempty"`
	ConfigurationID string   `json:"configurationId,omitempty"`
	Bucket          S3Bucket `json:"bucket"`
	Object          S3Object `json:"object"`
}

// S3Bucket is the record's bucket.
type S3Bucket struct {
	Name string `json:"name"`
	ARN  string `json:"arn,omitempty"`
}

// S3Object is the record's object. AWS and MinIO URL-encode Key (a space
// is "+"); versitygw sends it as is.
type S3Object struct {
	Key       string `json:"key"`
	Size      int64  `json:"size,omitempty"`
	ETag      string `json:"eTag,omitempty"`
	VersionID string `json:"versionId,omitempty"`
	Sequencer string `json:"sequencer,omitempty"`
}

// ObjectCreated reports whether the record is about a new object, in any
// sender's spelling ("s3:ObjectCreated:Put" or "ObjectCreated:Put").
func (r S3Record) ObjectCreated() bool {
	return strings.HasPrefix(strings.TrimPrefix(r.EventName, "s3:"), "ObjectCreated:")
}

// S3EventType is the CloudEvent type of a record, per the AWS S3 adapter
// spec.
func S3EventType(eventName string) string {
	return "com.amazonaws.s3." + strings.TrimPrefix(eventName, "s3:")
}
