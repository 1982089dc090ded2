//! The frames of an archive iteration, decompressed on two threads.
//!
//! A helper thread (`evlog:archive-read`) decompresses the frames ahead of
//! the iterator, and the iterator's own thread decompresses one as well
//! whenever the frame it needs next is not ready: the one it needs if
//! nobody has started it, else the next one nobody has started. So the
//! iteration never waits while a frame is left to decompress, and a
//! replay goes as fast as both threads together, whichever is slower (the
//! comparison bench's Z2 ran at 0.46-0.62x of R2 in some runs with the
//! helper alone decompressing, on a machine where R2 itself did not
//! slow: the helper's core was slow that hour). Frames are claimed in
//! iteration order and handed out in that order; at most
//! `READ_AHEAD_FRAMES` are decompressed and not yet taken.

use std::sync::{Arc, Condvar, Mutex, PoisonError};

use super::reader::ArchiveFile;
use crate::error::{Error, Result};
use crate::sync::lock;

/// Frames decompressed ahead of the one being read, at most: enough to
/// keep a second core busy, few enough to bound memory (a frame holds at
/// most 256 KiB of records unless one record is larger, so about 1 MiB).
const READ_AHEAD_FRAMES: u64 = 4;

/// One frame: the file, the frame number, and its bytes or why they could
/// not be read.
pub(crate) type FrameRead = (Arc<ArchiveFile>, usize, Result<Arc<Vec<u8>>>);

/// Which frames the iteration reads, in order: every frame that may hold
/// a seq of `from_seq..=through_seq`.
struct Plan {
    files: Vec<Arc<ArchiveFile>>,
    from_seq: u64,
    through_seq: u64,
    file: usize,
    /// The next frame of `files[file]`; `None` before its first.
    frame: Option<usize>,
}

impl Plan {
    fn next(&mut self) -> Option<(Arc<ArchiveFile>, usize)> {
        loop {
            let file = self.files.get(self.file)?;
            if file.range_first_seq() > self.through_seq {
                return None;
            }
            let frames = file.frames();
            let number = *self.frame.get_or_insert_with(|| {
                frames.partition_point(|entry| entry.last_seq < self.from_seq)
            });
            match frames.get(number) {
                Some(entry) if entry.first_seq > self.through_seq => return None,
                Some(_) => {
                    self.frame = Some(number + 1);
                    return Some((Arc::clone(file), number));
                }
                None => {
                    self.file += 1;
                    self.frame = None;
                }
            }
        }
    }
}

struct State {
    plan: Plan,
    /// Frames handed out by the plan (to either thread), counted in
    /// iteration order.
    claimed: u64,
    /// Frames the iterator has taken.
    taken: u64,
    /// Decompressed and not taken yet, by their place in iteration order.
    ready: Vec<(u64, FrameRead)>,
    /// Claim no more: a frame failed, or the iterator is gone.
    stopped: bool,
    /// A failed frame was handed out: the frames end there.
    ended: bool,
    /// Tests: the helper sleeps this long before each frame.
    #[cfg(test)]
    helper_delay: std::time::Duration,
    /// Tests: frames the iterator's thread decompressed.
    #[cfg(test)]
    by_iterator: u64,
}

/// One frame claimed by a thread: its place in iteration order and where
/// it is.
type Claim = (u64, (Arc<ArchiveFile>, usize));

impl State {
    /// The next frame of the plan, if claiming goes on and fewer than
    /// `READ_AHEAD_FRAMES` are claimed and not taken; the end of the plan
    /// stops the claiming.
    fn claim(&mut self) -> Option<Claim> {
        if self.stopped || self.claimed - self.taken >= READ_AHEAD_FRAMES {
            return None;
        }
        let Some(frame) = self.plan.next() else {
            self.stopped = true;
            return None;
        };
        let ordinal = self.claimed;
        self.claimed += 1;
        Some((ordinal, frame))
    }
}

/// The frame pipeline of one iteration.
pub(crate) struct Frames {
    shared: Arc<(Mutex<State>, Condvar)>,
}

