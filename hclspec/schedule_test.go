package hclspec

import (
	"testing"
	"time"
)

func scheduleTrigger(t *testing.T, expr, tz string) Trigger {
	t.Helper()
	loc, err := time.LoadLocation(tz)
	if err != nil {
		t.Fatal(err)
	}
	s, err := parseSchedule(expr, loc)
	if err != nil {
		t.Fatalf("parseSchedule(%q): %v", expr, err)
	}
	return Trigger{Schedule: expr, Timezone: loc, schedule: s}
}

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

func TestTriggerSlots(t *testing.T) {
	tests := []struct {
		name, schedule, tz string
		now                string
		last, next         string // RFC 3339 in UTC; "" for none
	}{
		// @every slots are multiples of the duration since the epoch,
		// whatever the time zone of now.
		{"every 6h", "@every 6h", "UTC", "2026-03-29T05:59:59Z", "2026-03-29T00:00:00Z", "2026-03-29T06:00:00Z"},
		{"every 6h at a slot", "@every 6h", "UTC", "2026-03-29T06:00:00Z", "2026-03-29T06:00:00Z", "2026-03-29T12:00:00Z"},
		{"every 6h given Berlin time", "@every 6h", "Europe/Berlin", "2026-03-29T13:30:00+02:00", "2026-03-29T06:00:00Z", "2026-03-29T12:00:00Z"},
		{"every 90m", "@every 90m", "UTC", "2026-01-01T02:00:00Z", "2026-01-01T01:30:00Z", "2026-01-01T03:00:00Z"},

		// 07:00 in Berlin is 06:00 UTC in winter (CET) and 05:00 UTC in
		// summer (CEST). Summer time starts on 2026-03-29 and ends on
		// 2026-10-25, both Sundays.
		{"weekday before its slot", "0 7 * * MON-FRI", "Europe/Berlin", "2026-03-26T05:59:00Z", "2026-03-25T06:00:00Z", "2026-03-26T06:00:00Z"},
		{"weekday at its slot", "0 7 * * MON-FRI", "Europe/Berlin", "2026-03-26T06:00:00Z", "2026-03-26T06:00:00Z", "2026-03-27T06:00:00Z"},
		{"spring forward sunday", "0 7 * * MON-FRI", "Europe/Berlin", "2026-03-29T12:00:00Z", "2026-03-27T06:00:00Z", "2026-03-30T05:00:00Z"},
		{"first summer monday", "0 7 * * MON-FRI", "Europe/Berlin", "2026-03-30T05:00:00Z", "2026-03-30T05:00:00Z", "2026-03-31T05:00:00Z"},
		{"fall back sunday", "0 7 * * MON-FRI", "Europe/Berlin", "2026-10-25T12:00:00Z", "2026-10-23T05:00:00Z", "2026-10-26T06:00:00Z"},
		{"first winter monday", "0 7 * * MON-FRI", "Europe/Berlin", "2026-10-26T05:30:00Z", "2026-10-23T05:00:00Z", "2026-10-26T06:00:00Z"},
		{"same cron in UTC", "0 7 * * MON-FRI", "UTC", "2026-03-29T12:00:00Z", "2026-03-27T07:00:00Z", "2026-03-30T07:00:00Z"},

		// A yearly schedule whose last slot is months back.
		{"yearly", "0 0 1 1 *", "UTC", "2026-06-15T12:00:00Z", "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z"},
		{"yearly at its slot", "0 0 1 1 *", "UTC", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z"},
		{"yearly in Berlin", "0 0 1 1 *", "Europe/Berlin", "2026-12-31T22:59:59Z", "2025-12-31T23:00:00Z", "2026-12-31T23:00:00Z"},
		{"descriptor", "@daily", "UTC", "2026-03-29T12:00:00Z", "2026-03-29T00:00:00Z", "2026-03-30T00:00:00Z"},

		// A leap day last fired more than a year ago: LastSlot looks back
		// one year only.
		{"leap day", "0 0 29 2 *", "UTC", "2026-06-15T00:00:00Z", "", "2028-02-29T00:00:00Z"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := scheduleTrigger(t, tc.schedule, tc.tz)
			now, err := time.Parse(time.RFC3339, tc.now)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				name string
				fn   func(time.Time) (time.Time, bool)
				want string
			}{{"LastSlot", tr.LastSlot, tc.last}, {"NextSlot", tr.NextSlot, tc.next}} {
				got, ok := c.fn(now)
				if c.want == "" {
					if ok {
						t.Errorf("%s(%s) = %s, want none", c.name, tc.now, got.UTC().Format(time.RFC3339))
					}
					continue
				}
				if want := utc(c.want); !ok || !got.Equal(want) {
					t.Errorf("%s(%s) = %s, %v; want %s", c.name, tc.now, got.UTC().Format(time.RFC3339), ok, c.want)
				}
			}
		})
	}
}

func TestTriggerSlotsNotSchedule(t *testing.T) {
	for _, tr := range []Trigger{{OnSpecChange: true}, {Manual: true}} {
		if got, ok := tr.LastSlot(utc("2026-03-29T12:00:00Z")); ok {
			t.Errorf("LastSlot of %+v = %s, want none", tr, got)
		}
		if got, ok := tr.NextSlot(utc("2026-03-29T12:00:00Z")); ok {
			t.Errorf("NextSlot of %+v = %s, want none", tr, got)
		}
	}
}

// A cron expression that parses but names no real date must not make
// LastSlot loop: cron.Next returns the zero time for it, which is before
// every now.
func TestTriggerSlotsNeverFires(t *testing.T) {
	if _, err := parseSchedule("0 0 30 2 *", time.UTC); err == nil {
		t.Error("parseSchedule accepted February 30th")
	}
	s, err := cronParser.Parse("0 0 30 2 *")
	if err != nil {
		t.Fatal(err)
	}
	tr := Trigger{Schedule: "0 0 30 2 *", Timezone: time.UTC, schedule: schedule{cron: s}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if got, ok := tr.LastSlot(utc("2026-03-29T12:00:00Z")); ok {
			t.Errorf("LastSlot = %s, want none", got)
		}
		if got, ok := tr.NextSlot(utc("2026-03-29T12:00:00Z")); ok {
			t.Errorf("NextSlot = %s, want none", got)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("LastSlot does not return")
	}
}
