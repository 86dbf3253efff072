// Package handler is the programs function's transport: the REST routes
// (each declared with the scope it needs) with the multipart upload, the
// program command CloudEvents, and the bucket notification receivers (S3
// event JSON on a webhook, or the AWS S3 adapter CloudEvents), over the use
// cases of functions/programs/program. It never reads the environment:
// main builds its dependencies.
package handler
