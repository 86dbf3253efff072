// Package blob owns the artifact store: program images, manifests, snapshots
// and coverage reports live here, each under a slash-separated key such as
// "programs/<id>/image". One Store interface has two implementations: FS, a
// data directory for the standalone server, and S3, a bucket reached with
// minio-go for the distributed form. Artifacts outlive Redis, so the store,
// not the index, is the source of truth.
package blob
