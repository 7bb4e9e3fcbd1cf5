//! The map agrees with the tree: every module file of every crate is named in
//! docs/architecture.md, every file the map names exists, and no two modules of a crate
//! depend on each other in a circle.
//!
//! A module depends on another when its code names it (`use crate::a::b`, `super::x`,
//! `crate::a::f()`); a parent naming its own children (declaring, re-exporting, routing
//! them) is containment, not a dependency. Test modules inside a file are left out: they
//! may use anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates whose `src/` is mapped, relative to the workspace root.
const CRATES: &[&str] = &[
    "crates/hookd",
    "crates/hookd-store",
    "crates/hookd-verify",
    "crates/hookd-testkit",
    "crates/hookd-bench",
    "tests",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace root")
        .to_path_buf()
}

/// Every `.rs` file under `dir`, relative to it, with `/` separators.
fn rust_files(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(base, &path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(base).expect("under base");
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The module path of a file: `daemon/dispatch/mod.rs` -> `["daemon", "dispatch"]`,
/// `lib.rs` and `main.rs` -> `[]`.
fn module_of(file: &str) -> Vec<String> {
    let mut parts: Vec<String> = file
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_string)
        .collect();
    let last = parts.last().map(String::as_str);
    if matches!(last, Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

/// The source without comments, string and character literals, and inline test modules
/// (`#[cfg(test)] mod name { ... }`).
fn code_of(source: &str) -> String {
    without_test_modules(&without_literals(source))
}

fn without_test_modules(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let inline_module = after.trim_start().starts_with("mod ")
            && after
                .find('{')
                .is_some_and(|b| after.find(';').is_none_or(|s| b < s));
        if !inline_module {
            out.push_str("#[cfg(test)]");
            rest = after;
            continue;
        }
        let open = after.find('{').expect("checked above");
        let mut depth = 0;
        let mut end = after.len();
        for (i, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn without_literals(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let word_before = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && at(i + 1) == '/') {
                i += 1;
            }
            i += 2;
        } else if c == 'r' && !word_before && (at(i + 1) == '"' || at(i + 1) == '#') {
            // A raw string: r"...", r#"..."#.
            let mut hashes = 0;
            let mut j = i + 1;
            while at(j) == '#' {
                hashes += 1;
                j += 1;
            }
            if at(j) != '"' {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            let end: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            let end: Vec<char> = end.chars().collect();
            while j < chars.len() && chars[j..].iter().take(end.len()).ne(end.iter()) {
                j += 1;
            }
            i = j + end.len();
            out.push_str("\"\"");
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && at(i + 1) == '\\' {
            // An escaped character literal: '\n', '\'', '\u{..}'.
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
        } else if c == '\'' && at(i + 2) == '\'' {
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The paths a piece of code names that start at `crate`, `super` or `self`, with `use`
/// groups expanded: `use super::{a, b::c}` gives `super::a` and `super::b::c`.
fn named_paths(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let bytes: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !(bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '_');
        let rest: String = bytes[i..bytes.len().min(i + 7)].iter().collect();
        if starts_word
            && ["crate::", "super::", "self::"]
                .iter()
                .any(|p| rest.starts_with(p))
        {
            let (path, end) = read_path(&bytes, i);
            paths.extend(path);
            i = end;
        } else {
            i += 1;
        }
    }
    paths
}

/// Reads a path at `at` (which may end in a `{...}` group); returns the expanded paths and
/// where it ended.
fn read_path(chars: &[char], at: usize) -> (Vec<String>, usize) {
    let mut i = at;
    let mut prefix = String::new();
    while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
        prefix.push(chars[i]);
        i += 1;
    }
    if i < chars.len() && chars[i] == '{' && prefix.ends_with("::") {
        // A group: split its items at top-level commas.
        let mut depth = 0;
        let mut item = String::new();
        let mut items = Vec::new();
        i += 1;
        while i < chars.len() {
            match chars[i] {
                '{' => {
                    depth += 1;
                    item.push('{');
                }
                '}' if depth == 0 => {
                    i += 1;
                    break;
                }
                '}' => {
                    depth -= 1;
                    item.push('}');
                }
                ',' if depth == 0 => items.push(std::mem::take(&mut item)),
                c => item.push(c),
            }
            i += 1;
        }
        items.push(item);
        let mut out = Vec::new();
        for item in items {
            let item: String = item.split_whitespace().collect::<Vec<_>>().join(" ");
            let item = if item.contains('{') {
                item.trim()
            } else {
                item.split(" as ").next().unwrap_or_default().trim()
            };
            if item.is_empty() {
                continue;
            }
            let joined: Vec<char> = format!("{prefix}{item}").chars().collect();
            out.extend(read_path(&joined, 0).0);
        }
        return (out, i);
    }
    (vec![prefix.trim_end_matches(':').to_string()], i)
}

/// Names a module re-exports (`pub use a::{B, c}`): (module, name) -> the module it comes
/// from.
type Reexports = BTreeMap<(Vec<String>, String), Vec<String>>;

/// The `pub use` re-exports of a module's code. Their paths may be relative to the module.
fn reexports_of(from: &[String], code: &str, modules: &BTreeSet<Vec<String>>, out: &mut Reexports) {
    let chars: Vec<char> = code.chars().collect();
    let mut rest = code;
    let mut offset = 0;
    while let Some(at) = rest.find("pub use ") {
        let start = offset + at + "pub use ".len();
        let char_start = code[..start].chars().count();
        let (paths, _) = read_path(&chars, char_start);
        for path in paths {
            let Some(name) = path.rsplit("::").next().map(str::to_string) else {
                continue;
            };
            let path = if ["crate::", "super::", "self::"]
                .iter()
                .any(|p| path.starts_with(p))
            {
                path
            } else {
                format!("self::{path}")
            };
            if let Some(to) = resolve(from, &path, modules, &Reexports::new()) {
                out.insert((from.to_vec(), name), to);
            }
        }
        offset = start;
        rest = &code[start..];
    }
}

/// The module a path names: the longest prefix that is a module of the crate, or the
/// module an item it names is re-exported from.
fn resolve(
    from: &[String],
    path: &str,
    modules: &BTreeSet<Vec<String>>,
    reexports: &Reexports,
) -> Option<Vec<String>> {
    let mut segments = path.split("::");
    let mut base: Vec<String> = match segments.next()? {
        "crate" => Vec::new(),
        "self" => from.to_vec(),
        "super" => from[..from.len().checked_sub(1)?].to_vec(),
        _ => return None,
    };
    let mut found = modules.contains(&base).then(|| base.clone());
    for segment in segments {
        if segment == "super" {
            base.pop();
            found = Some(base.clone());
            continue;
        }
        if let Some(to) = reexports.get(&(base.clone(), segment.to_string())) {
            return Some(to.clone());
        }
        base.push(segment.to_string());
        if modules.contains(&base) {
            found = Some(base.clone());
        } else {
            break;
        }
    }
    found
}

/// A circle of dependencies among `graph`'s modules, if there is one.
fn find_circle(graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Option<Vec<String>> {
    fn visit(
        node: &Vec<String>,
        graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        state: &mut BTreeMap<Vec<String>, u8>,
        stack: &mut Vec<Vec<String>>,
    ) -> Option<Vec<String>> {
        state.insert(node.clone(), 1);
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next).copied().unwrap_or(0) {
                0 => {
                    if let Some(c) = visit(next, graph, state, stack) {
                        return Some(c);
                    }
                }
                1 => {
                    let at = stack.iter().position(|n| n == next).expect("on the stack");
                    let mut circle: Vec<String> = stack[at..].iter().map(|m| name(m)).collect();
                    circle.push(name(next));
                    return Some(circle);
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if state.get(node).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(node, graph, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

fn name(module: &[String]) -> String {
    if module.is_empty() {
        "crate".to_string()
    } else {
        module.join("::")
    }
}

#[test]
fn no_module_depends_on_itself_through_others() {
    let mut circles = Vec::new();
    for krate in CRATES {
        let src = root().join(krate).join("src");
        let files = rust_files(&src);
        let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(f)).collect();
        let code: Vec<(Vec<String>, String)> = files
            .iter()
            .map(|f| {
                let source = std::fs::read_to_string(src.join(f)).expect("readable source");
                (module_of(f), code_of(&source))
            })
            .collect();
        let mut reexports = Reexports::new();
        for (from, code) in &code {
            reexports_of(from, code, &modules, &mut reexports);
        }
        let mut graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
        for (from, code) in &code {
            let from = from.clone();
            for path in named_paths(code) {
                let Some(to) = resolve(&from, &path, &modules, &reexports) else {
                    continue;
                };
                // Itself, or a module inside it: containment, not a dependency.
                if to.starts_with(&from) {
                    continue;
                }
                graph.entry(from.clone()).or_default().insert(to);
            }
        }
        // Each circle found is reported, then broken at its last step to look for more.
        while let Some(circle) = find_circle(&graph) {
            circles.push(format!("{krate}: {}", circle.join(" -> ")));
            let module = |n: &String| -> Vec<String> {
                if n == "crate" {
                    Vec::new()
                } else {
                    n.split("::").map(str::to_string).collect()
                }
            };
            let (from, to) = (
                module(&circle[circle.len() - 2]),
                module(&circle[circle.len() - 1]),
            );
            graph
                .get_mut(&from)
                .expect("an edge of the circle")
                .remove(&to);
        }
    }
    assert!(
        circles.is_empty(),
        "modules that depend on each other in a circle (move what both need into a module of \
         its own, so that dependencies run one way):\n  {}",
        circles.join("\n  ")
    );
}

#[test]
fn the_architecture_map_names_every_module_and_nothing_else() {
    let doc_path = root().join("docs/architecture.md");
    let doc = std::fs::read_to_string(&doc_path).expect("docs/architecture.md");
    let mut missing = Vec::new();
    for krate in CRATES {
        for file in rust_files(&root().join(krate).join("src")) {
            let shown = format!("{krate}/src/{file}");
            if !doc.contains(&format!("`{file}`")) && !doc.contains(&format!("`{shown}`")) {
                missing.push(shown);
            }
        }
    }
    // Every `path.rs` the map names in backticks must be (the end of) a file's path.
    let mut every_file = Vec::new();
    for dir in ["crates", "tests"] {
        every_file.extend(
            rust_files(&root().join(dir))
                .into_iter()
                .map(|f| format!("{dir}/{f}")),
        );
    }
    let mut stale = Vec::new();
    for quoted in doc.split('`').skip(1).step_by(2) {
        if quoted.ends_with(".rs") && !quoted.contains(' ') && !quoted.contains('*') {
            let exists = every_file
                .iter()
                .any(|f| f == quoted || f.ends_with(&format!("/{quoted}")));
            if !exists {
                stale.push(quoted.to_string());
            }
        }
    }
    stale.sort();
    stale.dedup();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/architecture.md does not match the tree.\n  modules it does not name (add a row \
         with the path in backticks, relative to the crate's src/): {missing:?}\n  paths it names \
         that do not exist: {stale:?}"
    );
}

#[cfg(test)]
mod unit {
    use super::*;

    fn set(modules: &[&str]) -> BTreeSet<Vec<String>> {
        modules
            .iter()
            .map(|m| {
                if m.is_empty() {
                    Vec::new()
                } else {
                    m.split("::").map(str::to_string).collect()
                }
            })
            .collect()
    }

    #[test]
    fn groups_expand() {
        assert_eq!(
            named_paths("use super::{a, b::{c, d as e}};\nlet x = crate::f::g();"),
            ["super::a", "super::b::c", "super::b::d", "crate::f::g"]
        );
        assert_eq!(
            named_paths(&code_of(
                "// crate::x\nlet s = \"crate::y\"; let q = '\"'; let r = r#\"a\"crate::z\"#;"
            )),
            Vec::<String>::new()
        );
        assert_eq!(named_paths("my_crate::x"), Vec::<String>::new());
    }

    #[test]
    fn paths_resolve_to_the_longest_module() {
        let modules = set(&["", "daemon", "daemon::dispatch", "daemon::dispatch::ready"]);
        let from = vec![
            "daemon".to_string(),
            "dispatch".to_string(),
            "ready".to_string(),
        ];
        let r = |p: &str| resolve(&from, p, &modules, &Reexports::new()).map(|m| name(&m));
        assert_eq!(r("super::waits").as_deref(), Some("daemon::dispatch"));
        assert_eq!(
            r("crate::daemon::dispatch::ready::Ready").as_deref(),
            Some("daemon::dispatch::ready")
        );
        assert_eq!(r("crate::Config").as_deref(), Some("crate"));
        assert_eq!(r("super::super::x").as_deref(), Some("daemon"));
    }

    #[test]
    fn circles_are_found() {
        let m = |s: &str| vec![s.to_string()];
        let mut graph = BTreeMap::new();
        graph.insert(m("a"), BTreeSet::from([m("b")]));
        graph.insert(m("b"), BTreeSet::from([m("c")]));
        assert_eq!(find_circle(&graph), None);
        graph.insert(m("c"), BTreeSet::from([m("a")]));
        assert_eq!(find_circle(&graph).unwrap(), ["a", "b", "c", "a"]);
    }
}
