//! `evlog holds`: listing, placing and releasing legal holds from the
//! command line, against the library's own reading of the holds file.

use evlog::{Event, HoldTarget, Log, Options};
use serde_json::{json, Value};

use crate::common::{cli_ok, run_cli, said, tempdir};

fn lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

// Proves that `holds add` places a hold once per target, `holds` lists
// them as JSON lines in placement order with their reason, `holds release`
// removes one, and the library reads the same list; changes are refused
// (exit 2, naming the lock) while a process has the log open, listing is not.
#[test]
fn cli_holds_add_list_release() {
    let dir = tempdir();
    let log = Log::open(dir.path(), Options::default()).unwrap();
    log.append(Event::new("cli.hold").entity("task", "T-1"))
        .unwrap();

    assert_eq!(cli_ok(dir.path(), &["holds"]), "");
    let refused = run_cli(
        dir.path(),
        &["holds", "add", "--entity", "task/T-1", "--reason", "x"],
    );
    assert_eq!(refused.status.code(), Some(2), "{}", said(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("locked"),
        "{}",
        said(&refused)
    );
    log.close().unwrap();

    let add = |args: &[&str]| lines(&cli_ok(dir.path(), &[&["holds", "add"], args].concat()));
    assert_eq!(
        add(&["--entity", "task/T-1/a", "--reason", "case 17"]),
        vec![json!({"placed": true})]
    );
    assert_eq!(
        add(&["--entity", "task/T-1/a", "--reason", "again"]),
        vec![json!({"placed": false})]
    );
    let correlation = "0192a4c6-0000-7000-8000-000000000001";
    assert_eq!(
        add(&["--correlation", correlation, "--reason", ""]),
        vec![json!({"placed": true})]
    );

    let listed = lines(&cli_ok(dir.path(), &["holds"]));
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["entity"], json!({"type": "task", "id": "T-1/a"}));
    assert_eq!(listed[0]["reason"], "case 17");
    assert!(listed[0]["placed_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(listed[1]["correlation_id"], correlation);
    let holds = evlog::holds_in_dir(dir.path()).unwrap();
    assert_eq!(
        holds.iter().map(|h| h.target.clone()).collect::<Vec<_>>(),
        vec![
            HoldTarget::Entity {
                entity_type: "task".into(),
                entity_id: "T-1/a".into()
            },
            HoldTarget::Correlation(correlation.parse().unwrap()),
        ]
    );

    let release =
        |args: &[&str]| lines(&cli_ok(dir.path(), &[&["holds", "release"], args].concat()));
    assert_eq!(
        release(&["--entity", "task/T-1/a"]),
        vec![json!({"released": true})]
    );
    assert_eq!(
        release(&["--entity", "task/T-1/a"]),
        vec![json!({"released": false})]
    );
    assert_eq!(lines(&cli_ok(dir.path(), &["holds"])).len(), 1);

    // Both targets, or none, is a usage error.
    for args in [
        &["holds", "add", "--reason", "r"][..],
        &[
            "holds",
            "release",
            "--entity",
            "a/b",
            "--correlation",
            correlation,
        ][..],
    ] {
        let out = run_cli(dir.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", said(&out));
    }
}

// Proves that a damaged holds file is an error naming the file and offset
// (exit 1: damage), and a missing data directory is refused without creating it.
#[test]
fn cli_holds_damaged_file_and_missing_directory() {
    let dir = tempdir();
    Log::open(dir.path(), Options::default())
        .unwrap()
        .close()
        .unwrap();
    cli_ok(
        dir.path(),
        &["holds", "add", "--entity", "task/T-1", "--reason", "r"],
    );
    let path = dir.path().join(evlog::HOLDS_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(bytes.len() - 1);
    std::fs::write(&path, &bytes).unwrap();
    let out = run_cli(dir.path(), &["holds"]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("holds") && stderr.contains("byte offset"),
        "{stderr}"
    );

    let missing = dir.path().join("nothing-here");
    let out = run_cli(&missing, &["holds"]);
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    assert!(!missing.exists());
}
