//! Error messages of `evlog` and `evlog-dump` that echo the command line,
//! cut to a readable length the way the library cuts the input its own
//! errors echo (`evlog::cli_support::shorten_for_message`: the first 64
//! bytes and the length). clap quotes a rejected value whole, and an OS
//! error about a path is given the whole path: a 100 KB argument must not
//! become a 100 KB message.

use std::ffi::OsString;
use std::process::ExitCode;

/// Longest piece of the command line a message echoes whole. Longer than
/// the library's 64 bytes so that real paths (often 80 to 150 bytes) stay
/// whole in "opening PATH" messages; short enough that a message stays
/// within a few terminal lines.
const ECHOED_BYTES_MAX: usize = 200;

/// `message` with each over-long argument of `args` (and the value of an
/// over-long `--flag=VALUE`, which clap quotes alone) that it contains cut
/// down, then any other over-long run of non-blank text (a value that a
/// parser quoted transformed) cut down too.
pub fn shorten_echoed(message: &str, args: &[OsString]) -> String {
    let mut tokens: Vec<String> = Vec::new();
    for arg in args {
        let arg = arg.to_string_lossy();
        if let Some((_, value)) = arg.split_once('=').filter(|_| arg.starts_with('-')) {
            tokens.push(value.to_string());
        }
        tokens.push(arg.into_owned());
    }
    tokens.retain(|token| token.len() > ECHOED_BYTES_MAX);
    // The longest first: `--type=VALUE` before the VALUE inside it.
    tokens.sort_by_key(|token| std::cmp::Reverse(token.len()));
    let mut message = message.to_string();
    for token in &tokens {
        if message.contains(token.as_str()) {
            message = message.replace(token.as_str(), &shorten(token));
        }
    }
    let mut out = String::with_capacity(message.len());
    for piece in message.split_inclusive(char::is_whitespace) {
        let word = piece.trim_end_matches(char::is_whitespace);
        if word.len() > ECHOED_BYTES_MAX {
            out.push_str(&shorten(word));
            out.push_str(&piece[word.len()..]);
        } else {
            out.push_str(piece);
        }
    }
    out
}

fn shorten(text: &str) -> String {
    evlog::cli_support::shorten_for_message(text)
}

/// A type pattern argument (`--type`, `--filter-type`), checked while the
/// command line is parsed so that a bad one is a usage error like any
/// other. clap quotes the value itself: the error keeps only the
/// library's reason, which follows the pattern it quotes (after the last
/// `": `, since the reason holds none).
pub fn parse_pattern(text: &str) -> Result<String, String> {
    evlog::validate_pattern(text)
        .map(|()| text.to_string())
        .map_err(|e| {
            let message = e.to_string();
            match message.rsplit_once("\": ") {
                Some((_, reason)) => reason.to_string(),
                None => message,
            }
        })
}

/// Parses the command line as clap does, but a usage error whose message
/// would echo an over-long argument is printed with it cut down (plain
/// text, clap's exit code 2 and its "try '--help'" line kept). Help,
/// version and every usage error without such an argument are clap's own
/// output, colours included.
pub fn parse_args<P: clap::Parser>() -> Result<P, ExitCode> {
    let args: Vec<OsString> = std::env::args_os().collect();
    match P::try_parse_from(&args) {
        Ok(parsed) => Ok(parsed),
        Err(error) => {
            let rendered = error.render().to_string();
            let shortened = shorten_echoed(&rendered, args.get(1..).unwrap_or_default());
            if shortened == rendered || !error.use_stderr() {
                error.exit();
            }
            eprint!("{shortened}");
            Err(ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves that a long value is cut wherever the message quotes it, as
    // `--flag=VALUE` or alone, and that short text is left as it is.
    #[test]
    fn long_arguments_are_cut_short_ones_kept() {
        let long = "a".repeat(1000);
        let args = [
            OsString::from("tail"),
            OsString::from(format!("--type={long}")),
        ];
        let message = format!("error: invalid value '{long}' for '--type <PATTERN>'\n");
        let cut = shorten_echoed(&message, &args);
        assert_eq!(
            cut,
            format!(
                "error: invalid value '{}... (1000 bytes)' for '--type <PATTERN>'\n",
                &long[..64]
            )
        );
        let short = "error: unexpected argument '--bogus' found\n";
        assert_eq!(shorten_echoed(short, &[OsString::from("--bogus")]), short);
        let path = format!("/{}", "p".repeat(150));
        let message = format!("evlog: opening {path}: No such file or directory\n");
        assert_eq!(shorten_echoed(&message, &[OsString::from(&path)]), message);
    }

    // Proves that a long value with blanks in it, which the catch-all for
    // long words cannot see, is cut because it is an argument.
    #[test]
    fn long_argument_with_blanks_is_cut() {
        let long = "a b ".repeat(300);
        let message = format!("error: invalid value '{long}' for '<SEQ>'\n");
        let cut = shorten_echoed(&message, &[OsString::from(&long)]);
        assert!(cut.len() < 200, "{cut}");
        assert!(cut.contains("(1200 bytes)"), "{cut}");
    }
}
