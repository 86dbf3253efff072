package qmp

import (
	"errors"
	"fmt"
)

// ErrClosed is returned by Execute on a monitor whose connection has ended
// (or was closed), and wrapped into the error of requests still waiting when
// the connection ends.
var ErrClosed = errors.New("qmp: monitor closed")

// Error is an error reply from QEMU, e.g. Class "CommandNotFound".
type Error struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *Error) Error() string {
	return fmt.Sprintf("qmp: %s: %s", e.Class, e.Desc)
}
