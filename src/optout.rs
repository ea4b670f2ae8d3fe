//! The opt-out filter (`[optout] apply`): a row whose number is on its subaccount's opt-out
//! list is not handed on to be sent; it is kept with when and why the number opted out, for the
//! result CSV, the JSON report, `convert`'s summary and the status page. The list is loaded once
//! per job. This module never changes the list.

use crate::config::Zone;
use crate::convert::billing::{cost, Billing};
use crate::convert::{RejectedRow, Row, RowSink};
use crate::journal::{Journal, JournalError, OptedOut, Optout};
use std::collections::HashMap;
use std::io;

/// A subaccount's opt-out list, by number.
pub(crate) type OptoutList = HashMap<String, Optout>;

/// Loads `subaccount`'s opt-out list (one query per job, not one per row).
///
/// # Errors
/// When the journal cannot be read.
pub(crate) fn load(journal: &Journal, subaccount: &str) -> Result<OptoutList, JournalError> {
    Ok(journal
        .optouts(Some(subaccount))?
        .into_iter()
        .map(|o| (o.number.clone(), o))
        .collect())
}

/// Sits in front of a sink: rows to numbers on `list` are kept back, the others handed on.
pub(crate) struct Filter<'a> {
    inner: &'a mut dyn RowSink,
    list: &'a OptoutList,
    /// The rows kept back, in line order.
    pub skipped: Vec<OptedOut>,
    /// What they would have cost (taken off the report's totals).
    pub billing: Billing,
}

impl<'a> Filter<'a> {
    pub(crate) fn new(inner: &'a mut dyn RowSink, list: &'a OptoutList) -> Filter<'a> {
        Filter {
            inner,
            list,
            skipped: vec![],
            billing: Billing::default(),
        }
    }
}

impl RowSink for Filter<'_> {
    fn row(&mut self, row: &Row<'_>) -> io::Result<()> {
        match self.list.get(row.number) {
            Some(o) => {
                self.skipped.push(OptedOut {
                    line: row.line,
                    number: o.number.clone(),
                    at_ms: o.at_ms,
                    source: o.source.clone(),
                    detail: o.detail.clone(),
                });
                self.billing.add(cost(row.text));
                Ok(())
            }
            None => self.inner.row(row),
        }
    }

    fn rejected(&mut self, row: &RejectedRow) -> io::Result<()> {
        self.inner.rejected(row)
    }
}

/// Why a row was not sent, for people: `opted out 2026-12-07 14:03 (replied "SAIR")`, the time
/// in `zone`.
pub(crate) fn reason(o: &OptedOut, zone: &Zone) -> String {
    let at = chrono::DateTime::from_timestamp_millis(o.at_ms)
        .unwrap_or_default()
        .with_timezone(&zone.tz())
        .format("%Y-%m-%d %H:%M");
    let why = match (o.detail.as_deref(), o.source.as_str()) {
        (Some(d), _) if !d.is_empty() => d,
        (_, "operator") => "added by an operator",
        (_, "import") => "imported",
        (_, "reply") => "replied",
        (_, "status") => "a status said so",
        (_, other) => other,
    };
    format!("opted out {at} ({why})")
}

/// The opted-out rows as a report lists them: the first [`crate::convert::REPORT_DETAIL_LIMIT`],
/// each with its line, number and reason.
pub(crate) fn listed(rows: &[OptedOut], zone: &Zone) -> Vec<serde_json::Value> {
    rows.iter()
        .take(crate::convert::REPORT_DETAIL_LIMIT)
        .map(|o| serde_json::json!({"line": o.line, "number": o.number, "reason": reason(o, zone)}))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_say_when_and_why() {
        let zone = Zone::Named(chrono_tz::America::Sao_Paulo);
        let mut o = OptedOut {
            line: 2,
            number: "5511900000001".into(),
            // 2026-12-07 17:03 UTC: 14:03 in São Paulo.
            at_ms: 1_796_662_980_000,
            source: "reply".into(),
            detail: Some("replied \"SAIR\"".into()),
        };
        assert_eq!(
            reason(&o, &zone),
            "opted out 2026-12-07 14:03 (replied \"SAIR\")"
        );
        o.source = "operator".into();
        o.detail = None;
        assert_eq!(
            reason(&o, &zone),
            "opted out 2026-12-07 14:03 (added by an operator)"
        );
        o.source = "status".into();
        o.detail = Some("status 204 DESTINATION_BLOCKED_BY_OPTOUT".into());
        assert_eq!(
            reason(&o, &zone),
            "opted out 2026-12-07 14:03 (status 204 DESTINATION_BLOCKED_BY_OPTOUT)"
        );
    }

    #[test]
    fn the_filter_keeps_back_listed_numbers_only() {
        struct Take(Vec<u64>);
        impl RowSink for Take {
            fn row(&mut self, r: &Row<'_>) -> io::Result<()> {
                self.0.push(r.line);
                Ok(())
            }
        }
        let list: OptoutList = [(
            "5511900000002".to_owned(),
            Optout {
                subaccount: "ACME".into(),
                number: "5511900000002".into(),
                at_ms: 1,
                source: "import".into(),
                detail: None,
            },
        )]
        .into();
        let mut take = Take(vec![]);
        let mut f = Filter::new(&mut take, &list);
        for (line, number) in [
            (2, "5511900000001"),
            (3, "5511900000002"),
            (4, "5511900000003"),
        ] {
            let row = Row {
                line,
                number,
                text: "oi",
                correlation_id: "",
            };
            f.row(&row).unwrap();
        }
        let skipped: Vec<u64> = f.skipped.iter().map(|o| o.line).collect();
        assert_eq!(skipped, [3]);
        assert_eq!(f.billing.parts, 1);
        assert_eq!(take.0, [2, 4]);
    }
}
