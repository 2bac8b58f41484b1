//! Every crate in the dependency tree must be usable in an MIT OR Apache-2.0 project.
//! Reads `cargo metadata` (the lock file's exact versions) and checks each license
//! expression against an allow-list of permissive licenses.

use std::process::Command;

const ALLOWED: &[&str] = &[
    "MIT",
    "MIT-0",
    "Apache-2.0",
    "Apache-2.0 WITH LLVM-exception",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "ISC",
    "Zlib",
    "Unicode-3.0",
    "Unicode-DFS-2016",
    "CC0-1.0",
    "Unlicense",
    "BSL-1.0",
    "MPL-2.0",
    "CDLA-Permissive-2.0",
];

/// Evaluates an SPDX expression (`AND` binds tighter than `OR`, parentheses, and the
/// old `MIT/Apache-2.0` form): true when the licenses can be satisfied from the allow-list.
fn acceptable(expr: &str) -> bool {
    let spaced = expr.replace('/', " OR ").replace('(', " ( ").replace(')', " ) ");
    let tokens: Vec<&str> = spaced.split_whitespace().collect();
    let mut pos = 0;
    let ok = or_expr(&tokens, &mut pos);
    ok == Some(true) && pos == tokens.len()
}

fn or_expr(t: &[&str], pos: &mut usize) -> Option<bool> {
    let mut v = and_expr(t, pos)?;
    while t.get(*pos) == Some(&"OR") {
        *pos += 1;
        v |= and_expr(t, pos)?;
    }
    Some(v)
}

fn and_expr(t: &[&str], pos: &mut usize) -> Option<bool> {
    let mut v = atom(t, pos)?;
    while t.get(*pos) == Some(&"AND") {
        *pos += 1;
        v &= atom(t, pos)?;
    }
    Some(v)
}

fn atom(t: &[&str], pos: &mut usize) -> Option<bool> {
    let tok = *t.get(*pos)?;
    *pos += 1;
    if tok == "(" {
        let v = or_expr(t, pos)?;
        (t.get(*pos) == Some(&")")).then(|| *pos += 1)?;
        return Some(v);
    }
    let mut lic = tok.to_string();
    if t.get(*pos) == Some(&"WITH") {
        lic = format!("{lic} WITH {}", t.get(*pos + 1)?);
        *pos += 2;
    }
    Some(ALLOWED.contains(&lic.as_str()))
}

#[test]
fn every_dependency_has_a_permissive_license() {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let packages = meta["packages"].as_array().expect("packages");
    assert!(packages.len() > 50, "suspiciously few packages: {}", packages.len());
    let mut bad = Vec::new();
    for p in packages {
        let name = p["name"].as_str().unwrap_or("?");
        let version = p["version"].as_str().unwrap_or("?");
        match p["license"].as_str() {
            Some(l) if acceptable(l) => {}
            Some(l) => bad.push(format!("{name} {version}: {l}")),
            None => bad.push(format!("{name} {version}: no SPDX license")),
        }
        // evalexpr 12+ is AGPL-3.0-only; 11.3.1 is MIT.
        if name == "evalexpr" {
            assert_eq!(version, "11.3.1", "evalexpr must stay pinned at 11.3.1");
        }
    }
    assert!(
        bad.is_empty(),
        "dependencies with licenses outside the allow-list:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_checker_rejects_copyleft() {
    assert!(acceptable("MIT OR Apache-2.0"));
    assert!(acceptable("(MIT OR Apache-2.0) AND Unicode-3.0"));
    assert!(acceptable("MIT/Apache-2.0"));
    assert!(!acceptable("AGPL-3.0-only"));
    assert!(!acceptable("GPL-2.0 AND MIT"));
    assert!(!acceptable("(MIT OR Apache-2.0) AND GPL-3.0-only"));
    assert!(acceptable("Apache-2.0 WITH LLVM-exception OR MIT"));
    assert!(!acceptable("(MIT"));
}
