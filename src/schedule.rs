//! When a campaign may send, as pure functions of a time: send windows (`[schedule]`: a time
//! zone, weekdays, daily hours, an optional `not_before`; and a recipient's own zone from
//! `[contacts] timezone_column`) and the warm-up allowance (`[rate] warmup` with `daily_cap`).
//! Time zones come from jiff's bundled copy of the IANA database, so a machine's own tzdata
//! does not change when mail goes out.
//!
//! It owns the arithmetic only: the dispatcher asks [`Window::status`] before it claims a block
//! and [`allowance`] once per run; the time itself comes from the run's injected clock
//! ([`crate::clock::Clock`]), so tests decide what time it is. It must not read the ledger, sleep
//! or know about SMTP.

use jiff::Timestamp;
use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;

/// One day in milliseconds.
pub const DAY_MS: i64 = 24 * 3600 * 1000;

/// Where a send window stands at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Sending is allowed until `closes_at` (unix ms).
    Open { closes_at: i64 },
    /// Sending is not allowed before `opens_at` (unix ms); `None` when it never opens again
    /// (no weekday is allowed).
    Closed { opens_at: Option<i64> },
}

/// A validated `[schedule]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    zone: TimeZone,
    zone_name: String,
    /// Monday first.
    days: [bool; 7],
    /// Minutes after local midnight: `[start, end)`.
    start: u16,
    end: u16,
    not_before: Option<Timestamp>,
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// The time zone named `name` (IANA, e.g. `Europe/Berlin`, or `UTC`).
///
/// # Errors
/// The reason when the name is not in the time zone database.
pub fn zone(name: &str) -> Result<TimeZone, String> {
    TimeZone::get(name.trim()).map_err(|_| {
        format!("{name:?} is not a time zone of the IANA database (e.g. \"Europe/Berlin\", \"America/New_York\", \"UTC\")")
    })
}

fn parse_hhmm(s: &str) -> Option<u16> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    ((h < 24 && m < 60) || (h == 24 && m == 0)).then_some(h * 60 + m)
}

impl Window {
    /// Builds a window; every `Err` is a reason naming the value, for the key's line.
    ///
    /// # Errors
    /// An unknown zone, day, a malformed or empty `hours` range, or a `not_before` that is not
    /// `YYYY-MM-DD HH:MM` (local to the zone).
    pub fn new(
        timezone: &str,
        days: &[String],
        hours: &str,
        not_before: Option<&str>,
    ) -> Result<Window, (&'static str, String)> {
        let zone = zone(timezone).map_err(|e| ("timezone", e))?;
        let mut allowed = [days.is_empty(); 7];
        for d in days {
            let i = DAY_NAMES
                .iter()
                .position(|n| d.trim().to_ascii_lowercase().starts_with(n) && d.trim().len() >= 3)
                .ok_or_else(|| {
                    (
                        "days",
                        format!("{d:?} is not a weekday: use \"mon\", \"tue\", ... \"sun\""),
                    )
                })?;
            allowed[i] = true;
        }
        let (start, end) = hours
            .split_once('-')
            .and_then(|(a, b)| Some((parse_hhmm(a)?, parse_hhmm(b)?)))
            .ok_or_else(|| {
                (
                    "hours",
                    format!("{hours:?} is not a range of hours such as \"09:00-17:30\""),
                )
            })?;
        if end <= start {
            return Err((
                "hours",
                format!("{hours:?} ends before it starts (a window cannot span midnight)"),
            ));
        }
        let not_before = match not_before {
            None => None,
            Some(s) => Some(parse_local(s, &zone).map_err(|e| ("not_before", e))?),
        };
        Ok(Window {
            zone,
            zone_name: timezone.trim().to_owned(),
            days: allowed,
            start,
            end,
            not_before,
        })
    }

    /// The zone's name as configured.
    pub fn zone_name(&self) -> &str {
        &self.zone_name
    }

