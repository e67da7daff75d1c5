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
        for (at, _) in code.match_indices("crate::") {
            let path: String = code[at + 7..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
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
