//! Prints what an `open_dir` input lays out: `cargo run --example explain FILE`.
//! For each segment, every record `evlog::dump::inspect_segment` finds and
//! the first problem; for each index, its entries.

use evlog_fuzz::open_dir;

fn main() {
    let path = std::env::args().nth(1).expect("usage: explain FILE");
    let data = std::fs::read(&path).expect("read the input");
    let Some(layout) = open_dir::layout(&data) else {
        println!("empty input");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (segments, indexes) = open_dir::write_layout(&layout, dir.path());
    for seg in &segments {
        println!(
            "{} ({} bytes)",
            seg.file_name().unwrap().to_string_lossy(),
            std::fs::metadata(seg).unwrap().len()
        );
        let report = evlog::dump::inspect_segment(seg, |r| {
            println!(
                "  record at {:>6}: seq {} bytes {} event {:?}",
                r.offset,
                r.seq,
                r.record_bytes,
                r.event.as_ref().map(|e| e.event_type.clone())
            )
        });
        match report {
            Ok(r) => println!(
                "  first_seq {} records {} end {} zero tail {} problem {:?}",
                r.first_seq,
                r.records,
                r.end_offset,
                r.zero_tail_bytes,
                r.problem.map(|p| p.to_string())
            ),
            Err(e) => println!("  error: {e}"),
        }
    }
    for idx in &indexes {
        let bytes = std::fs::read(idx).unwrap();
        println!(
            "{} ({} bytes): header {:?}",
            idx.file_name().unwrap().to_string_lossy(),
            bytes.len(),
            evlog::fuzz_api::decode_index_header(&bytes).map_err(|e| e.to_string())
        );
        let entries: Vec<u64> = bytes
            .get(32..)
            .unwrap_or(&[])
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        println!("  entries {entries:?}");
    }
    println!(
        "dump::verify: {:?}",
        evlog::dump::verify(dir.path()).map(|p| p.map(|p| p.to_string()))
    );
    match evlog::Log::open(dir.path(), evlog::Options::default().preallocate_bytes(0)) {
        Ok(log) => {
            println!(
                "open: ok, first {:?} last {:?}",
                log.first_seq(),
                log.last_seq()
            );
            if let (Some(f), Some(l)) = (log.first_seq(), log.last_seq()) {
                for seq in f..=l.min(f + 50) {
                    println!(
                        "  get({seq}): {:?}",
                        log.get(seq)
                            .map(|e| e.event_type)
                            .map_err(|e| e.to_string())
                    );
                }
                for e in log.iter(..).unwrap().take(50) {
                    println!(
                        "  iter: {:?}",
                        e.map(|e| (e.seq, e.event_type)).map_err(|e| e.to_string())
                    );
                }
            }
        }
        Err(e) => println!("open: {e}"),
    }
}
