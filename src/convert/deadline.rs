//! Per-row deadlines (`[input.columns] send_before`): a cell read as the last moment its row may
//! be sent, and checked against when the input's rows would be sent. A check never reads the clock:
//! the send time is the caller's ([`SendAt`]), so reading an input again decides as before.

use crate::config::Zone;
use chrono::offset::LocalResult;
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta, TimeZone, Timelike, Utc};
use serde::Serialize;
use std::fmt::Write;

/// When an input's rows would be sent: what each row's `send_before` is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SendAt {
    /// The moment the input's batches would go out.
    pub at: DateTime<Utc>,
    /// True when that moment is later than the conversion (a send window opens then): a row
    /// rejected for its deadline then names it.
    pub later: bool,
    /// The zone a deadline without an offset is wall-clock in (`[batch] timezone`).
    #[serde(skip)]
    pub zone: Zone,
}

impl SendAt {
    /// Sent as soon as converted: now, by the system clock.
    pub fn now(zone: Zone) -> Self {
        SendAt {
            at: Utc::now(),
            later: false,
            zone,
        }
    }
}

/// The last moment a row may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    /// Up to and including this instant (a date and time).
    Until(DateTime<Utc>),
    /// Strictly before this instant (a date: the start of the next day).
    Before(DateTime<Utc>),
    /// A date so far ahead that its next day cannot be written.
    Never,
}

/// How one input's deadlines are read and checked: built once, when the column is configured.
#[derive(Debug, Clone)]
pub(super) struct Deadlines {
    date_format: String,
    with_minutes: String,
    with_seconds: String,
    send: SendAt,
    /// The send time as a reason shows it (`Mon 14/12/2026 08:00`), when it is not now.
    shown: Option<String>,
}

/// ISO 8601 forms without an offset, after `[input] date_format`'s.
const ISO_TIMES: [&str; 4] = [
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d %H:%M:%S",
];

impl Deadlines {
    /// Reads deadlines in `date_format` (and ISO 8601) against `send`.
    pub(super) fn new(date_format: &str, send: SendAt) -> Self {
        let shown = send.later.then(|| {
            let mut s = String::new();
            let local = in_zone(send.zone, send.at);
            if write!(s, "{}", local.format(&format!("%a {date_format} %H:%M"))).is_err() {
                s.clear();
                let _ = write!(s, "{}", local.format("%a %d/%m/%Y %H:%M"));
            }
            s
        });
        Deadlines {
            date_format: date_format.to_owned(),
            with_minutes: format!("{date_format} %H:%M"),
            with_seconds: format!("{date_format} %H:%M:%S"),
            send,
            shown,
        }
    }

    /// Checks one row's `send_before` cell; an empty cell is no deadline.
    ///
    /// # Errors
    /// The row's rejection: the cell is not a date, or the deadline is before the send time.
    pub(super) fn check(&self, cell: &str) -> Result<(), String> {
        let cell = cell.trim();
        if cell.is_empty() {
            return Ok(());
        }
        let late = match self.parse(cell) {
            Some(Deadline::Until(t)) => self.send.at > t,
            Some(Deadline::Before(t)) => self.send.at >= t,
            Some(Deadline::Never) => false,
            None => {
                let f = &self.date_format;
                return Err(format!(
                    "send_before {:?} is not a date in {f} (or {f} %H:%M, or ISO 8601)",
                    super::rules::clip(cell)
                ));
            }
        };
        match (late, &self.shown) {
            (false, _) => Ok(()),
            (true, Some(when)) => Err(format!(
                "past its send_before ({cell}): it would be sent {when}"
            )),
            (true, None) => Err(format!("past its send_before ({cell})")),
        }
    }

    /// The deadline `cell` writes, in the first form that reads it whole.
    fn parse(&self, cell: &str) -> Option<Deadline> {
        let zone = self.send.zone;
        let wall = |t: NaiveDateTime| Deadline::Until(local_to_utc(zone, t));
        let day = |d: NaiveDate| match d.succ_opt() {
            Some(next) => Deadline::Before(local_to_utc(zone, next.and_time(Default::default()))),
            None => Deadline::Never,
        };
        // A date_format with a time of its own is a date-time.
        if let Ok(t) = NaiveDateTime::parse_from_str(cell, &self.date_format) {
            return Some(wall(t));
        }
        if let Ok(d) = NaiveDate::parse_from_str(cell, &self.date_format) {
            return Some(day(d));
        }
        for f in [&self.with_minutes, &self.with_seconds] {
            if let Ok(t) = NaiveDateTime::parse_from_str(cell, f) {
                return Some(wall(t));
            }
        }
        if let Ok(d) = NaiveDate::parse_from_str(cell, "%Y-%m-%d") {
            return Some(day(d));
        }
        for f in ISO_TIMES {
            if let Ok(t) = NaiveDateTime::parse_from_str(cell, f) {
                return Some(wall(t));
            }
        }
        DateTime::parse_from_rfc3339(cell)
            .ok()
            .map(|t| Deadline::Until(t.with_timezone(&Utc)))
    }
}

/// `at` as wall-clock time in `zone`.
fn in_zone(zone: Zone, at: DateTime<Utc>) -> NaiveDateTime {
    match zone {
        Zone::Local => at.with_timezone(&chrono::Local).naive_local(),
        Zone::Named(tz) => at.with_timezone(&tz).naive_local(),
    }
}

