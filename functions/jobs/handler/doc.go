// Package handler is the jobs function's transport and workers: test jobs
// (run a program on a board, judge it by console patterns, a UART script
// and the semihosting exit code, store the console log) and the job rules
// over REST and CloudEvents, adapting the use cases of functions/jobs/job,
// and the workers that run the jobs from the Redis job queue (shared/queue).
//
// The workers live here, in the jobs function, not in the runner: the
// function owns the queue and the job records, and a worker only drives a
// session through the session use cases (functions/sessions/session, as
// snapshots does), exactly as a user would over the API. Runners stay plain emulator
// hosts that know nothing about jobs, so a job can run on any runner with
// free capacity, and a runner that dies takes only its emulators with it;
// the job's lease lapses and another worker runs it again. How many jobs
// run at once is MS_JOB_WORKERS per jobs process.
package handler
