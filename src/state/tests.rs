use super::*;

fn batch(key: &str, day: &str) -> NewBatch {
    NewBatch {
        first_day: day.parse().unwrap(),
        last_day: day.parse().unwrap(),
        record_count: 2,
        total_tokens: 10,
        idempotency_key: key.to_owned(),
        payload: "[]".to_owned(),
    }
}

#[test]
fn queueing_moves_the_watermark_forward_only_and_skips_known_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = State::open(dir.path()).unwrap();
    assert_eq!(state.watermark().unwrap(), None);
    let queued = state
        .queue(
            "r1",
            [
                ("http", batch("k1", "2026-11-26")),
                ("http", batch("k2", "2026-11-27")),
            ],
            Some("2026-11-27".parse().unwrap()),
        )
        .unwrap();
    assert_eq!((queued.batches, queued.unchanged), (2, 0));
    let again = state
        .queue(
            "r2",
            [("http", batch("k2", "2026-11-27"))],
            Some("2026-11-20".parse().unwrap()),
        )
        .unwrap();
    assert_eq!((again.batches, again.unchanged), (0, 1));
    assert_eq!(
        state.watermark().unwrap(),
        Some("2026-11-27".parse().unwrap())
    );
    assert_eq!(
        state.counts().unwrap(),
        Counts {
            queued: 2,
            sent: 0,
            dead: 0
        }
    );
}

#[test]
fn a_batch_moves_through_its_states() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = State::open(dir.path()).unwrap();
    state
        .queue(
            "r1",
            [
                ("http", batch("k1", "2026-11-26")),
                ("http", batch("k2", "2026-11-26")),
            ],
            None,
        )
        .unwrap();
    let queued = state.batches("http", BatchState::Queued).unwrap();
    assert_eq!(state.mark_failed(queued[0].id, "503").unwrap(), 1);
    assert_eq!(state.mark_failed(queued[0].id, "503 again").unwrap(), 2);
    state.mark_dead(queued[0].id, "422 bad").unwrap();
    state.mark_sent(queued[1].id).unwrap();
    assert_eq!(
        state.counts().unwrap(),
        Counts {
            queued: 0,
            sent: 1,
            dead: 1
        }
    );
    let dead = &state.batches("http", BatchState::Dead).unwrap()[0];
    assert_eq!(
        (dead.attempts, dead.last_error.as_deref()),
        (2, Some("422 bad"))
    );
    assert_eq!(state.revive(None, None).unwrap(), 1);
    assert_eq!(
        state.batches("http", BatchState::Queued).unwrap()[0].attempts,
        0
    );
}

#[test]
fn a_replaced_batch_keeps_its_sink_and_a_discard_is_remembered_per_sink() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = State::open(dir.path()).unwrap();
    let whole = NewBatch {
        record_count: 3,
        total_tokens: 6,
        ..batch("whole", "2026-11-26")
    };
    state.queue("r1", [("http", whole)], None).unwrap();
    let queued = state.batches("http", BatchState::Queued).unwrap();
    let part = |key: &str, records: u64, tokens: u64| NewBatch {
        record_count: records,
        total_tokens: tokens,
        payload: format!("part {key}"),
        ..batch(key, "2026-11-26")
    };
    let parts = state
        .replace(&queued[0], [part("p1", 2, 3), part("p2", 1, 3)])
        .unwrap();
    let shape: Vec<_> = parts
        .iter()
        .map(|p| (p.sink.as_str(), p.record_count, p.total_tokens))
        .collect();
    assert_eq!(shape, [("http", 2, 3), ("http", 1, 3)]);
    assert_eq!(state.payload(parts[1].id).unwrap(), "part p2");
    assert_eq!(state.counts().unwrap().queued, 2, "the whole batch is gone");

    state.mark_dead(parts[0].id, "422 too large").unwrap();
    assert_eq!(
        state.discard(Some(parts[1].id), None).unwrap().len(),
        0,
        "only dead batches"
    );
    let discarded = state.discard(None, None).unwrap();
    assert_eq!(discarded[0].id, parts[0].id);
    let (listed, _) = &state.discarded(10).unwrap()[0];
    assert_eq!(listed.last_error.as_deref(), Some("422 too large"));
    // The same payload collected again is not queued again for that sink, but is for another.
    let again = || batch("p1", "2026-11-26");
    let queued = state
        .queue("r2", [("http", again()), ("memory", again())], None)
        .unwrap();
    assert_eq!((queued.batches, queued.unchanged), (1, 1));
    assert_eq!(
        state.batches("memory", BatchState::Queued).unwrap().len(),
        1
    );
}

#[test]
fn a_database_at_version_2_of_either_kind_gets_every_table() {
    // A database at version 2 holds either `discarded`, or `last_success` and `login_verdict`.
    for (build, version_2) in [
        ("discarded", MIGRATIONS[1].to_owned()),
        (
            "last_success and login_verdict",
            format!("{} DROP TABLE IF EXISTS discarded;", MIGRATIONS[2]),
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
        conn.execute_batch(&format!(
            "{} {version_2} PRAGMA user_version = 2;",
            MIGRATIONS[0]
        ))
        .unwrap();
        drop(conn);
        let mut state = State::open(dir.path()).unwrap();
        assert_eq!(state.schema_version().unwrap(), MIGRATIONS.len(), "{build}");
        state
            .queue("r1", [("http", batch("k1", "2026-11-26"))], None)
            .unwrap();
        let queued = state.batches("http", BatchState::Queued).unwrap();
        state.mark_dead(queued[0].id, "boom").unwrap();
        assert_eq!(state.discard(None, None).unwrap().len(), 1, "{build}");
        let at = "2026-11-27T00:00:00Z".parse().unwrap();
        state.set_last_success(at).unwrap();
        assert_eq!(state.last_success().unwrap(), Some(at), "{build}");
        assert!(state.login_verdict().unwrap().is_none(), "{build}");
    }
}

#[test]
fn batches_queued_before_sinks_had_names_belong_to_the_http_sink_with_their_payload() {
    let dir = tempfile::tempdir().unwrap();
    let conn = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
    conn.execute_batch(&format!(
        "{} {} {} PRAGMA user_version = 3;
         INSERT INTO batches (run_id, created_at, first_day, last_day, record_count, total_tokens,
           idempotency_key, records, state) VALUES ('r0', '2026-11-27T00:00:00.000Z', '2026-11-26',
           '2026-11-26', 1, 42, 'k0', '[{{\"total_tokens\":42}}]', 'queued');",
        MIGRATIONS[0], MIGRATIONS[1], MIGRATIONS[2]
    ))
    .unwrap();
    drop(conn);
    let state = State::open(dir.path()).unwrap();
    let queued = state.batches("http", BatchState::Queued).unwrap();
    assert_eq!(
        (
            queued.len(),
            queued[0].total_tokens,
            queued[0].idempotency_key.as_str()
        ),
        (1, 42, "k0")
    );
    assert_eq!(
        state.payload(queued[0].id).unwrap(),
        r#"[{"total_tokens":42}]"#
    );
}

#[test]
fn files_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    State::open(&state_dir).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state_dir), 0o700);
    assert_eq!(mode(&state_dir.join(DATABASE_FILE)), 0o600);
}
