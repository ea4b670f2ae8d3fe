//! The journal's tests: sequences, states, transitions, schema upgrades.

use super::*;

fn new_job<'a>(path: &'a Path, hash: &'a str) -> NewJob<'a> {
    NewJob {
        input_name: "a.csv",
        input_path: path,
        subaccount: "ACME",
        hash,
        size: 3,
        dev_ino: None,
    }
}

#[test]
fn sequences_start_above_remote_and_never_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path()).unwrap();
    let day = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
    assert!(j.first_of_day("ACME", day).unwrap());
    let p = PathBuf::from("/in/a.csv");
    let names = j
        .transaction(|t| {
            t.reserve_above("ACME", day, 7)?;
            let id = t.insert_job(&new_job(&p, "h1"))?;
            t.record_batches(
                id,
                "ACME",
                day,
                &[
                    NewBatch { rows: 1, bytes: 1 },
                    NewBatch { rows: 1, bytes: 1 },
                ],
            )
        })
        .unwrap();
    assert_eq!(names, vec!["ACME.20261125.08.txt", "ACME.20261125.09.txt"]);
    assert!(!j.first_of_day("ACME", day).unwrap());
    // A lower remote number later never lowers the counter.
    let names = j
        .transaction(|t| {
            t.reserve_above("ACME", day, 3)?;
            let id = t.insert_job(&new_job(&p, "h2"))?;
            t.record_batches(id, "ACME", day, &[NewBatch { rows: 1, bytes: 1 }])
        })
        .unwrap();
    assert_eq!(names, vec!["ACME.20261125.10.txt"]);
    // Another subaccount or day counts on its own.
    let other = j
        .transaction(|t| {
            let id = t.insert_job(&new_job(&p, "h3"))?;
            t.record_batches(id, "OTHER", day, &[NewBatch { rows: 1, bytes: 1 }])
        })
        .unwrap();
    assert_eq!(other, vec!["OTHER.20261125.01.txt"]);
}

#[test]
fn states_history_and_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path()).unwrap();
    let p = PathBuf::from("/in/a.csv");
    let day = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
    let id = j
        .transaction(|t| t.insert_job(&new_job(&p, "same")))
        .unwrap();
    let since = Utc::now() - chrono::Duration::days(7);
    assert!(
        j.accepted_with_hash("same", since).unwrap().is_none(),
        "detected is not accepted yet"
    );
    j.transaction(|t| t.record_batches(id, "ACME", day, &[NewBatch { rows: 2, bytes: 9 }]))
        .unwrap();
    assert_eq!(
        j.accepted_with_hash("same", since).unwrap().map(|j| j.id),
        Some(id)
    );
    let b = &j.batches(id).unwrap()[0];
    j.transaction(|t| {
        t.set_batch_state(b.id, JobState::Uploading, None)?;
        t.set_job_state(id, JobState::Uploading, None)?;
        t.set_batch_state(b.id, JobState::Uploaded, None)?;
        t.set_batch_state(b.id, JobState::Succeeded, None)?;
        t.set_job_state(id, JobState::Succeeded, None)
    })
    .unwrap();
    let states: Vec<String> = j
        .history(id)
        .unwrap()
        .into_iter()
        .map(|h| h.state)
        .collect();
    assert_eq!(
        states,
        vec!["detected", "converted", "uploading", "succeeded"]
    );
    assert_eq!(j.unreported().unwrap().len(), 1);
    j.transaction(|t| t.set_reported(id)).unwrap();
    assert!(j.unreported().unwrap().is_empty());
    assert!(j.batches(id).unwrap()[0].uploaded_at.is_some());
}

#[test]
fn a_failed_transaction_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path()).unwrap();
    let p = PathBuf::from("/in/a.csv");
    let r = j.transaction(|t| {
        t.insert_job(&new_job(&p, "x"))?;
        Err::<(), _>(rusqlite::Error::InvalidQuery)
    });
    assert!(r.is_err());
    assert!(j.recent_jobs(10).unwrap().is_empty());
}