/// The instant wall-clock time `t` in `zone` names: the earlier of an ambiguous time (clocks set
/// back), and for a time that does not exist (clocks set forward) the first instant after the gap.
pub(super) fn local_to_utc(zone: Zone, t: NaiveDateTime) -> DateTime<Utc> {
    match zone {
        Zone::Local => resolve(&chrono::Local, t),
        Zone::Named(tz) => resolve(&tz, t),
    }
}

fn resolve<Tz: TimeZone>(tz: &Tz, t: NaiveDateTime) -> DateTime<Utc> {
    let at = |t: NaiveDateTime| match tz.from_local_datetime(&t) {
        LocalResult::Single(d) => Some(d.with_timezone(&Utc)),
        LocalResult::Ambiguous(a, b) => Some(a.min(b).with_timezone(&Utc)),
        LocalResult::None => None,
    };
    if let Some(d) = at(t) {
        return d;
    }
    // In a gap: its end is the first whole minute after `t` that exists (zones change on whole
    // minutes; the longest gap, Samoa's skipped day, is 24 hours).
    let minute = t
        .with_second(0)
        .and_then(|m| m.with_nanosecond(0))
        .unwrap_or(t);
    (1..=48 * 60)
        .filter_map(|k| minute.checked_add_signed(TimeDelta::minutes(k)))
        .find_map(at)
        .unwrap_or_else(|| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn zone(name: &str) -> Zone {
        Zone::Named(name.parse().unwrap())
    }

    /// Deadlines read in `date_format`, sent at 2026-12-14 08:00 in São Paulo (UTC-3).
    fn deadlines(date_format: &str) -> Deadlines {
        let send = SendAt {
            at: utc("2026-12-14T11:00:00Z"),
            later: false,
            zone: zone("America/Sao_Paulo"),
        };
        Deadlines::new(date_format, send)
    }

    #[test]
    fn every_accepted_form_reads_as_its_instant() {
        let d = deadlines("%d/%m/%Y");
        let end_of_10th = Deadline::Before(utc("2026-12-11T03:00:00Z"));
        let at_18 = Deadline::Until(utc("2026-12-10T21:00:00Z"));
        let at_18_30s = Deadline::Until(utc("2026-12-10T21:00:30Z"));
        let cases = [
            ("10/12/2026", end_of_10th),
            ("10/12/2026 18:00", at_18),
            ("10/12/2026 18:00:30", at_18_30s),
            ("2026-12-10", end_of_10th),
            ("2026-12-10T18:00", at_18),
            ("2026-12-10T18:00:30", at_18_30s),
            ("2026-12-10 18:00", at_18),
            ("2026-12-10 18:00:30", at_18_30s),
            (
                "2026-12-10T18:00:00+01:00",
                Deadline::Until(utc("2026-12-10T17:00:00Z")),
            ),
            (
                "2026-12-10T18:00:00Z",
                Deadline::Until(utc("2026-12-10T18:00:00Z")),
            ),
        ];
        for (cell, want) in cases {
            assert_eq!(d.parse(cell), Some(want), "{cell}");
        }
        for cell in [
            "31/02/2026",
            "10-12-2026",
            "amanhã",
            "2026-13-01",
            "10/12/2026 25:00",
        ] {
            assert_eq!(d.parse(cell), None, "{cell}");
        }
        // Another date_format, and one with a time of its own.
        let dots = deadlines("%d.%m.%Y");
        assert_eq!(dots.parse("10.12.2026"), Some(end_of_10th));
        assert_eq!(dots.parse("10.12.2026 18:00"), Some(at_18));
        assert_eq!(dots.parse("10/12/2026"), None);
        let timed = deadlines("%d/%m/%Y %H:%M");
        assert_eq!(timed.parse("10/12/2026 18:00"), Some(at_18));
    }

    #[test]
    fn wall_clock_times_in_a_dst_gap_or_overlap() {
        let ny = zone("America/New_York");
        let wall = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap();
        // Clocks go from 02:00 to 03:00: 02:30:15 does not exist; 03:00 EDT is the gap's end.
        assert_eq!(
            local_to_utc(ny, wall("2026-03-08 02:30:15")),
            utc("2026-03-08T07:00:00Z")
        );
        // 01:30 happens twice: the earlier is 01:30 EDT.
        assert_eq!(
            local_to_utc(ny, wall("2026-11-01 01:30:00")),
            utc("2026-11-01T05:30:00Z")
        );
        assert_eq!(
            local_to_utc(ny, wall("2026-07-01 12:00:00")),
            utc("2026-07-01T16:00:00Z")
        );
        // Havana skips midnight: a date's day ends when the next one's first hour starts.
        let mut d = deadlines("%d/%m/%Y");
        d.send.zone = zone("America/Havana");
        assert_eq!(
            d.parse("07/03/2026"),
            Some(Deadline::Before(utc("2026-03-08T05:00:00Z")))
        );
    }

    #[test]
    fn a_later_send_time_is_named_in_the_reason() {
        let send = SendAt {
            at: utc("2026-12-14T11:00:00Z"),
            later: true,
            zone: zone("America/Sao_Paulo"),
        };
        let d = Deadlines::new("%d/%m/%Y", send);
        assert_eq!(
            d.check("10/12/2026 18:00"),
            Err(
                "past its send_before (10/12/2026 18:00): it would be sent Mon 14/12/2026 08:00"
                    .into()
            )
        );
        assert_eq!(d.check(" 14/12/2026 "), Ok(()));
        let long = "x".repeat(100);
        let err = d.check(&long).unwrap_err();
        assert!(
            err.starts_with(&format!("send_before \"{}…\"", "x".repeat(40))),
            "{err}"
        );
    }
}
