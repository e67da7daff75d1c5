//! The dependency rule stated in `src/lib.rs`: each folder of `src/` may
//! import only the folders below it in the list, plus the leaf
//! `pipeline::DropReason`. Test modules are exempt. A new
//! import that points up or sideways fails here, naming the file and path.

use std::path::Path;

const LAYERS: &[(&str, u32)] = &[
    ("app", 0),
    ("ingest", 1),
    ("pipeline", 2),
    ("config", 3),
    ("flows", 4),
    ("stream", 4),
    ("output", 5),
    ("filter", 6),
    ("capture", 7),
    ("wire", 7),
    ("telemetry", 8),
];

fn layer(name: &str) -> Option<u32> {
    LAYERS.iter().find(|(n, _)| *n == name).map(|(_, l)| *l)
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every path named after `prefix` in `code` (`crate::`, `super::`), with
/// brace groups expanded: `crate::{a::B, c}` gives `a::B` and `c`.
fn paths_after(code: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (at, _) in code.match_indices(prefix) {
        expand(&code[at + prefix.len()..], String::new(), &mut out);
    }
    out
}

/// Reads one path (or group) at the start of `rest`, after `base`.
fn expand(rest: &str, base: String, out: &mut Vec<String>) {
    let name: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
        .collect();
    let full = format!("{base}{name}");
    let after = &rest[name.len()..];
    if !(full.is_empty() || full.ends_with("::")) || !after.starts_with('{') {
        out.push(full.trim_end_matches("::").to_string());
        return;
    }
    // A group: its members, split at the commas of its own level.
    let mut depth = 0;
    let mut start = 1;
    for (i, c) in after.char_indices() {
        match c {
            '{' => depth += 1,
            '}' | ',' if depth == 1 => {
                let member = after[start..i].trim_start();
                if !member.is_empty() {
                    expand(member, full.clone(), out);
                }
                start = i + 1;
                if c == '}' {
                    return;
                }
            }
            '}' => depth -= 1,
            _ => {}
        }
    }
}

/// The scanner sees through brace groups (a cycle hid in one).
#[test]
fn grouped_imports_are_seen() {
    let code = "use super::{ConfigError, aws};\nuse crate::{output::{disk, part::PartFile}, wire};";
    assert_eq!(paths_after(code, "super::"), ["ConfigError", "aws"]);
    assert_eq!(
        paths_after(code, "crate::"),
        ["output::disk", "output::part::PartFile", "wire"]
    );
}

#[test]
fn imports_point_down_the_layers_of_lib_rs() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let mut wrong = Vec::new();
    let mut checked = 0;
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let top = rel.iter().next().unwrap().to_str().unwrap();
        let top = top.strip_suffix(".rs").unwrap_or(top);
        let Some(own) = layer(top) else { continue };
        checked += 1;
        let text = std::fs::read_to_string(f).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        for path in paths_after(code, "crate::") {
            let mut parts = path.split("::");
            let target = parts.next().unwrap_or("");
            let item = parts.next().unwrap_or("");
            if target == top || (target == "pipeline" && item == "DropReason") {
                continue;
            }
            if let Some(l) = layer(target)
                && l <= own
            {
                wrong.push(format!("{}: crate::{path}", rel.display()));
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} files checked under {}",
        src.display()
    );
    assert!(
        wrong.is_empty(),
        "imports against src/lib.rs's layers:\n{}",
        wrong.join("\n")
    );
}

/// The module (file) a path under `src/` is: `output/disk.rs` ->
/// `output::disk`, `flows/mod.rs` -> `flows`.
fn module_of(rel: &Path) -> String {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_str().unwrap().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// Which modules each module's code (not its tests, not its comments)
/// names through `crate::` or `super::`.
fn module_graph() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut code_of = std::collections::BTreeMap::new();
    for f in &files {
        let m = module_of(f.strip_prefix(&src).unwrap());
        if m == "lib" || m == "main" {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap()
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n")
            // The leaf type lives in its own file.
            .replace(
                "crate::pipeline::DropReason",
                "crate::pipeline::drop::DropReason",
            );
        code_of.insert(m, code);
    }
    let mut graph = std::collections::BTreeMap::new();
    for (m, code) in &code_of {
        let mut to = std::collections::BTreeSet::new();
        let parent: Vec<&str> = m.split("::").collect();
        let parent = parent[..parent.len() - 1].join("::");
        for (prefix, base) in [("crate::", String::new()), ("super::", parent)] {
            for path in paths_after(code, prefix) {
                let full = if base.is_empty() {
                    path
                } else {
                    format!("{base}::{path}")
                };
                // The longest module the path names.
                let parts: Vec<&str> = full.split("::").filter(|p| !p.is_empty()).collect();
                if let Some(t) = (1..=parts.len())
                    .rev()
                    .map(|k| parts[..k].join("::"))
                    .find(|t| code_of.contains_key(t))
                    && t != *m
                    && !m.starts_with(&format!("{t}::"))
                {
                    to.insert(t);
                }
            }
        }
        graph.insert(m.clone(), to);
    }
    graph
}

/// No two modules import each other, directly or through others: a
/// module's imports name only modules that do not lead back to it (a
/// folder's `mod.rs` naming its children is the one direction allowed).
#[test]
fn no_import_cycles_between_modules() {
    let graph = module_graph();
    assert!(graph.len() > 30, "only {} modules found", graph.len());
    let mut cycles = Vec::new();
    for start in graph.keys() {
        // Depth-first from each module's imports, looking for the way back.
        let mut stack: Vec<(String, Vec<String>)> = graph[start]
            .iter()
            .map(|n| (n.clone(), vec![start.clone(), n.clone()]))
            .collect();
        let mut seen = std::collections::BTreeSet::new();
        while let Some((at, path)) = stack.pop() {
            if at == *start {
                cycles.push(path.join(" -> "));
                break;
            }
            if !seen.insert(at.clone()) {
                continue;
            }
            for n in graph.get(&at).into_iter().flatten() {
                let mut p = path.clone();
                p.push(n.clone());
                stack.push((n.clone(), p));
            }
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}