#[test]
fn illegal_transitions_are_errors_naming_job_from_and_to() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path()).unwrap();
    let p = PathBuf::from("/in/a.csv");
    let id = j.transaction(|t| t.insert_job(&new_job(&p, "x"))).unwrap();
    let e = j
        .transaction(|t| t.set_job_state(id, JobState::Uploaded, None))
        .unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("job {id}: detected -> uploaded")),
        "{e}"
    );
    j.transaction(|t| t.set_job_state(id, JobState::Rejected, Some("bad")))
        .unwrap();
    // Rejected is final.
    for to in [JobState::Detected, JobState::Converted, JobState::Succeeded] {
        assert!(j.transaction(|t| t.set_job_state(id, to, None)).is_err());
    }
    assert_eq!(j.job(id).unwrap().unwrap().state, JobState::Rejected);
    // The whole table: a final state goes nowhere, every state is reachable from detected.
    let all = [
        JobState::Detected,
        JobState::Converted,
        JobState::Uploading,
        JobState::Uploaded,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Expired,
        JobState::Rejected,
    ];
    for from in all {
        for to in all {
            // Succeeded and rejected are final for good; failed and expired move on only by
            // an operator's retry or a late outcome.
            if matches!(from, JobState::Succeeded | JobState::Rejected) {
                assert!(!from.job_may_become(to), "{from:?} -> {to:?}");
                assert!(!from.batch_may_become(to), "{from:?} -> {to:?}");
            }
            if matches!(from, JobState::Failed | JobState::Expired) {
                assert_eq!(
                    from.job_may_become(to),
                    to == JobState::Uploading
                        || (from == JobState::Expired
                            && matches!(to, JobState::Succeeded | JobState::Failed)),
                    "{from:?} -> {to:?}"
                );
            }
        }
        assert_eq!(JobState::parse(from.as_str()).unwrap(), from);
    }
    assert_eq!(JobState::parse("unknown").unwrap(), JobState::Unknown);
    assert!(!JobState::Unknown.is_final());
}

#[test]
fn an_unknown_stored_state_is_an_error_not_a_guess() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path()).unwrap();
    let p = PathBuf::from("/in/a.csv");
    let id = j.transaction(|t| t.insert_job(&new_job(&p, "x"))).unwrap();
    j.conn
        .execute("UPDATE jobs SET state = 'paused' WHERE id = ?1", [id])
        .unwrap();
    let e = j.job(id).unwrap_err().to_string();
    assert!(e.contains("unknown state \"paused\""), "{e}");
    assert!(j
        .transaction(|t| t.set_job_state(id, JobState::Converted, None))
        .is_err());
}

/// `tests/fixtures/journal-v0/journal.db` was written by the release before schema versions
/// (`smsdrop demo`, then `send --no-wait` of two files against a gateway that held them, and
/// one rejected file): 4 succeeded, 2 uploaded, 1 rejected job.
#[test]
fn a_journal_from_the_release_before_versions_upgrades_and_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/journal-v0/journal.db");
    std::fs::copy(&fixture, dir.path().join("journal.db")).unwrap();
    {
        let old = Connection::open(dir.path().join("journal.db")).unwrap();
        let v: i64 = old
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, 0, "the fixture predates schema versions");
    }
    let mut j = Journal::open(dir.path()).unwrap();
    assert_eq!(j.schema_version().unwrap(), SCHEMA_VERSION);
    let jobs = j.recent_jobs(100).unwrap();
    let states: Vec<&str> = jobs.iter().rev().map(|j| j.state.as_str()).collect();
    assert_eq!(
        states,
        [
            "succeeded",
            "succeeded",
            "succeeded",
            "succeeded",
            "uploaded",
            "uploaded",
            "rejected"
        ]
    );
    assert_eq!(j.history(1).unwrap().len(), 5);
    // The uploaded jobs go on to their outcome under the new state machine.
    let b = j.batches(5).unwrap().remove(0);
    assert_eq!(b.state, JobState::Uploaded);
    j.transaction(|t| {
        t.set_batch_state(b.id, JobState::Succeeded, None)?;
        t.set_job_state(5, JobState::Succeeded, None)
    })
    .unwrap();
    // Numbering goes on above what the old release handed out.
    let day = NaiveDate::from_ymd_opt(2026, 12, 3).unwrap();
    assert!(!j.first_of_day("DEMO", day).unwrap());
    let p = PathBuf::from("/in/new.csv");
    let names = j
        .transaction(|t| {
            let id = t.insert_job(&new_job(&p, "new"))?;
            t.record_batches(id, "DEMO", day, &[NewBatch { rows: 1, bytes: 1 }])
        })
        .unwrap();
    assert_eq!(names, ["DEMO.20261203.07.txt"]);
    drop(j);
    // Opening again is a no-op; a reader sees the same version.
    let j = Journal::open(dir.path()).unwrap();
    assert_eq!(j.schema_version().unwrap(), SCHEMA_VERSION);
    let ro = Journal::open_read_only(dir.path()).unwrap().unwrap();
    assert_eq!(ro.recent_jobs(100).unwrap().len(), 8);
}

