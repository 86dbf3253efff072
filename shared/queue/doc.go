// Package queue owns the durable job queue: a Redis Stream read through a
// consumer group, so every job is delivered at least once. Enqueue is
// idempotent by job id (a dedup key set with NX in the same script as the
// XADD), a message whose worker died is reclaimed with XAUTOCLAIM once its
// lease (the message's idle time) passes, live workers extend their lease
// with XCLAIM, and deliveries are counted per job so a job that keeps killing
// its workers is handed out as exhausted instead of looping forever. It
// knows nothing about what a job is: the payload is the job id.
//
// It runs the same on redis-server and on miniredis (standalone mode):
// miniredis v2.40 implements XREADGROUP (with BLOCK), XACK, XAUTOCLAIM,
// XCLAIM, XPENDING, XDEL and EVAL, which is all this uses.
package queue
