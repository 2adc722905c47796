package main

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func ms(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }

func TestScheduleIsPulumiCommands(t *testing.T) {
	// 100 ms, then x1.5 each time, never more than 5 s: the program's dial_error_limit 15 gives 16
	// tries over about 36 s.
	want := []time.Duration{ms(100), ms(150), ms(225), ms(337.5), ms(506.25), ms(759.375), ms(1139.0625),
		ms(1708.59375), ms(2562.890625), ms(3844.3359375), 5 * time.Second, 5 * time.Second, 5 * time.Second,
		5 * time.Second, 5 * time.Second}
	got := schedule(15, 0)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("schedule(15) =\n %v\nwant\n %v", got, want)
	}
	var total time.Duration
	for _, d := range got {
		total += d
	}
	if total < 36*time.Second || total > 37*time.Second {
		t.Errorf("15 waits take %v, want about 36 s", total)
	}
	if n := len(schedule(10, 0)); n != 10 {
		t.Errorf("the default limit waits %d times, want 10", n)
	}
	if n := len(schedule(-1, 30)); n != 30 {
		t.Errorf("no limit: %d waits", n)
	}
}

// recorder is a retry sleep that waits for nothing and remembers what it was asked to wait.
type recorder struct{ waits []time.Duration }

func (r *recorder) sleep(_ context.Context, d time.Duration) error {
	r.waits = append(r.waits, d)
	return nil
}

func TestRetryGivesUpAfterTheLimit(t *testing.T) {
	var rec recorder
	tries := 0
	_, err := retry(context.Background(), 3, rec.sleep, func(int) (int, error) {
		tries++
		return 0, errors.New("connection refused")
	}, nil)
	if tries != 4 {
		t.Errorf("%d tries with limit 3, want 4", tries)
	}
	if !reflect.DeepEqual(rec.waits, schedule(3, 0)) {
		t.Errorf("waits %v", rec.waits)
	}
	if err == nil || !strings.Contains(err.Error(), "after 4 failed attempts: connection refused") {
		t.Errorf("err = %v", err)
	}
}

func TestRetryStopsAtTheFirstSuccess(t *testing.T) {
	var rec recorder
	var heard []int
	v, err := retry(context.Background(), 10, rec.sleep, func(n int) (string, error) {
		if n < 3 {
			return "", errors.New("reset by peer")
		}
		return "ok", nil
	}, func(n int, _ error, _ time.Duration) { heard = append(heard, n) })
	if err != nil || v != "ok" {
		t.Fatalf("v=%q err=%v", v, err)
	}
	if !reflect.DeepEqual(heard, []int{1, 2}) || len(rec.waits) != 2 {
		t.Errorf("retries heard %v, waits %v", heard, rec.waits)
	}
}

func TestRetryZeroLimitTriesOnce(t *testing.T) {
	var rec recorder
	tries := 0
	_, err := retry(context.Background(), 0, rec.sleep, func(int) (int, error) {
		tries++
		return 0, errors.New("refused")
	}, nil)
	if tries != 1 || len(rec.waits) != 0 || err == nil || err.Error() != "refused" {
		t.Errorf("tries=%d waits=%v err=%v", tries, rec.waits, err)
	}
}

func TestRetryDoesNotRetryAPermanentFailure(t *testing.T) {
	var rec recorder
	tries := 0
	mismatch := errors.New("host key verification failed")
	_, err := retry(context.Background(), 15, rec.sleep, func(int) (int, error) {
		tries++
		return 0, &permanent{mismatch}
	}, nil)
	if tries != 1 || !errors.Is(err, mismatch) {
		t.Errorf("tries=%d err=%v", tries, err)
	}
}

func TestRetryWithoutALimitStopsWithTheContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	tries := 0
	_, err := retry(ctx, -1, func(ctx context.Context, _ time.Duration) error {
		if tries == 50 {
			cancel()
		}
		return ctx.Err()
	}, func(int) (int, error) {
		tries++
		return 0, errors.New("refused")
	}, nil)
	if tries != 50 || !errors.Is(err, context.Canceled) {
		t.Errorf("tries=%d err=%v", tries, err)
	}
}
