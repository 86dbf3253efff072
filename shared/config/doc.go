// Package config owns the configuration pieces every binary shares (Redis,
// S3, logging, the event sink) and the start-up plumbing built from them. Each
// binary still has one Config struct, parsed once in main with envconfig;
// these are embedded in it.
package config
