//! The seeds are what they claim to be: valid inputs that get past every
//! check, so the fuzzer starts deep. Also runs each harness on each seed.

use evlog_fuzz::open_dir;
use evlog_fuzz::seeds::all_seeds;

fn seeds_of(target: &str) -> Vec<Vec<u8>> {
    all_seeds()
        .into_iter()
        .find(|(t, _)| *t == target)
        .map(|(_, s)| s)
        .unwrap()
}

#[test]
fn body_and_record_seeds_decode() {
    for body in seeds_of("decode_body") {
        let event = evlog::fuzz_api::decode_body(&body).unwrap();
        evlog_fuzz::check_round_trip(&event);
    }
    for input in seeds_of("decode_record") {
        evlog::fuzz_api::decode_record(&input[1..]).unwrap();
    }
}

#[test]
fn header_seeds_decode() {
    for input in seeds_of("decode_segment_header") {
        assert!(evlog::fuzz_api::decode_segment_header(&input[1..]).unwrap() >= 1);
    }
    for input in seeds_of("decode_index_header") {
        evlog::fuzz_api::decode_index_header(&input[1..]).unwrap();
    }
}

#[test]
fn open_dir_seeds_open_and_serve_events() {
    for (n, input) in seeds_of("open_dir").iter().enumerate() {
        let layout = open_dir::layout(input).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (segments, indexes) = open_dir::write_layout(&layout, dir.path());
        open_dir::run_dump(dir.path(), &segments, &indexes);
        let log = evlog::Log::open(dir.path(), evlog::Options::default().preallocate_bytes(0))
            .unwrap_or_else(|e| panic!("seed {n} does not open: {e}"));
        let starts: Vec<u64> = layout.segments.iter().map(|(s, _)| *s).collect();
        let served = open_dir::read_all(&log, input.len(), &starts);
        // Only the empty-log seed serves nothing.
        assert!(served.last.is_some() || n == 2, "seed {n} serves nothing");
        let ok = served.events.iter().filter(|e| e.is_some()).count();
        eprintln!(
            "seed {n}: {} bytes, {} segments, events {:?}..={:?}, {ok} readable",
            input.len(),
            segments.len(),
            served.first,
            served.last
        );
        drop(log);
        open_dir::run(input);
    }
}
