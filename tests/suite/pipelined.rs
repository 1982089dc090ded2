//! `Log::submit_batch`: appends handed to the writer without waiting,
//! whose outcome `PendingAppend::wait` gives later.

use std::collections::VecDeque;

use evlog::{Durability, Error, Event, Log, Options, Uuid};

use crate::common::{assert_holds, exact_options, tempdir, Spec};

/// Batches submitted from one thread, several in flight, get consecutive
/// ranges in submission order and read back exactly; after a reopen too.
#[test]
fn pipelined_batches_get_consecutive_ranges_in_submission_order() {
    let dir = tempdir();
    let specs = Spec::many(2_000, 300);
    let log = Log::open(dir.path(), exact_options().durability(Durability::Always)).expect("open");
    let mut in_flight: VecDeque<(u64, evlog::PendingAppend)> = VecDeque::new();
    let mut ranges = Vec::new();
    let mut first = 1u64;
    for chunk in specs.chunks(97) {
        if in_flight.len() == 3 {
            let (expected_first, pending) = in_flight.pop_front().expect("one in flight");
            let range = pending.wait().expect("wait");
            assert_eq!(range.start, expected_first);
            ranges.push(range);
        }
        let events: Vec<Event> = chunk.iter().map(Spec::event).collect();
        in_flight.push_back((first, log.submit_batch(&events).expect("submit")));
        first += chunk.len() as u64;
    }
    for (expected_first, pending) in in_flight {
        let range = pending.wait().expect("wait");
        assert_eq!(range.start, expected_first);
        ranges.push(range);
    }
    assert_eq!(ranges.last().map(|r| r.end), Some(2_001));
    assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
    assert_eq!(log.durable_seq(), 2_000);
    assert_holds(&log, &specs);
    log.close().expect("close");
    let log = Log::open(dir.path(), exact_options()).expect("reopen");
    assert_holds(&log, &specs);
}

/// A pending append that is dropped unwaited is written all the same; an
/// empty batch is ready at once; a batch the writer refuses (a duplicate
/// run) is refused through `wait`, and the batches around it stand.
#[test]
fn pending_appends_dropped_refused_and_empty() {
    let dir = tempdir();
    let log = Log::open(dir.path(), Options::default()).expect("open");
    let id = |n: u128| Uuid::from_u128(0x919e_0000 << 64 | n);
    let empty = log.submit_batch(&[]).expect("empty submit");
    assert_eq!(empty.wait().expect("empty wait"), 1..1);
    drop(
        log.submit_batch(&[Event::new("p.one").id(id(1))])
            .expect("submit"),
    );
    // The same id again with a new one: some but not all are duplicates.
    let refused = log
        .submit_batch(&[Event::new("p.one").id(id(1)), Event::new("p.two").id(id(2))])
        .expect("submit");
    let after = log
        .submit_batch(&[Event::new("p.three").id(id(3))])
        .expect("submit");
    assert!(matches!(
        refused.wait(),
        Err(Error::DuplicateInBatch { .. })
    ));
    assert_eq!(after.wait().expect("wait"), 2..3);
    assert_eq!(log.get(1).expect("get 1").id, id(1));
    assert_eq!(log.get(2).expect("get 2").id, id(3));
    // Refused before the writer: an invalid event fails the submit itself.
    assert!(matches!(
        log.submit_batch(&[Event::new("Not A Type")]),
        Err(Error::InvalidEventType { .. })
    ));
}

/// Batches still in flight when the log closes are written before the
/// writer stops, and their waits answer afterwards.
#[test]
fn pending_appends_complete_across_close() {
    let dir = tempdir();
    let log = Log::open(dir.path(), Options::default()).expect("open");
    let pending: Vec<_> = (0..20)
        .map(|i| {
            log.submit_batch(&vec![
                Event::new("p.batch").metadata("i", i.to_string());
                50
            ])
            .expect("submit")
        })
        .collect();
    log.close().expect("close");
    for (i, pending) in pending.into_iter().enumerate() {
        let first = i as u64 * 50 + 1;
        assert_eq!(pending.wait().expect("wait"), first..first + 50);
    }
    let log = Log::open(dir.path(), Options::default()).expect("reopen");
    assert_eq!(log.last_seq(), Some(1_000));
}
