package console

import "errors"

// ErrClosed means the session's console is gone (the session was deleted).
var ErrClosed = errors.New("console: closed")
