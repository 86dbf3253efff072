// Package cgroup owns the per-emulator resource limits: it finds which
// cgroup hierarchy this machine lets the runner write (v2's unified tree,
// v1's cpu and memory controllers, or none), keeps one parent group per
// runner and one child group per emulator process with its CPU quota and
// memory cap, and tells whether the kernel's OOM killer ended a group's
// process.
package cgroup
