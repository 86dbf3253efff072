// Package state owns the live state kept in Redis: sessions, the program index
// and the runner registry. The same go-redis code runs against a real Redis
// server in the distributed form and against the embedded miniredis in
// standalone mode. Artifacts themselves live in the blob store; the program
// index here can be rebuilt from their manifests.
package state
