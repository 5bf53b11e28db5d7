//! The architecture, checked: the allowed dependencies between top-level
//! modules (written in docs/architecture.md, "Layers") and no cycle between
//! source files. Both read the source text, so a violation names the file
//! and line to fix.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Which top-level modules each top-level module may use. A module missing
/// here may use anything (the wiring: `app`, `commands`). Keep in step with
/// the table in docs/architecture.md.
const ALLOWED: &[(&str, &[&str])] = &[
    ("domain", &[]),
    ("clock", &[]),
    ("metrics", &[]),
    ("config", &["domain"]),
    ("crypto", &["domain", "config"]),
    ("store", &["domain", "metrics"]),
    ("audit", &["domain", "store", "metrics"]),
    ("mail", &["domain", "config"]),
    (
        "auth",
        &[
            "domain", "store", "audit", "mail", "clock", "crypto", "metrics", "config",
        ],
    ),
    (
        "http",
        &["auth", "domain", "audit", "config", "crypto", "metrics"],
    ),
    ("jobs", &["auth"]),
    ("telemetry", &["config"]),
    ("cli", &["config"]),
    (
        "cli_output",
        &["domain", "store", "audit", "auth", "doctor"],
    ),
    ("net", &["config"]),
    ("doctor", &["config"]),
    (
        "app",
        &[
            "auth", "clock", "config", "crypto", "domain", "http", "jobs", "mail", "metrics",
            "store", "audit", "net",
        ],
    ),
];

/// Every `.rs` file under `dir`, sorted.
pub fn source_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The module path of a source file: `src/store/sqlite/users.rs` is
/// `["store", "sqlite", "users"]`; `lib.rs` and `main.rs` are the root.
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix("src").unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts == ["lib"] || parts == ["main"] {
        parts.clear();
    }
    parts
}

/// The code before the unit tests, without comment lines (so a doc link
/// such as ``[`crate::store::Op`]`` is not a dependency).
fn code_lines(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .take_while(|(_, l)| l.trim() != "#[cfg(test)]")
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .map(|(i, l)| (i + 1, l.to_string()))
        .collect()
}

/// The `use` declarations of `lines` as (line of the `use`, full text),
/// joined across lines.
fn use_statements(lines: &[(usize, String)]) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, line) in lines {
        let t = line.trim();
        if current.is_none() {
            let rest = t
                .strip_prefix("pub ")
                .or_else(|| t.strip_prefix("pub(crate) "))
                .or_else(|| t.strip_prefix("pub(super) "))
                .unwrap_or(t);
            if let Some(body) = rest.strip_prefix("use ") {
                current = Some((*n, body.to_string()));
            }
        } else if let Some((_, text)) = current.as_mut() {
            text.push_str(t);
        }
        if current
            .as_ref()
            .is_some_and(|(_, text)| text.ends_with(';'))
        {
            out.extend(current.take());
        }
    }
    out
}

/// Expands a use tree (`a::b::{c, d::e}`) into its paths.
fn expand(tree: &str) -> Vec<Vec<String>> {
    // One space between words (so `a as b` stays readable), none elsewhere.
    let tree = tree.split_whitespace().collect::<Vec<_>>().join(" ");
    let tree = tree.replace(":: ", "::").replace(" ::", "::");
    let tree = tree.trim_end_matches(';');
    let Some(open) = tree.find('{') else {
        return vec![
            tree.split("::")
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        ];
    };
    let prefix: Vec<String> = tree[..open]
        .split("::")
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let inner = &tree[open + 1..tree.rfind('}').unwrap()];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .flat_map(expand)
        .map(|tail| prefix.iter().cloned().chain(tail).collect())
        .collect()
}

/// One `use` of another file.
struct Edge {
    from: PathBuf,
    line: usize,
    to: PathBuf,
    to_module: Vec<String>,
}

/// Resolves `use crate::`, `use super::` and `use self::` paths to the
/// files they name (the longest prefix that is a module file).
fn use_edges(files: &[PathBuf]) -> Vec<Edge> {
    let by_module: BTreeMap<Vec<String>, PathBuf> =
        files.iter().map(|f| (module_of(f), f.clone())).collect();
    let mut edges = Vec::new();
    for file in files {
        let me = module_of(file);
        let text = std::fs::read_to_string(file).unwrap();
        for (line, statement) in use_statements(&code_lines(&text)) {
            for path in expand(&statement) {
                let path: Vec<String> = path
                    .into_iter()
                    .map(|s| s.split(" as ").next().unwrap_or_default().to_string())
                    .filter(|s| s != "*" && s != "self")
                    .collect();
                let Some((root, rest)) = path.split_first() else {
                    continue;
                };
                let target: Vec<String> = match root.as_str() {
                    "crate" => rest.to_vec(),
                    "super" => {
                        let mut base = me.clone();
                        base.pop();
                        let mut rest = rest;
                        while rest.first().is_some_and(|s| s == "super") {
                            base.pop();
                            rest = &rest[1..];
                        }
                        base.extend(rest.iter().cloned());
                        base
                    }
                    _ => continue,
                };
                let resolved = (1..=target.len()).rev().find_map(|n| {
                    by_module
                        .get(&target[..n])
                        .map(|f| (f, target[..n].to_vec()))
                });
                if let Some((to, to_module)) = resolved
                    && to != file
                {
                    edges.push(Edge {
                        from: file.clone(),
                        line,
                        to: to.clone(),
                        to_module,
                    });
                }
            }
        }
    }
    edges
}