    /// The window at `now` (unix ms), in the campaign's zone or in `zone` (a recipient's own).
    pub fn status(&self, now: i64, zone: Option<&TimeZone>) -> Status {
        let zone = zone.unwrap_or(&self.zone);
        let now_ts = Timestamp::from_millisecond(now).unwrap_or(Timestamp::UNIX_EPOCH);
        if let Some(nb) = self.not_before
            && now_ts < nb
        {
            return Status::Closed {
                opens_at: self.next_open(nb, zone),
            };
        }
        let local = now_ts.to_zoned(zone.clone());
        let minute =
            u16::from(local.hour().unsigned_abs()) * 60 + u16::from(local.minute().unsigned_abs());
        let day = usize::from(local.weekday().to_monday_zero_offset().unsigned_abs());
        if self.days[day] && (self.start..self.end).contains(&minute) {
            let closes = at_minute(local.date(), self.end, zone);
            return Status::Open {
                closes_at: closes.map_or(i64::MAX, |t| t.as_millisecond()),
            };
        }
        Status::Closed {
            opens_at: self.next_open(now_ts, zone),
        }
    }

    /// The first opening at or after `from`.
    fn next_open(&self, from: Timestamp, zone: &TimeZone) -> Option<i64> {
        let local = from.to_zoned(zone.clone());
        let mut date = local.date();
        // Two weeks: a weekday's opening can be skipped once by a daylight-saving change.
        for _ in 0..15 {
            let day = usize::from(date.weekday().to_monday_zero_offset().unsigned_abs());
            if self.days[day] {
                for candidate in [at_minute(date, self.start, zone), Some(from)] {
                    // Inside today's hours already (from `not_before`): open at `from`.
                    let Some(t) = candidate else { continue };
                    if t >= from && self.status_ignoring_not_before(t, zone) {
                        return Some(t.as_millisecond());
                    }
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }

    fn status_ignoring_not_before(&self, t: Timestamp, zone: &TimeZone) -> bool {
        let local = t.to_zoned(zone.clone());
        let minute =
            u16::from(local.hour().unsigned_abs()) * 60 + u16::from(local.minute().unsigned_abs());
        let day = usize::from(local.weekday().to_monday_zero_offset().unsigned_abs());
        self.days[day] && (self.start..self.end).contains(&minute)
    }
}

/// `date` at `minute` after midnight in `zone` (24:00 is the next midnight). A local time that
/// a daylight-saving change skips moves forward by the change (02:30 on the night clocks go
/// from 02:00 to 03:00 is 03:30), as jiff's "compatible" rule (and RFC 5545) does.
fn at_minute(date: Date, minute: u16, zone: &TimeZone) -> Option<Timestamp> {
    let (date, minute) = if minute >= 24 * 60 {
        (date.tomorrow().ok()?, minute - 24 * 60)
    } else {
        (date, minute)
    };
    let time = Time::new(
        i8::try_from(minute / 60).ok()?,
        i8::try_from(minute % 60).ok()?,
        0,
        0,
    )
    .ok()?;
    DateTime::from_parts(date, time)
        .to_zoned(zone.clone())
        .ok()
        .map(|z| z.timestamp())
}

/// `YYYY-MM-DD HH:MM` (or `YYYY-MM-DD`, or with a `T`) local to `zone`.
fn parse_local(s: &str, zone: &TimeZone) -> Result<Timestamp, String> {
    let t = s.trim().replace(' ', "T");
    let dt: Result<DateTime, _> = if t.contains('T') {
        t.parse()
    } else {
        t.parse::<Date>().map(|d| d.at(0, 0, 0, 0))
    };
    dt.ok()
        .and_then(|dt| dt.to_zoned(zone.clone()).ok())
        .map(|z| z.timestamp())
        .ok_or_else(|| format!("{s:?} is not a local time such as \"2026-12-07 09:00\""))
}

/// Today's allowance of a From domain: `min(warmup[day], daily_cap)`, where day 1 is the first
/// 24 hours after the domain's first accepted message in the ledger (`first_accepted`, none yet:
/// day 1) and the list's last value holds after its end. `None`: no limit.
pub fn allowance(
    warmup: &[u64],
    daily_cap: Option<u64>,
    first_accepted: Option<i64>,
    now: i64,
) -> Option<u64> {
    let day = warmup_day(first_accepted, now);
    let step = usize::try_from(day - 1).unwrap_or(usize::MAX);
    let warm = warmup.get(step).or(warmup.last()).copied();
    match (warm, daily_cap) {
        (Some(w), Some(c)) => Some(w.min(c)),
        (w, c) => w.or(c),
    }
}

/// Today's allowance of one From domain, as `check`, `send` and reports show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Allowance {
    pub from_domain: String,
    /// Warm-up day (1 = the first 24 hours after the domain's first accepted message); `None`
    /// without `[rate] warmup`.
    pub warmup_day: Option<u64>,
    /// Messages allowed in any 24 hours today: `min(warmup[day], daily_cap)`.
    pub limit: u64,
    /// Accepted in the last 24 hours (test sends and seeds never count).
    pub sent: u64,
    /// What may still go now.
    pub left: u64,
}

/// [`allowance`] with what the ledger says about `from_domain` (see
/// `store::Reader::domain_sending`); `None` without a cap or a warm-up.
pub fn today(
    from_domain: &str,
    warmup: &[u64],
    daily_cap: Option<u64>,
    (first_accepted, sent): (Option<i64>, u64),
    now: i64,
) -> Option<Allowance> {
    let limit = allowance(warmup, daily_cap, first_accepted, now)?;
    Some(Allowance {
        from_domain: from_domain.to_owned(),
        warmup_day: (!warmup.is_empty()).then(|| warmup_day(first_accepted, now)),
        limit,
        sent,
        left: limit.saturating_sub(sent),
    })
}

impl std::fmt::Display for Allowance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "today's allowance for {}: {} of {} left ({} accepted in the last 24 hours",
            self.from_domain, self.left, self.limit, self.sent
        )?;
        match self.warmup_day {
            Some(day) => write!(f, "; warm-up day {day})"),
            None => f.write_str(")"),
        }
    }
}

