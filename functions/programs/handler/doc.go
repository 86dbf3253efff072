// Package handler is the programs function: upload (multipart REST or a
// CloudEvent carrying the image), list, get and delete firmware programs,
// and the object-upload trigger: bucket notifications (S3 event JSON on a
// webhook, or the AWS S3 adapter CloudEvents) register each new object of a
// watched bucket exactly once, or as rejected with the reason.
// Each program is stored in the blob store as its image plus a manifest
// written last; the Redis index is rebuilt from manifests by Reindex, so
// losing Redis never loses a program. Programs belong to a tenant; another
// tenant's program is answered as not found. It never reads the environment.
package handler