#[test]
fn a_journal_from_a_newer_release_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Journal::open(dir.path()).unwrap());
    let c = Connection::open(dir.path().join("journal.db")).unwrap();
    c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(c);
    let e = Journal::open(dir.path()).err().unwrap().to_string();
    assert!(e.contains("newer smsdrop"), "{e}");
    assert!(Journal::open_read_only(dir.path()).is_err());
}

fn msg(line: u64, number: &str, id: &str) -> NewMessage {
    NewMessage {
        line,
        part: 0,
        number: number.into(),
        correlation_id: id.into(),
        erp_id: id.into(),
        untracked: None,
    }
}

fn status(id: &str) -> StatusUpdate {
    StatusUpdate {
        correlation_id: id.into(),
        ..StatusUpdate::default()
    }
}

#[test]
fn statuses_match_by_id_and_number_and_apply_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path()).unwrap();
    let day = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
    let p = PathBuf::from("/in/a.csv");
    let job = j
        .transaction(|t| {
            let id = t.insert_job(&new_job(&p, "h1"))?;
            t.record_batches(id, "ACME", day, &[NewBatch { rows: 4, bytes: 1 }])?;
            t.insert_messages(
                id,
                &[
                    msg(2, "5511999990000", "a"),
                    msg(3, "5511999990001", "b"),
                    msg(4, "5511999990002", "c"),
                    msg(5, "5511999990003", "d"),
                ],
            )?;
            Ok(id)
        })
        .unwrap();
    let no_dlr = |c: &str| c.eq_ignore_ascii_case("oi");
    let sent = |id: &str, carrier: &str, code: i64| StatusUpdate {
        carrier: Some(carrier.into()),
        sent_code: Some(code),
        sent_at: Some(1),
        ..status(id)
    };
    let a = j
        .apply_statuses(
            &[
                sent("a", "VIVO", 2),
                sent("b", "oi", 2),
                sent("c", "TIM", 202),
                StatusUpdate {
                    destination: Some("5511888880000".into()),
                    ..sent("d", "TIM", 2)
                },
                sent("zzz", "TIM", 2),
            ],
            &no_dlr,
            &[204],
        )
        .unwrap();
    assert_eq!(a.matched, 3);
    assert_eq!(a.changed, 3);
    assert_eq!(a.unknown, vec!["d".to_owned(), "zzz".to_owned()]);
    let c = j.message_counts(job).unwrap().unwrap();
    // a waits for its delivery report; b (OI: none comes) is delivered; c failed; d pending.
    assert_eq!((c.sent, c.delivered, c.failed, c.pending), (4, 1, 1, 2));
    // The same statuses again change nothing; a delivery report makes a final.
    let again = j
        .apply_statuses(&[sent("a", "VIVO", 2)], &no_dlr, &[204])
        .unwrap();
    assert_eq!((again.matched, again.changed), (1, 0));
    let dr = StatusUpdate {
        delivered_code: Some(104),
        delivered_status: Some("NOT_DELIVERED".into()),
        delivered_at: Some(2),
        ..status("a")
    };
    assert_eq!(
        j.apply_statuses(std::slice::from_ref(&dr), &no_dlr, &[204])
            .unwrap()
            .changed,
        1
    );
    assert_eq!(j.apply_statuses(&[dr], &no_dlr, &[204]).unwrap().changed, 0);
    let m = j.messages(job).unwrap();
    assert!(m[0].is_final && m[0].failed());
    assert_eq!(m[0].carrier.as_deref(), Some("VIVO"), "the carrier is kept");
    assert_eq!(m[0].sent_code, Some(2), "the first status is kept");
    assert!(j.messages_pending(job).unwrap());

    // The same (id, number) in a later job, while still awaited here, cannot be matched.
    let p2 = PathBuf::from("/in/b.csv");
    let job2 = j
        .transaction(|t| {
            let id = t.insert_job(&new_job(&p2, "h2"))?;
            t.record_batches(id, "ACME", day, &[NewBatch { rows: 2, bytes: 1 }])?;
            t.insert_messages(
                id,
                &[msg(2, "5511999990003", "d"), msg(3, "5511999990009", "e")],
            )?;
            Ok(id)
        })
        .unwrap();
    let m2 = j.messages(job2).unwrap();
    assert!(m2[0]
        .untracked
        .as_deref()
        .unwrap()
        .contains(&format!("job {job}")));
    assert!(m2[1].untracked.is_none());
    // Once the first job's tracking is done, its messages take no more statuses.
    j.transaction(|t| t.close_tracking(job)).unwrap();
    let late = j
        .apply_statuses(&[sent("d", "TIM", 2)], &no_dlr, &[204])
        .unwrap();
    assert_eq!((late.matched, late.closed), (0, 1));
    assert_eq!(j.messages_awaited().unwrap(), 1);
}

