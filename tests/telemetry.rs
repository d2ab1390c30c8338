//! ONNX Runtime's telemetry stays off: the PyPI wheel (1.29 on) otherwise keeps a device
//! identifier and events to upload to Microsoft in `~/.cache/Microsoft`. Each check runs a
//! process whose home and cache are an empty folder, without `ORT_DISABLE_TELEMETRY`, and
//! finds that folder still empty: the command-line tool, and a host that left the variable
//! to the library (this test binary, run again as a child).

use std::path::Path;
use std::process::Command;

use espinnet::network::TELEMETRY_VARIABLE;

/// Set in the child: it then loads the network and says what it found.
const CHILD: &str = "ESPINNET_TELEMETRY_CHILD";

/// `command` with an empty `home` as home and cache, and no telemetry variable.
fn isolated(mut command: Command, home: &Path) -> Command {
    command
        .env("HOME", home)
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .env_remove(TELEMETRY_VARIABLE);
    command
}

/// Every file and folder under `dir`.
fn written(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .flat_map(|e| {
            let p = e.path();
            let mut found = vec![p.display().to_string()];
            if p.is_dir() {
                found.extend(written(&p));
            }
            found
        })
        .collect()
}

#[test]
fn the_command_line_tool_leaves_no_telemetry() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let case = dir.path().join("case");
    let run = |args: &[&str]| {
        let mut c = isolated(Command::new(env!("CARGO_BIN_EXE_espinnet")), &home);
        let o = c.args(args).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let case = case.to_str().unwrap();
    run(&["simulate", "--output", case, "--size", "64", "--scans", "5"]);
    let out = dir.path().join("out");
    run(&[
        "reconstruct",
        "--case",
        case,
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(written(&home), Vec::<String>::new());
}

#[test]
fn the_library_turns_telemetry_off_where_its_host_did_not() {
    if std::env::var_os(CHILD).is_some() {
        // The child: the variable is unset until the network loads ONNX Runtime.
        assert!(std::env::var_os(TELEMETRY_VARIABLE).is_none());
        let options = espinnet::network::Options::default();
        espinnet::network::Network::new(&options).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(std::env::var(TELEMETRY_VARIABLE).as_deref(), Ok("1"));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut c = isolated(Command::new(std::env::current_exe().unwrap()), dir.path());
    let o = c
        .env(CHILD, "1")
        .args([
            "--exact",
            "the_library_turns_telemetry_off_where_its_host_did_not",
            "--test-threads",
            "1",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && text.contains("1 passed"), "{text}");
    assert_eq!(written(dir.path()), Vec::<String>::new());
}
