//! The claims of the docs that can drift from the code without anyone
//! touching the docs, checked against the code on every `cargo test`:
//!
//! - every file of `src/` is in ARCHITECTURE.md's module list, and every
//!   file the list names exists;
//! - the feature tables (README.md, ARCHITECTURE.md) and the crate docs'
//!   list name exactly Cargo.toml's features, with the default ones marked;
//! - the crate counts in README.md and ARCHITECTURE.md are what
//!   `scripts/crate-counts.sh` measures with `cargo tree` (Linux, where
//!   they are given);
//! - each layer uses only the layers below it (ARCHITECTURE.md's rule).
//!
//! The files are the same on every platform; they are checked where the
//! repository is at hand as plain paths (not under Wine).
#![cfg(unix)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every `.rs` file under `dir` (relative to the package), as `src/a/b.rs`.
fn rust_files(dir: &str) -> BTreeSet<String> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("a readable directory") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(&root().join(dir), &mut found);
    found
        .iter()
        .map(|path| {
            let relative = path.strip_prefix(root()).expect("under the package");
            relative.to_string_lossy().replace('\\', "/")
        })
        .collect()
}

/// The files ARCHITECTURE.md's module list names under `src/`: the tree
/// in the first code block of "## Modules", where a name ending in `/` is
/// a directory holding the deeper-indented names below it, and a line may
/// name several files (`call.rs, ping.rs`).
fn module_list() -> BTreeSet<String> {
    let text = read("ARCHITECTURE.md");
    let modules = text.split("## Modules").nth(1).expect("a Modules section");
    let block = modules.split("```").nth(1).expect("the module list");
    let mut dirs: Vec<(usize, String)> = Vec::new();
    let mut files = BTreeSet::new();
    for line in block.lines() {
        let indent = line.len() - line.trim_start().len();
        // The names end where the description starts (two spaces), or
        // with the line.
        let names = line.trim_start().split("  ").next().unwrap_or_default();
        let names: Vec<&str> = names.split(", ").map(str::trim).collect();
        let is_path = |name: &&str| name.ends_with(".rs") || name.ends_with('/');
        if names.is_empty() || !names.iter().all(is_path) {
            continue; // a description continued on the next line
        }
        while dirs.last().is_some_and(|(depth, _)| *depth >= indent) {
            dirs.pop();
        }
        let parent = dirs.last().map(|(_, dir)| dir.clone()).unwrap_or_default();
        if indent == 0 && names != ["src/"] {
            // The list goes on past `src/` (contrib/, tests/, ...).
            if !parent.is_empty() || !files.is_empty() {
                break;
            }
            continue;
        }
        for name in names {
            let path = format!("{parent}{name}");
            if name.ends_with('/') {
                dirs.push((indent, path));
            } else {
                files.insert(path);
            }
        }
    }
    files
}

#[test]
fn every_file_of_src_is_in_architectures_module_list() {
    let listed = module_list();
    let files = rust_files("src");
    let missing: Vec<_> = files.difference(&listed).collect();
    let gone: Vec<_> = listed.difference(&files).collect();
    assert!(
        missing.is_empty(),
        "files of src/ missing from ARCHITECTURE.md's module list: {missing:?}"
    );
    assert!(
        gone.is_empty(),
        "ARCHITECTURE.md's module list names files that do not exist: {gone:?}"
    );
}

/// Cargo.toml's features (but `default`), each with whether it is on by
/// default.
fn cargo_features() -> BTreeMap<String, bool> {
    let text = read("Cargo.toml");
    let section = text
        .split("\n[features]\n")
        .nth(1)
        .expect("a [features] table");
    let mut features = BTreeMap::new();
    let mut default = Vec::new();
    for line in section.lines().take_while(|line| !line.starts_with('[')) {
        let Some((name, value)) = line.split_once(" = ") else {
            continue;
        };
        if name == "default" {
            default = value
                .trim_matches(['[', ']'])
                .split(',')
                .map(|f| f.trim().trim_matches('"').to_owned())
                .collect();
        } else if !name.starts_with('#') {
            features.insert(name.to_owned(), false);
        }
    }
    for name in default {
        *features
            .get_mut(&name)
            .expect("a default feature is a feature") = true;
    }
    features
}

/// The features a list names: each item that starts with `prefix` and a
/// feature in backquotes, `(default)` after it marking a default one.
fn listed_features(text: &str, prefix: &str) -> BTreeMap<String, bool> {
    text.lines()
        .filter_map(|line| line.trim_start().strip_prefix(prefix))
        .filter_map(|rest| {
            let rest = rest.trim_start().strip_prefix('`')?;
            let (name, after) = rest.split_once('`')?;
            let is_name = name.chars().all(|c| c.is_ascii_lowercase() || c == '-');
            is_name.then(|| (name.to_owned(), after.starts_with(" (default)")))
        })
        .collect()
}

/// The part of `text` from `start` up to the next blank line after it.
fn paragraph_from<'a>(text: &'a str, start: &str) -> &'a str {
    let from = text.find(start).unwrap_or_else(|| panic!("no {start:?}"));
    let rest = &text[from..];
    // The table starts after the heading's own paragraph.
    let table = rest.find("\n|").map_or(rest, |at| &rest[at..]);
    table.split("\n\n").next().unwrap_or(table)
}