/// The warm-up day at `now`: whole 24-hour periods since `first_accepted`, plus 1.
pub fn warmup_day(first_accepted: Option<i64>, now: i64) -> u64 {
    first_accepted.map_or(1, |first| {
        u64::try_from(now.saturating_sub(first).max(0) / DAY_MS).unwrap_or(0) + 1
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Unix ms of a local time in `zone`.
    fn at(s: &str, zone: &str) -> i64 {
        parse_local(s, &super::zone(zone).unwrap())
            .unwrap()
            .as_millisecond()
    }

    fn window(days: &[&str], hours: &str, not_before: Option<&str>) -> Window {
        let days: Vec<String> = days.iter().map(|d| (*d).to_owned()).collect();
        Window::new("Europe/Berlin", &days, hours, not_before).unwrap()
    }

    #[test]
    fn open_inside_the_hours_of_an_allowed_day_until_they_end() {
        let w = window(&["mon", "tue"], "09:00-17:30", None);
        // Monday 2026-12-07.
        let b = |s| at(s, "Europe/Berlin");
        assert_eq!(
            w.status(b("2026-12-07 09:00"), None),
            Status::Open {
                closes_at: b("2026-12-07 17:30")
            }
        );
        assert_eq!(
            w.status(b("2026-12-07 17:29"), None),
            Status::Open {
                closes_at: b("2026-12-07 17:30")
            }
        );
        assert_eq!(
            w.status(b("2026-12-07 08:59"), None),
            Status::Closed {
                opens_at: Some(b("2026-12-07 09:00"))
            }
        );
        assert_eq!(
            w.status(b("2026-12-07 17:30"), None),
            Status::Closed {
                opens_at: Some(b("2026-12-08 09:00"))
            }
        );
        // Tuesday evening: next Monday.
        assert_eq!(
            w.status(b("2026-12-08 20:00"), None),
            Status::Closed {
                opens_at: Some(b("2026-12-14 09:00"))
            }
        );
    }

    #[test]
    fn a_recipients_own_zone_decides_for_that_recipient() {
        let w = window(&[], "09:00-17:00", None);
        let ny = zone("America/New_York").unwrap();
        // 15:00 in Berlin is 09:00 in New York (in December).
        let now = at("2026-12-07 15:00", "Europe/Berlin");
        assert_eq!(
            w.status(now, Some(&ny)),
            Status::Open {
                closes_at: at("2026-12-07 17:00", "America/New_York")
            }
        );
        let early = at("2026-12-07 14:00", "Europe/Berlin");
        assert_eq!(
            w.status(early, Some(&ny)),
            Status::Closed {
                opens_at: Some(now)
            }
        );
    }

    #[test]
    fn not_before_holds_the_window_shut_until_then() {
        let w = window(&[], "09:00-17:00", Some("2026-12-09 12:30"));
        let b = |s| at(s, "Europe/Berlin");
        assert_eq!(
            w.status(b("2026-12-07 10:00"), None),
            Status::Closed {
                opens_at: Some(b("2026-12-09 12:30"))
            }
        );
        assert_eq!(
            w.status(b("2026-12-09 12:30"), None),
            Status::Open {
                closes_at: b("2026-12-09 17:00")
            }
        );
        // After hours on that day: the next morning.
        let late = window(&[], "09:00-17:00", Some("2026-12-09 18:00"));
        assert_eq!(
            late.status(b("2026-12-01 10:00"), None),
            Status::Closed {
                opens_at: Some(b("2026-12-10 09:00"))
            }
        );
    }

    #[test]
    fn daylight_saving_changes_move_the_instants_not_the_local_hours() {
        let w = window(&["sun"], "02:30-05:00", None);
        // 2026-03-29: Berlin skips 02:00-03:00, so 02:30 that night is 03:30.
        let before = at("2026-03-28 12:00", "Europe/Berlin");
        let Status::Closed {
            opens_at: Some(opens),
        } = w.status(before, None)
        else {
            panic!("{:?}", w.status(before, None))
        };
        assert_eq!(opens, at("2026-03-29 03:30", "Europe/Berlin"));
        assert_eq!(opens - before, (15 * 60 + 30) * 60 * 1000 - 3600 * 1000);
        // The hours are local: in summer 05:00 is 03:00 UTC, in winter 04:00 UTC.
        let Status::Open { closes_at } = w.status(opens, None) else {
            panic!()
        };
        assert_eq!(closes_at, at("2026-03-29 05:00", "Europe/Berlin"));
        assert_eq!(closes_at % (24 * 3600 * 1000), 3 * 3600 * 1000);
    }

    #[test]
    fn bad_values_name_their_key() {
        let none: [String; 0] = [];
        assert_eq!(
            Window::new("Mars/Olympus", &none, "09:00-17:00", None)
                .unwrap_err()
                .0,
            "timezone"
        );
        assert_eq!(
            Window::new("UTC", &["funday".into()], "09:00-17:00", None)
                .unwrap_err()
                .0,
            "days"
        );
        for hours in ["9-17", "17:00-09:00", "09:00-25:00", "09:00"] {
            assert_eq!(
                Window::new("UTC", &none, hours, None).unwrap_err().0,
                "hours",
                "{hours}"
            );
        }
        assert_eq!(
            Window::new("UTC", &none, "00:00-24:00", Some("next week"))
                .unwrap_err()
                .0,
            "not_before"
        );
        assert!(Window::new("UTC", &none, "00:00-24:00", None).is_ok());
    }

    #[test]
    fn warmup_days_count_whole_24_hour_periods_and_the_last_value_holds() {
        let w = [50, 100, 250];
        let first = 1_000_000;
        assert_eq!(allowance(&w, None, None, first), Some(50));
        assert_eq!(
            allowance(&w, None, Some(first), first + DAY_MS - 1),
            Some(50)
        );
        assert_eq!(allowance(&w, None, Some(first), first + DAY_MS), Some(100));
        assert_eq!(
            allowance(&w, None, Some(first), first + 2 * DAY_MS),
            Some(250)
        );
        assert_eq!(
            allowance(&w, None, Some(first), first + 40 * DAY_MS),
            Some(250)
        );
        assert_eq!(
            allowance(&w, Some(80), Some(first), first + DAY_MS),
            Some(80)
        );
        assert_eq!(allowance(&[], Some(80), Some(first), first), Some(80));
        assert_eq!(allowance(&[], None, None, first), None);
        assert_eq!(warmup_day(Some(first), first + 3 * DAY_MS + 5), 4);
    }
}
