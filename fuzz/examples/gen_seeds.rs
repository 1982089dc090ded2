//! Writes the seed corpora: `cargo run --example gen_seeds [CORPUS_DIR]`
//! (default `corpus`, relative to the current directory).

fn main() -> std::io::Result<()> {
    let root = std::env::args().nth(1).unwrap_or_else(|| "corpus".into());
    for (target, count) in evlog_fuzz::seeds::write_seeds(std::path::Path::new(&root))? {
        println!("{root}/{target}: {count} seeds");
    }
    Ok(())
}
