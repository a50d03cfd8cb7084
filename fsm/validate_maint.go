package fsm

import (
	"errors"
	"strings"
)

// ValidateMaintTarget checks a MAINT_ENTER/MAINT_EXIT target: ALL, a comma
// list of route IDs, a path ("/api") or one domain.
func ValidateMaintTarget(target string) error {
	switch {
	case target == TargetAll:
		return nil
	case strings.HasPrefix(target, "/"):
		return ValidatePath(target)
	case isRouteList(target):
		return nil
	}
	if d, err := ParseDomains(target); err != nil || len(d) != 1 || strings.Contains(target, ",") {
		return errors.New("invalid target: " + show(target) + " (ALL, route ids, a path or a domain)")
	}
	return nil
}

// isRouteList reports whether s is a comma list of route IDs.
func isRouteList(s string) bool {
	for _, id := range strings.Split(s, ",") {
		if ValidateRouteID(id) != nil {
			return false
		}
	}
	return true
}
