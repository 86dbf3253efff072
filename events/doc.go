// Package events owns the CloudEvents contract of Machine Server: the event
// type names, their payloads (Go types, JSON Schemas and one sample event
// each) and how a component publishes notifications: to its K_SINK (Sink)
// and to the tenant's event stream that GET /api/v1/stream/events serves
// (Tee).
//
// Commands are requests carried as events with the same meaning as the REST
// calls; notifications report a change after it happened and carry the whole
// resource as it is afterwards, so consumers never need to read it back.
// Type names are reverse-DNS and versioned: a payload change that breaks
// consumers gets a new version suffix, never an edit of a published schema.
package events