#[test]
fn an_id_used_again_matches_the_message_still_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path()).unwrap();
    let day = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
    let no_dlr = |_: &str| false;
    let mut jobs = vec![];
    for (n, hash) in [("a.csv", "h1"), ("b.csv", "h2")] {
        let p = PathBuf::from(format!("/in/{n}"));
        let id = j
            .transaction(|t| {
                let id = t.insert_job(&new_job(&p, hash))?;
                t.record_batches(id, "ACME", day, &[NewBatch { rows: 1, bytes: 1 }])?;
                t.insert_messages(id, &[msg(2, "5511999990000", "same")])?;
                Ok(id)
            })
            .unwrap();
        // The first job's message is final before the second is recorded.
        if jobs.is_empty() {
            let failed = StatusUpdate {
                sent_code: Some(202),
                ..status("same")
            };
            assert_eq!(
                j.apply_statuses(&[failed], &no_dlr, &[204])
                    .unwrap()
                    .changed,
                1
            );
        }
        jobs.push(id);
    }
    assert!(j.messages(jobs[1]).unwrap()[0].untracked.is_none());
    // Both jobs open: the status goes to the message still waiting, not "ambiguous".
    let dr = StatusUpdate {
        sent_code: Some(2),
        delivered_code: Some(4),
        ..status("same")
    };
    let a = j.apply_statuses(&[dr], &no_dlr, &[204]).unwrap();
    assert_eq!((a.matched, a.changed), (1, 1), "{a:?}");
    assert_eq!(j.messages(jobs[1]).unwrap()[0].delivered_code, Some(4));
    assert_eq!(j.messages(jobs[0]).unwrap()[0].sent_code, Some(202));
    // A status sent long before a message's file was uploaded is not that message's.
    j.transaction(|t| t.close_tracking(jobs[0])).unwrap();
    j.transaction(|t| {
        t.tx.execute(
            "UPDATE batches SET uploaded_at = ?2 WHERE job_id = ?1",
            params![jobs[1], now()],
        )?;
        Ok(())
    })
    .unwrap();
    let stale = StatusUpdate {
        sent_code: Some(103),
        sent_at: Some(now() - 3_600_000),
        ..status("same")
    };
    let a = j.apply_statuses(&[stale], &no_dlr, &[204]).unwrap();
    assert_eq!(a.matched, 0, "{a:?}");
}

