package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"log"
	"log/slog"
	"sort"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// Raft logs through hclog and memberlist through the standard log package.
// Both are routed into the node's slog logger here, one record per line,
// so operators see one structured stream.

// hclogWriter receives hclog's JSON lines.
type hclogWriter struct{ log *slog.Logger }

func (w hclogWriter) Write(p []byte) (int, error) {
	for _, line := range bytes.Split(bytes.TrimSpace(p), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			w.log.Info(string(line))
			continue
		}
		lvl := parseLevel(strings.ToUpper(asString(m["@level"])))
		msg := asString(m["@message"])
		attrs := []any{}
		if mod := asString(m["@module"]); mod != "" {
			attrs = append(attrs, "module", mod)
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			if !strings.HasPrefix(k, "@") {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		for _, k := range keys {
			attrs = append(attrs, k, m[k])
		}
		w.log.Log(context.Background(), lvl, msg, attrs...)
	}
	return len(p), nil
}

func asString(v any) string {
	s, _ := v.(string)
	return s
}

func parseLevel(s string) slog.Level {
	switch {
	case strings.HasPrefix(s, "ERR"):
		return slog.LevelError
	case strings.HasPrefix(s, "WARN"):
		return slog.LevelWarn
	case strings.HasPrefix(s, "DEBUG"), strings.HasPrefix(s, "TRACE"):
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

func newHCLogger(l *slog.Logger, name string) hclog.Logger {
	level := hclog.Info
	if l.Enabled(context.Background(), slog.LevelDebug) {
		level = hclog.Debug
	}
	return hclog.New(&hclog.LoggerOptions{
		Name: name, Level: level, Output: hclogWriter{l}, JSONFormat: true, DisableTime: true,
	})
}

// stdlogWriter receives memberlist's "[LEVEL] memberlist: message" lines.
type stdlogWriter struct{ log *slog.Logger }

func (w stdlogWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimSpace(string(p)), "\n") {
		lvl := slog.LevelInfo
		if strings.HasPrefix(line, "[") {
			if end := strings.IndexByte(line, ']'); end > 0 {
				lvl = parseLevel(line[1:end])
				line = strings.TrimSpace(line[end+1:])
			}
		}
		line = strings.TrimPrefix(line, "memberlist: ")
		w.log.Log(context.Background(), lvl, line, "module", "memberlist")
	}
	return len(p), nil
}

func newStdLogger(l *slog.Logger) *log.Logger { return log.New(stdlogWriter{l}, "", 0) }
