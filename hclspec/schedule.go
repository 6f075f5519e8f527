package hclspec

import (
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// cronParser accepts the five standard fields and the @ descriptors
// (@hourly, @daily, ...). @every is handled separately so that its slots
// are aligned to the epoch and the same for every process.
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// schedule is a parsed schedule trigger.
type schedule struct {
	every time.Duration
	cron  cron.Schedule
}

func parseSchedule(expr string, loc *time.Location) (schedule, error) {
	if rest, ok := strings.CutPrefix(expr, "@every "); ok {
		d, err := time.ParseDuration(strings.TrimSpace(rest))
		if err != nil {
			return schedule{}, fmt.Errorf("@every needs a duration such as \"6h\" or \"30m\": %w", err)
		}
		if d < time.Minute {
			return schedule{}, fmt.Errorf("@every %s is shorter than the minimum of one minute", d)
		}
		return schedule{every: d}, nil
	}
	// robfig/cron reads a "TZ=" or "CRON_TZ=" prefix itself: it panics
	// when no space follows ("TZ=UTC"), and "TZ=UTC @every 1s" would get
	// around the minimum above. The time zone has its own argument.
	if strings.HasPrefix(expr, "TZ=") || strings.HasPrefix(expr, "CRON_TZ=") {
		return schedule{}, fmt.Errorf("a time zone goes in the trigger's timezone argument, not in the schedule")
	}
	s, err := cronParser.Parse(expr)
	if err != nil {
		return schedule{}, err
	}
	if spec, ok := s.(*cron.SpecSchedule); ok && loc != nil {
		spec.Location = loc
	}
	// Cron fields repeat at least every four years: a schedule with no
	// activation in the five years after a fixed instant never fires.
	if s.Next(time.Unix(0, 0)).IsZero() {
		return schedule{}, fmt.Errorf("it never fires (no such date)")
	}
	return schedule{cron: s}, nil
}

// epoch aligns @every slots: the same instants for every process.
var epoch = time.Unix(0, 0).UTC()

// last returns the most recent activation at or before now, and false when
// there was none within the last year.
func (s schedule) last(now time.Time) (time.Time, bool) {
	switch {
	case s.every > 0:
		return epoch.Add(now.Sub(epoch) / s.every * s.every).In(now.Location()), true
	case s.cron != nil:
		// Step back through growing windows until one contains an
		// activation, then walk forward to the last one before now.
		for _, window := range []time.Duration{time.Hour, 24 * time.Hour, 32 * 24 * time.Hour, 366 * 24 * time.Hour} {
			var last time.Time
			for next := s.cron.Next(now.Add(-window)); !next.IsZero() && !next.After(now); next = s.cron.Next(next) {
				last = next
			}
			if !last.IsZero() {
				return last, true
			}
		}
	}
	return time.Time{}, false
}

// next returns the first activation after now, and false when there is
// none.
func (s schedule) next(now time.Time) (time.Time, bool) {
	switch {
	case s.every > 0:
		t, _ := s.last(now)
		return t.Add(s.every), true
	case s.cron != nil:
		next := s.cron.Next(now)
		return next, !next.IsZero()
	}
	return time.Time{}, false
}

// LastSlot returns the most recent time at or before now when the schedule
// fired, and false when the trigger is not a schedule or has not fired within
// the last year.
func (t Trigger) LastSlot(now time.Time) (time.Time, bool) { return t.schedule.last(now) }

// NextSlot returns the next time after now when the schedule fires, and
// false when the trigger is not a schedule or never fires.
func (t Trigger) NextSlot(now time.Time) (time.Time, bool) { return t.schedule.next(now) }
