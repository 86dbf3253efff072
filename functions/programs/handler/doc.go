// Package handler is the programs function: upload (multipart REST or a
// CloudEvent carrying the image), list, get and delete firmware programs.
// Each program is stored in the blob store as its image plus a manifest
// written last; the Redis index is rebuilt from manifests by Reindex, so
// losing Redis never loses a program. It never reads the environment.
package handler
