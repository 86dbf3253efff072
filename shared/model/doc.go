// Package model holds the domain types shared by the functions and the runner:
// sessions, programs, board configurations and their JSON shapes. It has no
// behaviour beyond small validity helpers, so every component agrees on the wire
// format.
package model
