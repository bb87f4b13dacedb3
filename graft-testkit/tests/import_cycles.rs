//! No import cycles between the files of the workspace: each file can be
//! read and changed with only what it imports in mind.
//!
//! A file's edges are the modules its paths name (`use crate::a::b`,
//! `crate::a::f()`, `super::x`, `self::y`), resolved to the file that
//! defines the longest matching module path. A module's edges to its own
//! submodules (declaring them, re-exporting their items) are structure, not
//! imports, and are left out; everything else counts, including a
//! submodule's use of its parent. A cycle fails the test and is printed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use graft_testkit::workspace;

/// The module path of a source file, relative to its crate's `src`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("a file under src");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_owned());
    }
    parts
}

/// Drops comments and string literals, so that paths in them do not count.
fn strip(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && b.get(i + 2) == Some(&b'\'') {
            // A char literal such as '{' (lifetimes have no closing quote).
            i += 3;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// Every path that starts at `crate`, `super` or `self`, expanded through
/// `{...}` groups, as segment lists (relative ones still start with the
/// keyword).
fn paths(code: &str) -> Vec<Vec<String>> {
    let tokens = tokenize(code);
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i].as_str();
        let starts = matches!(t, "crate" | "super" | "self")
            && tokens.get(i + 1).is_some_and(|n| n == "::")
            && (i == 0 || tokens[i - 1] != "::");
        if starts {
            let (mut found, next) = parse_path(&tokens, i);
            out.append(&mut found);
            i = next;
        } else {
            i += 1;
        }
    }
    out
}

fn tokenize(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                i += 1;
            }
            out.push(b[start..i].iter().collect());
        } else if c == ':' && b.get(i + 1) == Some(&':') {
            out.push("::".into());
            i += 2;
        } else if !c.is_whitespace() {
            out.push(c.to_string());
            i += 1;
        } else {
            i += 1;
        }
    }
    out
}

/// Parses the path starting at `tokens[i]`; returns its expansions and the
/// index after it.
fn parse_path(tokens: &[String], mut i: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix = Vec::new();
    loop {
        let Some(t) = tokens.get(i) else { return (vec![prefix], i) };
        if t == "{" {
            // A group: each comma-separated item continues the prefix.
            let mut out = Vec::new();
            i += 1;
            loop {
                match tokens.get(i).map(String::as_str) {
                    None => return (out, i),
                    Some("}") => return (out, i + 1),
                    Some(",") => i += 1,
                    Some(_) => {
                        let (inner, next) = parse_path(tokens, i);
                        for p in inner {
                            let mut full = prefix.clone();
                            full.extend(p);
                            out.push(full);
                        }
                        i = next;
                    }
                }
            }
        }
        if t.chars().all(|c| c.is_alphanumeric() || c == '_') {
            prefix.push(t.clone());
            i += 1;
            if tokens.get(i).is_some_and(|n| n == "::") {
                i += 1;
                continue;
            }
        }
        return (vec![prefix], i);
    }
}

#[test]
fn no_import_cycles_between_files() {
    let root = workspace::root();
    let mut cycles = Vec::new();
    let mut files_seen = 0;
    for (_, src) in workspace::crates() {
        let files = workspace::rust_files(&src);
        files_seen += files.len();
        let modules: BTreeMap<Vec<String>, PathBuf> =
            files.iter().map(|f| (module_path(&src, f), f.clone())).collect();
        // Binaries (main.rs beside lib.rs) are their own crate root.
        let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
        for (me, file) in &modules {
            if file.file_name().is_some_and(|n| n == "main.rs") && src.join("lib.rs").exists() {
                continue;
            }
            let code = strip(&std::fs::read_to_string(file).expect("read source"));
            for p in paths(&code) {
                // Resolve to absolute segments.
                let mut abs: Vec<String> = Vec::new();
                let mut rest = p.as_slice();
                match rest.first().map(String::as_str) {
                    Some("crate") => rest = &rest[1..],
                    Some("self") | Some("super") => {
                        abs = me.clone();
                        while let Some(first) = rest.first() {
                            match first.as_str() {
                                "self" => rest = &rest[1..],
                                "super" => {
                                    abs.pop();
                                    rest = &rest[1..];
                                }
                                _ => break,
                            }
                        }
                    }
                    _ => continue,
                }
                abs.extend(rest.iter().cloned());
                // The longest module prefix that is a file.
                let target =
                    (0..=abs.len()).rev().map(|n| abs[..n].to_vec()).find(|m| modules.contains_key(m));
                let Some(target) = target else { continue };
                // Itself, or its own submodules: structure, not imports.
                if target.starts_with(me) {
                    continue;
                }
                edges.entry(me.clone()).or_default().insert(target);
            }
        }
        // Cycles: a depth-first search from every module.
        let name = |m: &Vec<String>| {
            let f = &modules[m];
            f.strip_prefix(&root).unwrap_or(f).display().to_string()
        };
        let mut reported = BTreeSet::new();
        for start in modules.keys() {
            let mut stack = vec![(start.clone(), vec![start.clone()])];
            while let Some((at, path)) = stack.pop() {
                for next in edges.get(&at).into_iter().flatten() {
                    if next == start {
                        let mut members: Vec<String> = path.iter().map(&name).collect();
                        let key: BTreeSet<String> = members.iter().cloned().collect();
                        if reported.insert(key) {
                            members.push(name(start));
                            cycles.push(members.join(" -> "));
                        }
                    } else if !path.contains(next) && path.len() < 8 {
                        let mut p = path.clone();
                        p.push(next.clone());
                        stack.push((next.clone(), p));
                    }
                }
            }
        }
    }
    assert!(files_seen > 20, "the scan found only {files_seen} source files");
    assert!(cycles.is_empty(), "import cycles between files:\n{}", cycles.join("\n"));
}

#[test]
fn the_scanner_sees_paths_in_groups_and_relative_paths() {
    let code = strip(
        "use crate::{a::{B, c}, d}; fn f() { super::x::y(); } // crate::ignored\nlet s = \"crate::no\";",
    );
    let found = paths(&code);
    let want: Vec<Vec<String>> =
        [vec!["crate", "a", "B"], vec!["crate", "a", "c"], vec!["crate", "d"], vec!["super", "x", "y"]]
            .iter()
            .map(|p| p.iter().map(|s| s.to_string()).collect())
            .collect();
    assert_eq!(found, want);
}
