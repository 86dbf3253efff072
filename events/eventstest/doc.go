// Package eventstest provides a CloudEvents sink for tests: an http.Handler
// that records the events posted to it, so a test can assert what a
// component published without a broker.
package eventstest
