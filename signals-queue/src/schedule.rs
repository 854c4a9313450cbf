//! When a periodic signal's ticks fall, and which of them the leader fires now; no I/O.
//!
//! An `every` schedule ticks at the multiples of its period since the Unix epoch (so
//! `every = "1h"` ticks on the hour, whichever worker computes it, whenever it started); a
//! `cron` schedule ticks where its pattern matches the wall clock of its time zone (UTC unless
//! given). Across a daylight-saving change a zoned schedule follows croner's rules: a time the
//! clock skips (02:30 on the night it springs forward) fires at the first time after the gap
//! for a fixed-time pattern and is skipped by an interval pattern (`*/15 * * * *`); a time the
//! clock passes twice (the hour it falls back) fires once for a fixed-time pattern and at each
//! match for an interval pattern.

#[cfg(feature = "cron")]
use std::str::FromStr;

use crate::clock::Millis;

/// Not public API. A periodic signal's schedule as `#[signal(...)]` wrote it.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub enum ScheduleSpec {
    /// `every = "1h"`, in milliseconds.
    Every(u64),
    /// `cron = "0 3 * * *"` and its time zone (`zone = "..."`, else `"UTC"`).
    Cron(&'static str, &'static str),
}

/// A schedule, parsed: where its ticks fall.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// Ticks at the multiples of this many milliseconds since the Unix epoch.
    Every(i64),
    /// Ticks where the pattern matches the zone's wall clock.
    #[cfg(feature = "cron")]
    Cron(Box<croner::Cron>, jiff::tz::TimeZone),
}

impl Schedule {
    /// Parses `spec`.
    ///
    /// # Errors
    ///
    /// What is wrong with a cron pattern or a time zone, in words.
    pub fn parse(spec: ScheduleSpec) -> Result<Schedule, String> {
        match spec {
            ScheduleSpec::Every(millis) => {
                Ok(Schedule::Every(millis.clamp(1, i64::MAX as u64) as i64))
            }
            #[cfg(not(feature = "cron"))]
            ScheduleSpec::Cron(pattern, _) => Err(format!(
                "the cron pattern `{pattern}` needs signals-queue's `cron` feature"
            )),
            #[cfg(feature = "cron")]
            ScheduleSpec::Cron(pattern, zone) => {
                let cron = croner::Cron::from_str(pattern)
                    .map_err(|error| format!("the cron pattern `{pattern}`: {error}"))?;
                let zone = jiff::tz::TimeZone::get(zone)
                    .map_err(|error| format!("the time zone `{zone}`: {error}"))?;
                Ok(Schedule::Cron(Box::new(cron), zone))
            }
        }
    }

    /// The latest tick at or before `now` (milliseconds since the epoch); `None` if the
    /// pattern never matched before `now`.
    pub fn latest(&self, now: Millis) -> Option<Millis> {
        match self {
            Schedule::Every(period) => Some(now.div_euclid(*period) * period),
            #[cfg(feature = "cron")]
            Schedule::Cron(cron, zone) => {
                let now = jiff::Timestamp::from_millisecond(now)
                    .ok()?
                    .to_zoned(zone.clone());
                let tick = cron.find_previous_occurrence(&now, true).ok()?;
                Some(tick.timestamp().as_millisecond())
            }
        }
    }

    /// The first tick after `after`; `None` if the pattern never matches again.
    pub fn next(&self, after: Millis) -> Option<Millis> {
        match self {
            Schedule::Every(period) => Some((after.div_euclid(*period) + 1) * period),
            #[cfg(feature = "cron")]
            Schedule::Cron(cron, zone) => {
                let after = jiff::Timestamp::from_millisecond(after)
                    .ok()?
                    .to_zoned(zone.clone());
                let tick = cron.find_next_occurrence(&after, false).ok()?;
                Some(tick.timestamp().as_millisecond())
            }
        }
    }
}

/// Which tick of a periodic signal the leader fires at `now`, if any: the latest one due,
/// when it is later than the last fired (`last`); a signal never fired fires only ticks after
/// `since` (when the leader first looked at it), so deploying a nightly schedule at noon does
/// not fire last night's tick. Missed ticks are not fired one by one: only the latest.
pub fn due(
    schedule: &Schedule,
    now: Millis,
    last: Option<Millis>,
    since: Millis,
) -> Option<Millis> {
    let latest = schedule.latest(now)?;
    let floor = last.unwrap_or(since);
    let later = match last {
        Some(_) => latest > floor,
        None => latest > floor || latest == since,
    };
    later.then_some(latest)
}

