// Package job holds the test job use cases: create (once per event, too),
// get, list, cancel, stats and the console log of jobs, the job rules that
// queue a job for every program stored under a bucket key prefix, and the
// events jobs publish. The jobs function's REST and CloudEvents adapters
// and its workers (functions/jobs/handler) call them. It knows no
// transport: failures are domain errors (shared/fail) that each adapter
// maps to its own codes.
//
// Jobs and rules belong to the tenant of the request that created them
// (auth.Tenant of the context); another tenant's job or rule is answered
// exactly like an unknown id.
package job
