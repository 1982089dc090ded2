//! Many threads appending to one `Log` while another reads.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use evlog::{Durability, Log, LoggedEvent, Options, Payload};
use serde_json::json;
use uuid::Uuid;

use crate::common::{assert_holds, records, segment_files, tempdir, Rng, Spec};

const THREADS: u64 = 8;

fn appends_per_thread() -> u64 {
    if cfg!(debug_assertions) {
        300
    } else {
        1000
    }
}

fn options() -> Options {
    Options::default()
        .durability(Durability::Always)
        .segment_bytes_max(64 * 1024)
        .preallocate_bytes(64 * 1024)
}

/// Event `i` of thread `t`; the id and payload both encode `(t, i)`, so a
/// reader can check any event it sees without knowing its seq.
fn spec(t: u64, i: u64) -> Spec {
    Spec {
        id: Uuid::from_u128((0xC0C0_u128 << 112) | (u128::from(t) << 64) | u128::from(i)),
        event_type: "conc.append".into(),
        entity: ("thread".into(), t.to_string()),
        payload: json!({"t": t, "i": i, "pad": "q".repeat((i as usize * 13) % 90)}),
    }
}

/// Checks that an event read at any time is one that some thread appended.
fn check_seen(event: &LoggedEvent) {
    let Payload::Json(text) = &event.payload else {
        panic!("seq {}: not a JSON payload: {:?}", event.seq, event.payload);
    };
    let value: serde_json::Value = serde_json::from_str(text).expect("payload is JSON");
    let t = value["t"].as_u64().expect("t");
    let i = value["i"].as_u64().expect("i");
    spec(t, i).assert_matches(event, event.seq);
}

// Proves that concurrent appends get gap-free unique seqs, in order per thread, readable while and after writing.
#[test]
fn concurrent_appends_are_gap_free_and_readable() {
    let dir = tempdir();
    let per_thread = appends_per_thread();
    let log = Arc::new(Log::open(dir.path(), options()).expect("open"));
    let done = Arc::new(AtomicBool::new(false));

    let reader = {
        let log = Arc::clone(&log);
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut rng = Rng::new(0x5EAD);
            let mut reads = 0u64;
            let mut previous_last = 0;
            while !done.load(Ordering::Acquire) {
                let Some(last) = log.last_seq() else {
                    std::thread::yield_now();
                    continue;
                };
                assert!(
                    last >= previous_last,
                    "last_seq went back from {previous_last} to {last}"
                );
                previous_last = last;
                let seq = 1 + rng.below(last);
                check_seen(
                    &log.get(seq)
                        .unwrap_or_else(|e| panic!("get({seq}) of {last}: {e}")),
                );
                let low = seq.saturating_sub(rng.below(200)).max(1);
                let mut expected = low;
                for item in log.iter(low..=seq).expect("iter") {
                    let event = item.unwrap_or_else(|e| panic!("iter {low}..={seq}: {e}"));
                    assert_eq!(event.seq, expected);
                    check_seen(&event);
                    expected += 1;
                }
                assert_eq!(expected, seq + 1, "iter {low}..={seq} stopped early");
                reads += 1;
            }
            reads
        })
    };

    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                (0..per_thread)
                    .map(|i| (log.append(spec(t, i).event()).expect("append"), i))
                    .collect::<Vec<(u64, u64)>>()
            })
        })
        .collect();
    let results: Vec<Vec<(u64, u64)>> = writers
        .into_iter()
        .map(|w| w.join().expect("writer thread"))
        .collect();
    done.store(true, Ordering::Release);
    let reads = reader.join().expect("reader thread");
    assert!(reads > 0, "the reader never read");

    let total = THREADS * per_thread;
    let mut by_seq: Vec<Option<Spec>> = vec![None; total as usize];
    for (t, seqs) in results.iter().enumerate() {
        assert!(
            seqs.windows(2).all(|w| w[0].0 < w[1].0),
            "thread {t}: seqs are not strictly increasing"
        );
        for &(seq, i) in seqs {
            assert!((1..=total).contains(&seq), "seq {seq} outside 1..={total}");
            let slot = &mut by_seq[seq as usize - 1];
            assert!(slot.is_none(), "seq {seq} handed out twice");
            *slot = Some(spec(t as u64, i));
        }
    }
    let expected: Vec<Spec> = by_seq
        .into_iter()
        .enumerate()
        .map(|(k, s)| s.unwrap_or_else(|| panic!("seq {} never handed out", k + 1)))
        .collect();
    assert_holds(&log, &expected);

    let log = Arc::into_inner(log).expect("no other handle");
    log.close().expect("close");
    let log = Log::open(dir.path(), options()).expect("reopen");
    assert_holds(&log, &expected);
}

// Proves that atomic batches appended from several threads at once each get one contiguous range in one commit group.
#[test]
fn concurrent_batches_get_contiguous_ranges() {
    const BATCH_THREADS: u64 = 4;
    const BATCHES: u64 = 40;
    let dir = tempdir();
    let log = Arc::new(Log::open(dir.path(), options()).expect("open"));
    let writers: Vec<_> = (0..BATCH_THREADS)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut done = Vec::new();
                for k in 0..BATCHES {
                    let size = 1 + (k * 3 + t) % 7;
                    let specs: Vec<Spec> = (0..size).map(|j| spec(t, k * 100 + j)).collect();
                    let events: Vec<_> = specs.iter().map(Spec::event).collect();
                    let range = log.append_batch(&events).expect("append_batch");
                    assert_eq!(
                        range.end - range.start,
                        size,
                        "batch {k} of thread {t}: {range:?}"
                    );
                    done.push((range, specs));
                }
                done
            })
        })
        .collect();
    let mut batches: Vec<(Range<u64>, Vec<Spec>)> = writers
        .into_iter()
        .flat_map(|w| w.join().expect("writer thread"))
        .collect();
    batches.sort_by_key(|(range, _)| range.start);
    let mut next = 1;
    let mut expected = Vec::new();
    for (range, specs) in &batches {
        assert_eq!(range.start, next, "ranges overlap or leave a gap");
        next = range.end;
        expected.extend(specs.iter().cloned());
    }
    assert_holds(&log, &expected);
    let log = Arc::into_inner(log).expect("no other handle");
    log.close().expect("close");

    // On disk, every batch lies in one segment and inside one commit group.
    let mut placement = HashMap::new();
    for (n, segment) in segment_files(dir.path()).iter().enumerate() {
        for record in records(segment) {
            let group_first = record.seq - u64::from(record.group_index);
            placement.insert(record.seq, (n, group_first, record.group_count));
        }
    }
    for (range, _) in &batches {
        let (segment, group_first, group_count) = placement[&range.start];
        assert!(group_first <= range.start && range.end <= group_first + u64::from(group_count));
        for seq in range.clone() {
            assert_eq!(
                placement[&seq],
                (segment, group_first, group_count),
                "batch {range:?}"
            );
        }
    }

    let log = Log::open(dir.path(), options()).expect("reopen");
    assert_holds(&log, &expected);
}
