package redisstore

import (
	"context"
	"fmt"
	"log/slog"
)

// Logger adapts log to go-redis's logger (redis.SetLogger), at DEBUG: go-redis
// prints a line of its own for every failed dial and dropped connection,
// thousands a second while Redis is away, and the replica already says once
// that the store is unreachable, and once that it is back.
func Logger(log *slog.Logger) interface {
	Printf(ctx context.Context, format string, v ...any)
} {
	return slogPrinter{log}
}

type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Printf(ctx context.Context, format string, v ...any) {
	if p.log.Enabled(ctx, slog.LevelDebug) {
		p.log.DebugContext(ctx, fmt.Sprintf(format, v...), "source", "go-redis")
	}
}
