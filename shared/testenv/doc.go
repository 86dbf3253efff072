// Package testenv starts the real services that tests run against (redis-server
// and versitygw, an S3 gateway) as child processes on free loopback ports, and
// stops them again. Each service gets its own temp directory and is killed and
// reaped when the test ends, whether it passed or not; on Linux the kernel also
// kills it if the test binary itself dies. A missing binary fails the test with
// a pointer to `make test`, which installs the tools.
//
// Tests use Redis and S3, which tie the service to a testing.TB; TestMain uses
// StartRedis and StartS3, which return a stop function instead.
package testenv