/// Issue 21: a message whose first status is `DESTINATION_BLOCKED_BY_OPTOUT` puts its number on
/// its subaccount's opt-out list; a 204 replacing a `SENT_SUCCESS` does not; `BLACKLISTED` only
/// when `[optout] from_statuses` names it.
#[test]
fn a_first_optout_status_puts_the_number_on_the_list() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::open(dir.path()).unwrap();
    j.set_clock(Box::new(|| 1_796_000_500_000));
    let day = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
    let p = PathBuf::from("/in/a.csv");
    let job = j
        .transaction(|t| {
            let id = t.insert_job(&new_job(&p, "h1"))?;
            t.record_batches(id, "ACME", day, &[NewBatch { rows: 5, bytes: 1 }])?;
            t.insert_messages(
                id,
                &[
                    msg(2, "5511999990000", "a"),
                    msg(3, "5511999990001", "b"),
                    msg(4, "5511999990002", "c"),
                    msg(5, "5511999990003", "d"),
                    msg(6, "5511999990004", "e"),
                ],
            )?;
            Ok(id)
        })
        .unwrap();
    let no_dlr = |_: &str| false;
    let first = |id: &str, code: i64, name: &str, at: i64| StatusUpdate {
        sent_code: Some(code),
        sent_status: Some(name.into()),
        sent_at: Some(at),
        ..status(id)
    };
    let blocked = |id: &str, at: i64| first(id, 204, "DESTINATION_BLOCKED_BY_OPTOUT", at);
    let sub_number = |n: &str| vec![("ACME".to_owned(), n.to_owned())];

    let a = j
        .apply_statuses(&[blocked("a", 1_796_000_000_000)], &no_dlr, &[204])
        .unwrap();
    assert_eq!(a.opted_out, sub_number("5511999990000"));
    let o = j.optout("ACME", "5511999990000").unwrap().unwrap();
    assert_eq!(o.source, "status");
    assert_eq!(
        o.detail.as_deref(),
        Some("status 204 DESTINATION_BLOCKED_BY_OPTOUT")
    );
    assert_eq!(o.at_ms, 1_796_000_000_000, "when the status says");
    let again = j
        .apply_statuses(&[blocked("a", 1_796_000_000_000)], &no_dlr, &[204])
        .unwrap();
    assert!(again.opted_out.is_empty(), "{again:?}");

    // SENT_SUCCESS first, then 204: the failure is recorded, the number is not listed; the
    // same when both come in one answer.
    j.apply_statuses(&[first("b", 2, "SENT_SUCCESS", 10)], &no_dlr, &[204])
        .unwrap();
    let b = j
        .apply_statuses(&[blocked("b", 20)], &no_dlr, &[204])
        .unwrap();
    assert_eq!((b.changed, b.opted_out.len()), (1, 0), "{b:?}");
    let both = j
        .apply_statuses(
            &[blocked("c", 20), first("c", 2, "SENT_SUCCESS", 10)],
            &no_dlr,
            &[204],
        )
        .unwrap();
    assert!(both.opted_out.is_empty(), "{both:?}");
    let m = j.messages(job).unwrap();
    assert_eq!((m[1].sent_code, m[2].sent_code), (Some(204), Some(204)));

    // BLACKLISTED: listed only when configured; without a time, at the journal's now.
    let d = j
        .apply_statuses(&[first("d", 203, "BLACKLISTED", 5)], &no_dlr, &[204])
        .unwrap();
    assert!(d.opted_out.is_empty());
    let e = j
        .apply_statuses(
            &[StatusUpdate {
                sent_code: Some(203),
                ..status("e")
            }],
            &no_dlr,
            &[204, 203],
        )
        .unwrap();
    assert_eq!(e.opted_out, sub_number("5511999990004"));
    let o = j.optout("ACME", "5511999990004").unwrap().unwrap();
    assert_eq!(
        (o.detail.as_deref(), o.at_ms),
        (Some("status 203 BLACKLISTED"), 1_796_000_500_000)
    );
    assert_eq!(j.optout_count().unwrap(), 2);
    assert_eq!(j.optout("ACME", "5511999990003").unwrap(), None);
}