#[test]
fn the_feature_lists_name_every_feature_of_cargo_toml() {
    let features = cargo_features();
    assert!(features.contains_key("rpc") && features.contains_key("testing"));
    let readme = read("README.md");
    let architecture = read("ARCHITECTURE.md");
    let lib = read("src/lib.rs");
    let lists = [
        (
            "README.md's feature table",
            listed_features(paragraph_from(&readme, "Features (none is on"), "|"),
        ),
        (
            "ARCHITECTURE.md's feature table",
            listed_features(paragraph_from(&architecture, "### Features"), "|"),
        ),
        (
            "the crate docs' features (src/lib.rs)",
            listed_features(
                lib.split("## Features").nth(1).expect("a Features section"),
                "//! -",
            ),
        ),
    ];
    for (what, listed) in lists {
        assert_eq!(
            listed, features,
            "{what} against Cargo.toml (name: on by default)"
        );
    }
}

/// The numbers the docs put before `phrase` (whitespace as one space, so
/// that a wrapped line does not hide one).
fn numbers_before(text: &str, phrase: &str) -> Vec<u64> {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    text.match_indices(phrase)
        .filter_map(|(at, _)| {
            let before = &text[..at];
            let digits = before.len() - before.trim_end_matches(|c: char| c.is_ascii_digit()).len();
            before[before.len() - digits..].parse().ok()
        })
        .collect()
}

/// `cargo tree` inside `cargo test`: the script takes well under a second
/// and needs no build lock. The counts are Linux's (libc, no windows-sys).
#[cfg(target_os = "linux")]
#[test]
fn the_crate_counts_are_what_cargo_tree_measures() {
    let output = std::process::Command::new("bash")
        .arg(root().join("scripts/crate-counts.sh"))
        .env("CARGO", env!("CARGO"))
        .output()
        .expect("run scripts/crate-counts.sh");
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "scripts/crate-counts.sh failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let measured: BTreeMap<&str, u64> = printed
        .lines()
        .filter_map(|line| {
            let (label, n) = line.split_once(' ')?;
            Some((label, n.parse().ok()?))
        })
        .collect();
    let phrases = [
        ("bare", " crates with `default-features = false`"),
        ("rpc", " with `rpc` alone"),
        ("default", " with the default features"),
    ];
    for doc in ["README.md", "ARCHITECTURE.md"] {
        let text = read(doc);
        for (label, phrase) in phrases {
            let expected = measured[label];
            let given = numbers_before(&text, phrase);
            assert!(
                given.iter().all(|&n| n == expected),
                "{doc} gives {given:?}{phrase}; scripts/crate-counts.sh measures {expected}"
            );
            if label != "rpc" {
                assert!(!given.is_empty(), "{doc} no longer says N{phrase}");
            }
        }
    }
}

/// What each layer may not use: the layers beside and above it
/// (ARCHITECTURE.md, "Modules"). Helpers (`endpoint`, `error`, `validate`,
/// `log_limit`, `frame_io`, `id_hash`) may use only `protocol` and each other.
const FORBIDDEN: &[(&str, &[&str])] = &[
    (
        "protocol",
        &["transport", "server", "client", "rpc", "ops", "testing"],
    ),
    (
        "transport",
        &["protocol", "server", "client", "rpc", "ops", "testing"],
    ),
    ("server", &["client", "rpc", "ops", "testing"]),
    ("client", &["server", "rpc", "ops", "testing"]),
    ("rpc", &["ops", "testing"]),
    ("ops", &["testing"]),
    ("testing", &["ops", "rpc"]),
    (
        "endpoint",
        &["transport", "server", "client", "rpc", "ops", "testing"],
    ),
    (
        "error",
        &["transport", "server", "client", "rpc", "ops", "testing"],
    ),
    (
        "validate",
        &["transport", "server", "client", "rpc", "ops", "testing"],
    ),
    (
        "log_limit",
        &["transport", "server", "client", "rpc", "ops", "testing"],
    ),
    (
        "frame_io",
        &["transport", "server", "client", "rpc", "ops", "testing"],
    ),
    (
        "id_hash",
        &["transport", "server", "client", "rpc", "ops", "testing"],
    ),
];

/// The module a `crate::NAME` path reaches (the root's re-exports
/// included).
fn module_of(name: &str) -> &str {
    match name {
        "Client" | "ClientOptions" => "client",
        "Server" => "server",
        "Endpoint" => "endpoint",
        "Error" | "Result" => "error",
        other => other,
    }
}

/// The modules `text` reaches through `crate::` paths, outside comments.
fn crate_paths(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .flat_map(|line| {
            line.match_indices("crate::")
                .map(move |(at, _)| &line[at + 7..])
        })
        .map(|rest| {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            module_of(&rest[..end]).to_owned()
        })
        .collect()
}

#[test]
fn each_layer_uses_only_the_layers_below_it() {
    let mut broken = Vec::new();
    for (layer, forbidden) in FORBIDDEN {
        let mut files = rust_files("src")
            .into_iter()
            .filter(|f| f.starts_with(&format!("src/{layer}/")) || *f == format!("src/{layer}.rs"))
            .peekable();
        assert!(files.peek().is_some(), "no files for layer {layer}");
        for file in files {
            for used in crate_paths(&read(&file)) {
                if forbidden.contains(&used.as_str()) {
                    broken.push(format!("{file} uses crate::{used}"));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "layers used from below or beside: {broken:?}"
    );
}
