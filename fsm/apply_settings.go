package fsm

import (
	"slices"
	"strings"
	"time"
)

// checkTarget accepts ALL or a route the session has staged or active.
func (a *applyCtx) checkTarget(target string) *Result {
	if err := ValidateTarget(target); err != nil {
		r := fail("%v", err)
		return &r
	}
	if target == TargetAll {
		return nil
	}
	if _, i := a.stagedRoute(target); i < 0 {
		r := fail(ErrRouteNotFound)
		return &r
	}
	return nil
}

func (a *applyCtx) setting() (SettingPayload, *Result) {
	var p SettingPayload
	if err := a.cmd.Decode(&p); err != nil {
		r := fail("invalid format: %v", err)
		return p, &r
	}
	return p, a.checkTarget(p.Target)
}

func setKV(m map[string]map[string]string, target, key, value string) (map[string]map[string]string, bool) {
	if m == nil {
		m = make(map[string]map[string]string)
	}
	if m[target] == nil {
		m[target] = make(map[string]string)
	}
	if _, exists := m[target][key]; !exists && countKV(m) >= MaxSettingsPerKind {
		return m, false
	}
	m[target][key] = value
	return m, true
}

func countKV(m map[string]map[string]string) int {
	n := 0
	for _, kv := range m {
		n += len(kv)
	}
	return n
}

func removeKV(m map[string]map[string]string, target, key string) {
	if kv := m[target]; kv != nil {
		delete(kv, key)
		if len(kv) == 0 {
			delete(m, target)
		}
	}
}

func applyHeadersSet(a *applyCtx) Result {
	p, bad := a.setting()
	if bad != nil {
		return *bad
	}
	if err := ValidateHeaderName(p.Key); err != nil {
		return fail("%v", err)
	}
	if err := ValidateHeaderValue(p.Value); err != nil {
		return fail("%v", err)
	}
	c := a.staged()
	var ok bool
	if c.Headers, ok = setKV(c.Headers, p.Target, p.Key, p.Value); !ok {
		return fail("too many headers (max %d)", MaxSettingsPerKind)
	}
	return Result{}
}

func applyHeadersRemove(a *applyCtx) Result {
	p, bad := a.setting()
	if bad != nil {
		return *bad
	}
	removeKV(a.staged().Headers, p.Target, p.Key)
	return Result{}
}

func applyOptionsSet(a *applyCtx) Result {
	p, bad := a.setting()
	if bad != nil {
		return *bad
	}
	v, err := NormalizeOption(p.Key, p.Value)
	if err != nil {
		return fail("%v", err)
	}
	c := a.staged()
	var ok bool
	if c.Options, ok = setKV(c.Options, p.Target, p.Key, v); !ok {
		return fail("too many options (max %d)", MaxSettingsPerKind)
	}
	return Result{}
}

func applyOptionsRemove(a *applyCtx) Result {
	p, bad := a.setting()
	if bad != nil {
		return *bad
	}
	if _, err := NormalizeOption(p.Key, ""); err != nil && strings.HasPrefix(err.Error(), "unknown option") {
		return fail("%v", err)
	}
	removeKV(a.staged().Options, p.Target, p.Key)
	return Result{}
}

func applyHealthSet(a *applyCtx) Result {
	p, bad := a.setting()
	if bad != nil {
		return *bad
	}
	c := a.staged()
	if p.Health == nil {
		delete(c.Health, p.Target)
		return Result{}
	}
	h := *p.Health
	if err := ValidateHealth(h.Path, time.Duration(h.Interval), time.Duration(h.Timeout)); err != nil {
		return fail("%v", err)
	}
	if c.Health == nil {
		c.Health = make(map[string]HealthCheck)
	}
	c.Health[p.Target] = h
	return Result{}
}

func applyRateLimitSet(a *applyCtx) Result {
	p, bad := a.setting()
	if bad != nil {
		return *bad
	}
	c := a.staged()
	if p.RateLimit == nil || p.RateLimit.Requests == 0 {
		delete(c.RateLimit, p.Target)
		return Result{}
	}
	rl := *p.RateLimit
	if err := ValidateRateLimit(rl.Requests, time.Duration(rl.Window)); err != nil {
		return fail("%v", err)
	}
	if c.RateLimit == nil {
		c.RateLimit = make(map[string]RateLimit)
	}
	c.RateLimit[p.Target] = rl
	return Result{}
}

func applyCircuitBreakerSet(a *applyCtx) Result {
	p, bad := a.setting()
	if bad != nil {
		return *bad
	}
	c := a.staged()
	if p.CircuitBreaker == nil {
		delete(c.CircuitBreaker, p.Target)
		return Result{}
	}
	cb := *p.CircuitBreaker
	cb.ResetGeneration = 0
	if err := ValidateCircuitBreaker(cb.Threshold, time.Duration(cb.Timeout), cb.HalfOpenRequests); err != nil {
		return fail("%v", err)
	}
	if c.CircuitBreaker == nil {
		c.CircuitBreaker = make(map[string]CircuitBreaker)
	}
	c.CircuitBreaker[p.Target] = cb
	return Result{}
}

func applyConfigApply(a *applyCtx) Result {
	var p ApplyPayload
	if len(a.cmd.Payload) > 0 {
		if err := a.cmd.Decode(&p); err != nil {
			return fail("invalid format: %v", err)
		}
	}
	scopes := p.Scopes
	if len(scopes) == 0 {
		scopes = AllScopes
	}
	if a.sess.Staged == nil {
		return Result{}
	}
	var next Config
	if len(p.Scopes) == 0 {
		// Staged is a full copy of its own and is dropped below: it
		// becomes the active configuration without another copy.
		next = *a.sess.Staged
	} else {
		next = a.sess.Active.merge(a.sess.Staged, scopes)
	}
	gone, come := diffRoutes(a.sess.Active.Routes, next.Routes)
	if msg := validateRoutes(a.st, a.sess, come); msg != "" {
		return fail("%s", msg)
	}
	targets := changedTargets(&a.sess.Active, &next)
	a.st.removeOwner(a.sess, gone)
	a.sess.Active = next
	a.st.addOwner(a.sess, come)
	// What the table must recompute: the routes removed or edited, and
	// either every route now active (an ALL setting changed) or the added
	// ones and those whose own settings changed.
	for _, r := range gone {
		a.routesChanged(a.sess.ID, r.ID)
	}
	if slices.Contains(targets, TargetAll) {
		a.sessionChanged(a.sess)
	} else {
		for _, r := range come {
			a.routesChanged(a.sess.ID, r.ID)
		}
		a.routesChanged(a.sess.ID, targets...)
	}
	if len(p.Scopes) == 0 || a.sess.Staged.equal(&a.sess.Active) {
		a.sess.Staged = nil
	}
	a.sess.LastApply = a.cmd.At
	a.sess.Maintenance.Routes = keepActive(a.sess.Maintenance.Routes, &a.sess.Active)
	if len(a.sess.Maintenance.Routes) == 0 {
		a.sess.Maintenance = Maintenance{}
	}
	return Result{}
}

func applyConfigRollback(a *applyCtx) Result {
	a.sess.Staged = nil
	return Result{}
}