/// What the leader knows of each periodic signal it fires: its schedule, the last tick fired
/// (read from the database once, then kept), and when it first looked (for [`due`]).
#[derive(Debug)]
pub struct Ticker {
    signals: Vec<Ticking>,
}

#[derive(Debug)]
struct Ticking {
    path: &'static str,
    schedule: Schedule,
    /// The last tick fired: `None` until read from the database.
    last: Option<Option<Millis>>,
    since: Option<Millis>,
}

impl Ticker {
    /// The periodic signals `signals` (full path, schedule), nothing known yet.
    pub fn new(signals: impl IntoIterator<Item = (&'static str, Schedule)>) -> Ticker {
        let signals = signals
            .into_iter()
            .map(|(path, schedule)| Ticking {
                path,
                schedule,
                last: None,
                since: None,
            })
            .collect();
        Ticker { signals }
    }

    /// The signal `index`'s full path (its ticks' key).
    pub fn path(&self, index: usize) -> &'static str {
        self.signals[index].path
    }

    /// The signals that may have a tick due at `now`: a latest tick later than the last one
    /// known fired, or none known yet.
    pub fn looking(&mut self, now: Millis) -> Vec<usize> {
        let mut looking = Vec::new();
        for (index, signal) in self.signals.iter_mut().enumerate() {
            signal.since.get_or_insert(now);
            let latest = signal.schedule.latest(now);
            let known = signal.last.flatten();
            if latest.is_some_and(|latest| known.is_none_or(|last| latest > last)) {
                looking.push(index);
            }
        }
        looking
    }

    /// Whether the last tick of `index` fired must be read from the database first.
    pub fn needs_last(&self, index: usize) -> bool {
        self.signals[index].last.is_none()
    }

    /// The last tick of `index` fired, as the database has it.
    pub fn set_last(&mut self, index: usize, last: Option<Millis>) {
        self.signals[index].last = Some(last);
    }

    /// The tick of `index` to fire at `now`, if any (see [`due`]).
    pub fn due(&self, index: usize, now: Millis) -> Option<Millis> {
        let signal = &self.signals[index];
        let since = signal.since.unwrap_or(now);
        due(&signal.schedule, now, signal.last.flatten(), since)
    }

    /// The tick `tick` of `index` fired, here or by another worker.
    pub fn fired(&mut self, index: usize, tick: Millis) {
        self.signals[index].last = Some(Some(tick));
    }

    /// Forgets what the database said: another worker led meanwhile.
    pub fn forget(&mut self) {
        for signal in &mut self.signals {
            signal.last = None;
        }
    }

    /// How long from `now` until the next tick of any signal, at most `cap`.
    pub fn wait(&self, now: Millis, cap: std::time::Duration) -> std::time::Duration {
        self.signals
            .iter()
            .filter_map(|signal| signal.schedule.next(now))
            .map(|next| std::time::Duration::from_millis((next - now).max(0) as u64))
            .fold(cap, std::cmp::min)
    }
}

/// Not public API. Used by generated code: a cron schedule, or (without the `cron` feature)
/// one compile error at the pattern saying what to enable.
#[doc(hidden)]
#[macro_export]
#[cfg(feature = "cron")]
macro_rules! __cron {
    ($pattern:expr, $zone:expr) => {
        $crate::__private::ScheduleSpec::Cron($pattern, $zone)
    };
}

/// See the `cron` feature's twin.
#[doc(hidden)]
#[macro_export]
#[cfg(not(feature = "cron"))]
macro_rules! __cron {
    ($pattern:expr, $zone:expr) => {
        ::core::compile_error!(
            "cron schedules need signals-queue's `cron` feature (on by default): enable it, or use `every = \"...\"`"
        )
    };
}

