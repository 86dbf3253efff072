package auth

import (
	"context"
	"fmt"

	"github.com/cloudevents/sdk-go/v2/event"
)

// EventTenantExtension is the CloudEvents extension attribute naming the
// tenant of a command that arrives through the in-cluster Broker. A
// function's POST / is not authenticated: only the Broker reaches it (the
// public HTTPRoute exposes /api/v1 paths only), so whoever can publish to
// the Broker is trusted to say the tenant; absent, it is "default".
const EventTenantExtension = "tenant"

// EventContext returns ctx with the principal a command event acts as: the
// authenticated caller's when the event came through an authenticated
// ingress (standalone /events/*), otherwise the event's tenant attribute,
// acting as "event:<source>" with read, write and debug scopes.
func EventContext(ctx context.Context, e event.Event) (context.Context, error) {
	if p, ok := FromContext(ctx); ok && p.Actor != anonymous.Actor {
		return ctx, nil
	}
	tenant := DefaultTenant
	if v, ok := e.Extensions()[EventTenantExtension]; ok {
		s, ok := v.(string)
		if !ok {
			return ctx, fmt.Errorf("the %q extension attribute must be a string", EventTenantExtension)
		}
		if err := ValidTenant(s); err != nil {
			return ctx, err
		}
		tenant = s
	}
	return WithPrincipal(ctx, Principal{
		Actor: "event:" + e.Source(), Tenant: tenant, Scopes: []Scope{ScopeRead, ScopeWrite, ScopeDebug},
	}), nil
}
