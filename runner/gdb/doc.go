// Package gdb owns debugger access to a session's emulator: the runner's
// listeners (direct TCP and the WebSocket tunnel) in front of QEMU's gdbstub,
// which stays on a unix socket. An Endpoint admits one debugger at a time,
// refuses others with a message gdb prints, audit-logs who attached, and
// cuts every link when the session goes away.
//
// It also has the client half of the tunnel (DialTunnel, Pipe) that msctl
// uses, so both ends of the byte stream are one package.
package gdb
