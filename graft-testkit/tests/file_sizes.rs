//! No source file grows past 800 lines of code (its `#[cfg(test)]` module
//! at the end is not counted): a file that large has more than one role.

use graft_testkit::workspace;

const MAX_LINES: usize = 800;

/// Lines outside `#[cfg(test)] mod ... { ... }` blocks (at the top level).
fn code_lines(text: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let (mut count, mut i) = (0, 0);
    while i < lines.len() {
        let test_mod =
            lines[i].trim() == "#[cfg(test)]" && lines.get(i + 1).is_some_and(|l| l.starts_with("mod "));
        if test_mod {
            // Skip to the module's closing brace at the start of a line.
            i += 2;
            while i < lines.len() && lines[i] != "}" {
                i += 1;
            }
        } else {
            count += 1;
        }
        i += 1;
    }
    count
}

#[test]
fn test_modules_are_not_counted() {
    let text = "a\n#[cfg(test)]\nmod tests {\n    x\n}\nb\n";
    assert_eq!(code_lines(text), 2);
}

#[test]
fn no_source_file_is_over_800_lines() {
    let root = workspace::root();
    let files: Vec<_> = workspace::crates().iter().flat_map(|(_, src)| workspace::rust_files(src)).collect();
    assert!(files.len() > 20, "the scan found only {} source files", files.len());
    let mut over = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read source");
        let code = code_lines(&text);
        if code > MAX_LINES {
            over.push(format!("{}: {code} lines", f.strip_prefix(&root).unwrap_or(&f).display()));
        }
    }
    assert!(over.is_empty(), "files over {MAX_LINES} lines of code:\n{}", over.join("\n"));
}
