package main

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// The dial schedule of pulumi-command 1.2.1 (pulumi's retry.Until with its defaults): the first
// wait is 100 ms, each next one 1.5 times longer, none longer than 5 s.
const (
	firstWait   = 100 * time.Millisecond
	waitGrowth  = 1.5
	longestWait = 5 * time.Second
)

// backoff yields the waits between tries.
type backoff struct{ next time.Duration }

func (b *backoff) wait() time.Duration {
	if b.next == 0 {
		b.next = firstWait
	}
	d := b.next
	if d > longestWait {
		d = longestWait
	}
	b.next = time.Duration(float64(d) * waitGrowth)
	return d
}

// schedule: the waits between the tries of a dial that keeps failing, for a dialErrorLimit of
// limit (limit+1 tries, limit waits). For no limit (below 0) it returns the first n waits.
func schedule(limit, n int) []time.Duration {
	if limit >= 0 {
		n = limit
	}
	var b backoff
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = b.wait()
	}
	return out
}

// permanent marks an error that another try cannot change (a host key that does not match, a
// private key that cannot be read): retry returns it at once.
type permanent struct{ err error }

func (p *permanent) Error() string { return p.err.Error() }
func (p *permanent) Unwrap() error { return p.err }

// sleepCtx waits d, or less when ctx ends first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// retry calls try until it succeeds, fails permanently, or has failed limit+1 times (limit below 0:
// until ctx ends), waiting on the schedule above between tries. onRetry hears of each failure that
// is followed by another try.
func retry[T any](
	ctx context.Context, limit int, sleep func(context.Context, time.Duration) error,
	try func(n int) (T, error), onRetry func(n int, err error, wait time.Duration),
) (T, error) {
	var zero T
	var b backoff
	for n := 1; ; n++ {
		if err := ctx.Err(); err != nil {
			return zero, err
		}
		v, err := try(n)
		if err == nil {
			return v, nil
		}
		var p *permanent
		if errors.As(err, &p) {
			return zero, p.err
		}
		if limit >= 0 && n > limit {
			if n == 1 {
				return zero, err
			}
			return zero, fmt.Errorf("after %d failed attempts: %w", n, err)
		}
		w := b.wait()
		if onRetry != nil {
			onRetry(n, err, w)
		}
		if serr := sleep(ctx, w); serr != nil {
			return zero, fmt.Errorf("%w, after %d failed attempts (the last: %v)", serr, n, err)
		}
	}
}
