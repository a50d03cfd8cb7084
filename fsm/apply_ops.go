package fsm

import (
	"sort"
	"strings"
	"time"
)

func applyDrainStart(a *applyCtx) Result {
	var p DrainPayload
	if err := a.cmd.Decode(&p); err != nil {
		return fail("invalid format: %v", err)
	}
	if p.Duration <= 0 {
		return fail("invalid duration: must be positive")
	}
	a.sess.Drain = &Drain{StartedAt: a.cmd.At, Duration: p.Duration}
	a.sessionChanged(a.sess)
	return Result{Value: time.Unix(0, a.sess.Drain.EndsAt()).UTC().Format(time.RFC3339)}
}

func applyDrainCancel(a *applyCtx) Result {
	if a.sess.Drain == nil {
		return fail(ErrNoDrain)
	}
	a.sess.Drain = nil
	a.sessionChanged(a.sess)
	return Result{}
}

// resolveTarget turns a maintenance target into route IDs among routes:
// ALL, a comma list of route IDs, a path ("/api") or a domain.
func resolveTarget(target string, routes []Route) ([]string, string) {
	var out []string
	switch {
	case target == TargetAll:
		for _, r := range routes {
			out = append(out, r.ID)
		}
	case isRouteList(target):
		for _, id := range strings.Split(target, ",") {
			found := false
			for _, r := range routes {
				if r.ID == id {
					found = true
				}
			}
			if !found {
				return nil, ErrRouteNotFound
			}
			out = append(out, id)
		}
	case strings.HasPrefix(target, "/"):
		for _, r := range routes {
			if r.Path == target {
				out = append(out, r.ID)
			}
		}
	default:
		d := strings.ToLower(target)
		for _, r := range routes {
			for _, rd := range r.Domains {
				if rd == d {
					out = append(out, r.ID)
					break
				}
			}
		}
	}
	if len(out) == 0 {
		return nil, "no route matches target: " + show(target)
	}
	return sortedUnique(out), ""
}

func applyMaintEnter(a *applyCtx) Result {
	var p MaintPayload
	if err := a.cmd.Decode(&p); err != nil {
		return fail("invalid format: %v", err)
	}
	if err := ValidateMaintTarget(p.Target); err != nil {
		return fail("%v", err)
	}
	if p.Backend != "" {
		if err := ValidateBackendURL(p.Backend); err != nil {
			return fail("%v", err)
		}
	}
	ids, msg := resolveTarget(p.Target, a.sess.Active.Routes)
	if msg != "" {
		return fail("%s", msg)
	}
	m := &a.sess.Maintenance
	m.Routes = sortedUnique(append(m.Routes, ids...))
	m.Backend = p.Backend
	m.EnteredAt = a.cmd.At
	a.sessionChanged(a.sess)
	return Result{Value: strings.Join(ids, ",")}
}

func applyMaintExit(a *applyCtx) Result {
	var p MaintPayload
	if err := a.cmd.Decode(&p); err != nil {
		return fail("invalid format: %v", err)
	}
	var inMaint []Route
	for _, id := range a.sess.Maintenance.Routes {
		if r := a.sess.Active.route(id); r != nil {
			inMaint = append(inMaint, *r)
		}
	}
	ids, msg := resolveTarget(p.Target, inMaint)
	if msg != "" {
		return fail("not in maintenance: %s", show(p.Target))
	}
	drop := make(map[string]bool, len(ids))
	for _, id := range ids {
		drop[id] = true
	}
	var keep []string
	for _, id := range a.sess.Maintenance.Routes {
		if !drop[id] {
			keep = append(keep, id)
		}
	}
	a.sess.Maintenance.Routes = keep
	if len(keep) == 0 {
		a.sess.Maintenance = Maintenance{}
	}
	a.sessionChanged(a.sess)
	return Result{Value: strings.Join(ids, ",")}
}

func applySubscribe(a *applyCtx) Result {
	var p SubscribePayload
	if err := a.cmd.Decode(&p); err != nil {
		return fail("invalid format: %v", err)
	}
	if err := ValidateEventType(p.Type); err != nil {
		return fail("%v", err)
	}
	a.sess.Subscriptions = sortedUnique(append(a.sess.Subscriptions, p.Type))
	return Result{}
}

func applyUnsubscribe(a *applyCtx) Result {
	var p SubscribePayload
	if err := a.cmd.Decode(&p); err != nil {
		return fail("invalid format: %v", err)
	}
	if err := ValidateEventType(p.Type); err != nil {
		return fail("%v", err)
	}
	if p.Type == "all" {
		a.sess.Subscriptions = nil
		return Result{}
	}
	var keep []string
	for _, t := range a.sess.Subscriptions {
		if t != p.Type {
			keep = append(keep, t)
		}
	}
	a.sess.Subscriptions = keep
	return Result{}
}

func applyCircuitBreakerReset(a *applyCtx) Result {
	var p RoutePayload
	if err := a.cmd.Decode(&p); err != nil {
		return fail("invalid format: %v", err)
	}
	if a.sess.Active.route(p.RouteID) == nil {
		return fail(ErrRouteNotFound)
	}
	if a.sess.BreakerResets == nil {
		a.sess.BreakerResets = make(map[string]uint64)
	}
	a.sess.BreakerResets[p.RouteID]++
	a.routesChanged(a.sess.ID, p.RouteID)
	return Result{}
}

func applyDetachNode(a *applyCtx) Result {
	var p DetachNodePayload
	if err := a.cmd.Decode(&p); err != nil {
		return fail("invalid format: %v", err)
	}
	var detached []string
	for _, id := range a.st.sortedSessionIDs() {
		s := a.st.Sessions[id]
		if s.Attachment.Node != p.Node {
			continue
		}
		if p.KeepIncarnation != "" && strings.HasPrefix(s.Attachment.Conn, p.KeepIncarnation+"-") {
			continue
		}
		s.Attachment = Attachment{}
		if a.cmd.At > s.LastActivity {
			s.LastActivity = a.cmd.At
		}
		detached = append(detached, id)
	}
	return Result{Value: strings.Join(detached, ",")}
}

func applyExtendLeases(a *applyCtx) Result {
	for _, s := range a.st.Sessions {
		if !s.Attachment.Attached() && a.cmd.At > s.LastActivity {
			s.LastActivity = a.cmd.At
		}
	}
	return Result{}
}

func applyDiscardStaged(a *applyCtx) Result {
	var p SessionsPayload
	if err := a.cmd.Decode(&p); err != nil {
		return fail("invalid format: %v", err)
	}
	for _, id := range p.Sessions {
		if s := a.st.Sessions[id]; s != nil && s.Staged != nil && a.cmd.At-s.StagedAt > p.Grace {
			s.Staged = nil
		}
	}
	return Result{}
}

func sortedUnique(in []string) []string {
	if len(in) == 0 {
		return nil
	}
	out := append([]string(nil), in...)
	sort.Strings(out)
	w := 1
	for i := 1; i < len(out); i++ {
		if out[i] != out[w-1] {
			out[w] = out[i]
			w++
		}
	}
	return out[:w]
}

func keepActive(ids []string, c *Config) []string {
	var out []string
	for _, id := range ids {
		if c.route(id) != nil {
			out = append(out, id)
		}
	}
	return out
}
