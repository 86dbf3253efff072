// Command jobs is the jobs function: a Knative Service serving the test jobs
// REST API and the job CloudEvents (POST /), and running the workers that
// take jobs from the Redis job queue.
package main

import (
	"context"
	"fmt"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/machineserver/machineserver/functions/jobs/handler"
	"github.com/machineserver/machineserver/functions/sessions/session"
	"github.com/machineserver/machineserver/shared/config"
	"github.com/machineserver/machineserver/shared/quota"
)

// Config is read once from the environment.
type Config struct {
	config.Distributed
	config.Security
	Port        string `envconfig:"PORT" default:"8080"`
	RunnerToken string `envconfig:"MS_RUNNER_TOKEN" required:"true"`
	// Workers is how many jobs this process runs at once.
	Workers int `envconfig:"MS_JOB_WORKERS" default:"2"`
	// Lease is how long a job's worker may be silent before another worker
	// takes the job over.
	Lease time.Duration `envconfig:"MS_JOB_LEASE" default:"30s"`
	// MaxAttempts bounds the runs of one job (a job that keeps killing its
	// worker ends as error).
	MaxAttempts int `envconfig:"MS_JOB_MAX_ATTEMPTS" default:"3"`
	// Quota is the per-tenant limits (MS_QUOTA_*): job sessions count as
	// sessions, and running jobs against the jobs limit.
	Quota quota.Config
}

func main() { config.Run("jobs", run) }

func run(ctx context.Context) error {
	var cfg Config
	if err := envconfig.Process("", &cfg); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	svc, err := cfg.Open(ctx, "jobs")
	if err != nil {
		return err
	}
	defer svc.Close()
	q, err := svc.State.Queue(ctx, handler.QueueConfig(cfg.Lease, cfg.MaxAttempts))
	if err != nil {
		return err
	}
	quotas := svc.State.Quota(cfg.Quota)
	sh := session.New(session.Deps{State: svc.State, Blobs: svc.Blobs, Publisher: svc.Publisher, RunnerToken: cfg.RunnerToken, Log: svc.Log.With("component", "sessions"), Quota: quotas})
	h := handler.New(handler.Deps{State: svc.State, Blobs: svc.Blobs, Sessions: sh, Queue: q, Publisher: svc.Publisher, Log: svc.Log, Quota: quotas})
	h.Start(ctx, cfg.Workers)
	defer h.Stop()
	guard, err := cfg.Authenticator(ctx, svc.State, true, svc.Log)
	if err != nil {
		return err
	}
	return config.ServeFunction(ctx, cfg.Port, h, guard, svc.Log)
}
