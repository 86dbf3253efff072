//go:build !linux

package testenv

import "syscall"

// procAttr: only Linux can tie a child's life to ours; elsewhere we rely on
// the cleanups.
func procAttr() *syscall.SysProcAttr { return nil }