/// The paths `crate::<module>` named anywhere in the code of `text`, with
/// their lines (inline paths count as much as `use` lines).
fn crate_references(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in code_lines(text) {
        let mut rest = line.as_str();
        while let Some(at) = rest.find("crate::") {
            let before = rest[..at].chars().last();
            rest = &rest[at + "crate::".len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push((n, name));
            }
        }
    }
    out
}

#[test]
fn top_level_modules_use_only_what_the_layer_rules_allow() {
    let files = source_files(Path::new("src"));
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut problems = Vec::new();
    for file in &files {
        let me = module_of(file);
        let Some(top) = me.first() else { continue };
        let Some(may_use) = allowed.get(top.as_str()) else {
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        let mut seen = BTreeSet::new();
        for (line, used) in crate_references(&text) {
            if used != *top
                && !may_use.contains(&used.as_str())
                && seen.insert((line, used.clone()))
            {
                problems.push(format!(
                    "{}:{line}: `{top}` must not use `crate::{used}` (docs/architecture.md, Layers)",
                    file.display()
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "forbidden dependencies:\n{}",
        problems.join("\n")
    );
}

#[test]
fn no_cycle_between_source_files() {
    let files = source_files(Path::new("src"));
    // A parent module declares and re-exports its children: that edge is
    // structure, not a dependency, so only the other direction counts.
    let edges: Vec<Edge> = use_edges(&files)
        .into_iter()
        .filter(|e| {
            let from = module_of(&e.from);
            from.is_empty() || !e.to_module.starts_with(&from)
        })
        .collect();
    let mut graph: BTreeMap<&Path, Vec<&Edge>> = BTreeMap::new();
    for e in &edges {
        graph.entry(e.from.as_path()).or_default().push(e);
    }
    // Depth-first search; a back edge closes a cycle.
    fn visit<'a>(
        node: &'a Path,
        graph: &BTreeMap<&'a Path, Vec<&'a Edge>>,
        state: &mut BTreeMap<&'a Path, u8>,
        stack: &mut Vec<&'a Edge>,
        cycles: &mut Vec<String>,
    ) {
        state.insert(node, 1);
        for e in graph.get(node).into_iter().flatten() {
            match state.get(e.to.as_path()) {
                Some(1) => {
                    let start = stack
                        .iter()
                        .position(|s| s.from == e.to)
                        .unwrap_or(stack.len());
                    let steps: Vec<String> = stack[start..]
                        .iter()
                        .chain(std::iter::once(e))
                        .map(|s| format!("{}:{} uses {}", s.from.display(), s.line, s.to.display()))
                        .collect();
                    cycles.push(steps.join("\n  "));
                }
                Some(_) => {}
                None => {
                    stack.push(e);
                    visit(e.to.as_path(), graph, state, stack, cycles);
                    stack.pop();
                }
            }
        }
        state.insert(node, 2);
    }
    let mut state = BTreeMap::new();
    let mut cycles = Vec::new();
    for file in &files {
        if !state.contains_key(file.as_path()) {
            visit(file, &graph, &mut state, &mut Vec::new(), &mut cycles);
        }
    }
    assert!(
        cycles.is_empty(),
        "cycles between files:\n  {}",
        cycles.join("\n\n  ")
    );
}

#[test]
fn the_checker_sees_a_forbidden_edge_and_a_cycle() {
    // The rules above must be able to fail: a domain file naming the store,
    // and a use tree that resolves to another file.
    let refs = crate_references(
        "use crate::store::Op;\n// crate::http in a comment\nlet x = crate::metrics::X;",
    );
    assert_eq!(
        refs,
        vec![(1, "store".to_string()), (3, "metrics".to_string())]
    );
    assert_eq!(
        expand("crate::x::{self as y};"),
        vec![vec!["crate", "x", "self as y"]]
    );
    assert_eq!(
        expand("crate::a::{b, c::{d, e}};"),
        vec![
            vec!["crate", "a", "b"],
            vec!["crate", "a", "c", "d"],
            vec!["crate", "a", "c", "e"]
        ]
    );
}

#[test]
fn every_source_file_is_in_the_module_map() {
    let doc = std::fs::read_to_string("docs/architecture.md").unwrap();
    let lib = std::fs::read_to_string("src/lib.rs").unwrap();
    let mut missing = Vec::new();
    for file in source_files(Path::new("src")) {
        let rel = file.strip_prefix("src").unwrap().display().to_string();
        if !doc.contains(&format!("`{rel}`")) {
            missing.push(format!(
                "{rel} is not in the file map of docs/architecture.md"
            ));
        }
        let module = module_of(&file);
        if module.len() == 1 && !lib.contains(&format!("[`{}`]", module[0])) {
            missing.push(format!(
                "{} is not in the crate map of src/lib.rs",
                module[0]
            ));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}