/// Decompresses a claimed frame. A panic becomes the frame's error: the
/// iterator waits for every frame the helper claimed, so the helper must
/// hand each one over.
fn read((file, number): (Arc<ArchiveFile>, usize)) -> FrameRead {
    let bytes = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        file.read_frame(number, None)
    }))
    .unwrap_or(Err(Error::Internal(
        "decompressing an archive frame panicked",
    )));
    (file, number, bytes)
}

impl Frames {
    /// The frames of `files` (sorted by range) that may hold a seq of
    /// `from_seq..=through_seq`, decompressed ahead on a helper thread
    /// (or, if it cannot be started, on the caller's alone).
    pub(crate) fn start(files: Vec<Arc<ArchiveFile>>, from_seq: u64, through_seq: u64) -> Frames {
        let frames = Frames::new(files, from_seq, through_seq);
        if from_seq > through_seq {
            return frames; // nothing to read
        }
        let helper_shared = Arc::clone(&frames.shared);
        let spawned = std::thread::Builder::new()
            .name("evlog:archive-read".into())
            .spawn(move || help(&helper_shared));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start an archive read-ahead thread; the iterator decompresses alone");
        }
        frames
    }

    /// The pipeline without its helper.
    fn new(files: Vec<Arc<ArchiveFile>>, from_seq: u64, through_seq: u64) -> Frames {
        let state = State {
            plan: Plan {
                files,
                from_seq,
                through_seq,
                file: 0,
                frame: None,
            },
            claimed: 0,
            taken: 0,
            ready: Vec::new(),
            stopped: from_seq > through_seq,
            ended: false,
            #[cfg(test)]
            helper_delay: std::time::Duration::ZERO,
            #[cfg(test)]
            by_iterator: 0,
        };
        Frames {
            shared: Arc::new((Mutex::new(state), Condvar::new())),
        }
    }

    /// The next frame in iteration order; `None` at the end (after a
    /// failed frame, too).
    pub(crate) fn next(&self) -> Option<FrameRead> {
        let (state, changed) = &*self.shared;
        let mut s = lock(state);
        loop {
            if s.ended {
                return None;
            }
            let want = s.taken;
            if let Some(at) = s.ready.iter().position(|(ordinal, _)| *ordinal == want) {
                let (_, frame) = s.ready.swap_remove(at);
                s.taken += 1;
                s.ended = frame.2.is_err();
                // Room for the helper to claim another.
                changed.notify_all();
                return Some(frame);
            }
            // Not ready: decompress here rather than wait, the wanted
            // frame if nobody has started it, else the next one nobody has.
            if let Some((ordinal, claim)) = s.claim() {
                #[cfg(test)]
                {
                    s.by_iterator += 1;
                }
                drop(s);
                let frame = read(claim);
                s = lock(state);
                s.stopped |= frame.2.is_err();
                s.ready.push((ordinal, frame));
                continue;
            }
            if s.claimed == want {
                // Nobody has it, and nobody will: the plan ended.
                return None;
            }
            // The helper is decompressing it.
            s = changed.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Drop for Frames {
    /// Tells the helper to claim no more (it finishes the frame in hand).
    fn drop(&mut self) {
        let (state, changed) = &*self.shared;
        lock(state).stopped = true;
        changed.notify_all();
    }
}

/// The helper thread: claims and decompresses frames in order while there
/// is room, until the plan ends, a frame fails or the iterator is gone.
fn help(shared: &(Mutex<State>, Condvar)) {
    let (state, changed) = shared;
    let mut s = lock(state);
    loop {
        let Some((ordinal, claim)) = s.claim() else {
            if s.stopped {
                // The iterator may be waiting for a frame that now never
                // comes from here.
                changed.notify_all();
                return;
            }
            s = changed.wait(s).unwrap_or_else(PoisonError::into_inner);
            continue;
        };
        #[cfg(test)]
        let delay = s.helper_delay;
        drop(s);
        #[cfg(test)]
        std::thread::sleep(delay);
        let frame = read(claim);
        s = lock(state);
        s.stopped |= frame.2.is_err();
        s.ready.push((ordinal, frame));
        changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::tests::write;
    use crate::storage::SimStorage;
    use std::path::Path;
    use std::time::Duration;

    /// Two archive files of small frames: seqs 1..=400 and 401..=800.
    fn files(storage: &SimStorage) -> Vec<Arc<ArchiveFile>> {
        [(1, 400), (401, 800)]
            .iter()
            .map(|&(first, last)| {
                let seqs: Vec<u64> = (first..=last).collect();
                let summary = write(storage, &seqs, &[], (first, last), 1024).unwrap();
                Arc::new(ArchiveFile::open(storage, &summary.path).unwrap())
            })
            .collect()
    }

    /// Every frame of `files` that may hold a seq of the range, in order.
    fn planned(files: &[Arc<ArchiveFile>], from: u64, through: u64) -> Vec<(u64, usize)> {
        let mut out = Vec::new();
        for file in files {
            for (number, entry) in file.frames().iter().enumerate() {
                if entry.last_seq >= from && entry.first_seq <= through {
                    out.push((file.range_first_seq(), number));
                }
            }
        }
        out
    }

    fn drain(frames: &Frames) -> Vec<(u64, usize)> {
        std::iter::from_fn(|| frames.next())
            .map(|(file, number, bytes)| {
                let bytes = bytes.unwrap();
                assert_eq!(bytes.len() as u32, file.frames()[number].decompressed_bytes);
                (file.range_first_seq(), number)
            })
            .collect()
    }

    // Whoever decompresses a frame (the helper, the iterator while the
    // helper is busy, or the iterator alone), they come out in order,
    // each once, and only those of the range.
    #[test]
    fn frames_come_in_order_whoever_decompresses_them() {
        let storage = SimStorage::new();
        let files = files(&storage);
        assert!(planned(&files, 0, u64::MAX).len() > 2 * READ_AHEAD_FRAMES as usize);
        for (from, through) in [(0, u64::MAX), (150, 650), (401, 401), (900, 1000)] {
            let expected = planned(&files, from, through);

            let helped = Frames::start(files.clone(), from, through);
            assert_eq!(drain(&helped), expected);

            let alone = Frames::new(files.clone(), from, through);
            assert_eq!(drain(&alone), expected);
            assert_eq!(lock(&alone.shared.0).by_iterator, expected.len() as u64);

            // A slow helper: the iterator decompresses most frames itself,
            // ahead of the one the helper holds.
            let slow = Frames::new(files.clone(), from, through);
            lock(&slow.shared.0).helper_delay = Duration::from_millis(20);
            let helper_shared = Arc::clone(&slow.shared);
            let helper = std::thread::spawn(move || help(&helper_shared));
            // The helper holds the first frame.
            while !expected.is_empty() && lock(&slow.shared.0).claimed == 0 {
                std::thread::yield_now();
            }
            assert_eq!(drain(&slow), expected);
            if expected.len() > 4 {
                let by_iterator = lock(&slow.shared.0).by_iterator;
                assert!(
                    by_iterator > 0 && by_iterator < expected.len() as u64,
                    "{by_iterator} of {}",
                    expected.len()
                );
            }
            drop(slow);
            helper.join().unwrap();
        }
    }

    // A damaged frame is the last one handed out, as its error, whoever
    // finds it.
    #[test]
    fn a_damaged_frame_ends_the_frames_with_its_error() {
        let storage = SimStorage::new();
        let files = files(&storage);
        let damaged = 5;
        let path = files[0].path().to_path_buf();
        let entry = files[0].frames()[damaged];
        let mut bytes = storage.read_file(&path).unwrap();
        bytes[entry.offset as usize + 8] ^= 0x40;
        storage.write_file(&path, &bytes);
        let files = vec![
            Arc::new(ArchiveFile::open(&storage, Path::new(&path)).unwrap()),
            Arc::clone(&files[1]),
        ];
        for helped in [true, false] {
            let frames = if helped {
                Frames::start(files.clone(), 0, u64::MAX)
            } else {
                Frames::new(files.clone(), 0, u64::MAX)
            };
            for number in 0..damaged {
                let (_, got, bytes) = frames.next().unwrap();
                assert_eq!(got, number);
                bytes.unwrap();
            }
            let (_, got, bytes) = frames.next().unwrap();
            assert_eq!(got, damaged);
            assert!(bytes.is_err());
            assert!(frames.next().is_none(), "helped: {helped}");
        }
    }
}