#[cfg(all(test, feature = "cron"))]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    fn at(text: &str) -> Millis {
        text.parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn an_every_schedule_ticks_on_multiples_of_its_period_since_the_epoch() {
        let hourly = Schedule::parse(ScheduleSpec::Every(HOUR as u64)).unwrap();
        let now = at("2026-12-07T16:42:10Z");
        assert_eq!(hourly.latest(now), Some(at("2026-12-07T16:00:00Z")));
        assert_eq!(hourly.next(now), Some(at("2026-12-07T17:00:00Z")));
        assert_eq!(
            hourly.latest(at("2026-12-07T16:00:00Z")),
            Some(at("2026-12-07T16:00:00Z"))
        );
    }

    #[test]
    fn a_cron_schedule_ticks_on_its_zones_wall_clock() {
        let utc = Schedule::parse(ScheduleSpec::Cron("0 3 * * *", "UTC")).unwrap();
        assert_eq!(
            utc.latest(at("2026-12-07T16:42:10Z")),
            Some(at("2026-12-07T03:00:00Z"))
        );
        assert_eq!(
            utc.next(at("2026-12-07T16:42:10Z")),
            Some(at("2026-12-08T03:00:00Z"))
        );
        // Paris is an hour ahead of UTC in December.
        let paris = Schedule::parse(ScheduleSpec::Cron("0 3 * * *", "Europe/Paris")).unwrap();
        assert_eq!(
            paris.latest(at("2026-12-07T16:42:10Z")),
            Some(at("2026-12-07T02:00:00Z"))
        );
    }

    #[test]
    fn a_fixed_time_in_the_hour_a_zone_skips_fires_after_the_gap_once() {
        // Europe/Paris springs forward on 2026-03-29: 02:00 becomes 03:00 (01:00 UTC).
        let paris = Schedule::parse(ScheduleSpec::Cron("30 2 * * *", "Europe/Paris")).unwrap();
        let next = paris.next(at("2026-03-29T00:00:00Z")).unwrap();
        assert_eq!(
            next,
            at("2026-03-29T01:00:00Z"),
            "03:00 local, just after the gap"
        );
        let after = paris.next(next).unwrap();
        assert_eq!(after, at("2026-03-30T00:30:00Z"), "then 02:30 local again");
    }

    #[test]
    fn wrong_patterns_and_zones_are_reported_in_words() {
        let error = Schedule::parse(ScheduleSpec::Cron("61 * * * *", "UTC")).unwrap_err();
        assert!(error.contains("the cron pattern `61 * * * *`"), "{error}");
        let error = Schedule::parse(ScheduleSpec::Cron("0 3 * * *", "Mars/Olympus")).unwrap_err();
        assert!(error.contains("the time zone `Mars/Olympus`"), "{error}");
    }

    #[test]
    fn only_the_latest_missed_tick_is_due_and_a_new_signal_waits_for_its_first() {
        let hourly = Schedule::parse(ScheduleSpec::Every(HOUR as u64)).unwrap();
        let now = at("2026-12-07T16:42:10Z");
        // Fired at 12:00, nothing ran since: 16:00 fires, once.
        let last = Some(at("2026-12-07T12:00:00Z"));
        assert_eq!(
            due(&hourly, now, last, now),
            Some(at("2026-12-07T16:00:00Z"))
        );
        let fired = Some(at("2026-12-07T16:00:00Z"));
        assert_eq!(due(&hourly, now, fired, now), None);
        // Never fired, first looked at now: nothing until 17:00.
        assert_eq!(due(&hourly, now, None, now), None);
        let later = at("2026-12-07T17:00:00.250Z");
        assert_eq!(
            due(&hourly, later, None, now),
            Some(at("2026-12-07T17:00:00Z"))
        );
        // A leader that starts exactly on a tick fires it.
        let on_tick = at("2026-12-07T17:00:00Z");
        assert_eq!(due(&hourly, on_tick, None, on_tick), Some(on_tick));
    }

    #[test]
    fn the_ticker_reads_the_last_tick_once_and_waits_for_the_next() {
        let second = Schedule::parse(ScheduleSpec::Every(1_000)).unwrap();
        let mut ticker = Ticker::new([("app::Tick", second)]);
        let now = at("2026-12-07T16:42:10.400Z");
        assert_eq!(ticker.looking(now), [0]);
        assert!(ticker.needs_last(0));
        ticker.set_last(0, Some(at("2026-12-07T16:42:09Z")));
        assert_eq!(ticker.due(0, now), Some(at("2026-12-07T16:42:10Z")));
        ticker.fired(0, at("2026-12-07T16:42:10Z"));
        assert!(
            ticker.looking(now).is_empty(),
            "fired: nothing until the next second"
        );
        let cap = std::time::Duration::from_secs(1);
        assert_eq!(ticker.wait(now, cap), std::time::Duration::from_millis(600));
        assert_eq!(ticker.looking(now + 600), [0]);
        assert!(!ticker.needs_last(0));
        ticker.forget();
        assert!(ticker.needs_last(0), "after another leader, read again");
    }
}
