//! The progress bar of the long commands (`reindex`, `verify`, `archive`,
//! a large `replay`, `demo`, and `evlog-dump --verify`), drawn by
//! `indicatif` on stderr, and only when stderr is a terminal: piped or
//! redirected, it writes not one byte (no `\r`, no escape sequence), so a
//! script's captured stderr holds only messages.

use std::io::IsTerminal;

/// Most redraws a second: enough for the bar to look alive, few enough
/// that drawing costs nothing next to the work it reports. indicatif skips
/// the updates that come sooner.
const REDRAWS_PER_S_MAX: u8 = 10;

/// How the bar looks: `reindexing [#####>....]  12% (seq 1200 of 10000,
/// eta 3s)`, the bar taking the width the rest leaves on the terminal's
/// line (a line wider than the terminal would wrap).
const TEMPLATE: &str = "{prefix} [{wide_bar}] {percent:>3}% ({msg} {pos} of {len}, eta {eta})";

/// A one-line progress bar on stderr: `label` says what is done
/// (`reindexing`), `unit` what is counted (`seq`, `event`, `piece`).
pub struct ProgressBar {
    bar: indicatif::ProgressBar,
    /// Whether an update with something to count came: a bar that never
    /// had one is cleared at the end rather than left showing `0 of 0`.
    started: bool,
}

impl ProgressBar {
    /// A bar drawn on stderr when stderr is a terminal, hidden otherwise.
    pub fn new(label: &'static str, unit: &'static str) -> ProgressBar {
        ProgressBar::drawn_if(std::io::stderr().is_terminal(), label, unit)
    }

    /// A bar for output that goes to stdout as it works (`replay`): on a
    /// terminal it would be drawn between the lines, so it is drawn only
    /// when stdout is not a terminal (and stderr is one).
    pub fn unless_stdout_is_terminal(label: &'static str, unit: &'static str) -> ProgressBar {
        let drawn = std::io::stderr().is_terminal() && !std::io::stdout().is_terminal();
        ProgressBar::drawn_if(drawn, label, unit)
    }

    fn drawn_if(drawn: bool, label: &'static str, unit: &'static str) -> ProgressBar {
        // Hidden while it is set up: each setter draws, and a bar of 0
        // items would show as full.
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(0),
            indicatif::ProgressDrawTarget::hidden(),
        );
        // The template is a constant that the tests run through; should
        // it ever fail to parse, the default style still shows progress.
        if let Ok(style) = indicatif::ProgressStyle::with_template(TEMPLATE) {
            bar.set_style(style.progress_chars("#>."));
        }
        bar.set_prefix(label);
        bar.set_message(unit);
        if drawn {
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr_with_hz(
                REDRAWS_PER_S_MAX,
            ));
        }
        ProgressBar {
            bar,
            started: false,
        }
    }

    /// `done` of `total` are done. Cheap enough to call every few thousand
    /// items: indicatif redraws at most [`REDRAWS_PER_S_MAX`] times a
    /// second. Nothing is drawn while `total` is 0.
    pub fn update(&mut self, done: u64, total: u64) {
        if total == 0 {
            return;
        }
        self.started = true;
        if self.bar.length() != Some(total) {
            self.bar.set_length(total);
        }
        self.bar.set_position(done.min(total));
    }

    /// Leaves the bar's last state on its line and moves to the next line,
    /// so that what follows on the terminal starts on a line of its own.
    pub fn finish(&self) {
        self.end(indicatif::ProgressBar::finish);
    }

    /// Ends the bar with `leave` (finish or abandon) when it was drawn,
    /// and clears it when it never had anything to show.
    fn end(&self, leave: fn(&indicatif::ProgressBar)) {
        if self.bar.is_finished() {
            return;
        }
        if !self.started {
            self.bar.finish_and_clear();
            return;
        }
        leave(&self.bar);
        if !self.bar.is_hidden() {
            // indicatif leaves the cursor at the end of the bar's line.
            eprintln!();
        }
    }
}

impl Drop for ProgressBar {
    /// A command that fails midway drops its bar without `finish`: leave
    /// it where it stopped, so that the error printed next is on a line of
    /// its own and shows how far the work went.
    fn drop(&mut self) {
        self.end(indicatif::ProgressBar::abandon);
    }
}
