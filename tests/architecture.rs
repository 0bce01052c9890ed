//! Issue 18: modules are stacked in layers without cycles. The layers are written once, in
//! the crate doc of src/lib.rs; this test reads them there and fails on any `crate::<module>`
//! reference (code or doc) from a module to one of the same or a higher layer, and on a
//! top-level module the list does not place.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers of src/lib.rs's crate doc (`N. `module` (what it is), `module` (…)`, an item
/// may continue on indented lines): module → layer number.
fn layers(lib: &str) -> BTreeMap<String, usize> {
    let mut items: Vec<(usize, String)> = Vec::new();
    for line in lib.lines().take_while(|l| l.starts_with("//!")) {
        let text = line.trim_start_matches("//!");
        let trimmed = text.trim_start();
        let numbered = trimmed
            .split_once(". ")
            .and_then(|(n, rest)| Some((n.parse::<usize>().ok()?, rest)));
        match (numbered, items.last_mut()) {
            (Some((n, rest)), _) => items.push((n, rest.to_string())),
            (None, Some((_, item))) if text.starts_with("   ") => {
                item.push(' ');
                item.push_str(trimmed);
            }
            _ => {}
        }
    }
    let mut layers = BTreeMap::new();
    for (n, item) in items {
        // Each module is a backticked name followed by its description in parentheses.
        for (i, _) in item.match_indices('`') {
            let name: String = item[i + 1..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && item[i + 1 + name.len()..].starts_with("` (") {
                layers.insert(name, n);
            }
        }
    }
    layers
}

/// Every `crate::<module>` reference of each top-level module: module → (used module →
/// files where).
fn uses(src: &Path) -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let mut uses: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path
                .strip_prefix(src)
                .unwrap()
                .to_string_lossy()
                .to_string();
            let top = rel
                .split('/')
                .next()
                .unwrap()
                .trim_end_matches(".rs")
                .to_string();
            if top == "lib" || top == "main" || !rel.ends_with(".rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read");
            let entry = uses.entry(top.clone()).or_default();
            for (i, _) in text.match_indices("crate::") {
                let used: String = text[i + 7..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if used != top && !used.is_empty() {
                    entry.entry(used).or_default().insert(rel.clone());
                }
            }
        }
    }
    uses
}

/// What breaks the layering: uses of a module not lower than the user, and unplaced
/// modules.
fn violations(
    layers: &BTreeMap<String, usize>,
    uses: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
) -> Vec<String> {
    let mut found = Vec::new();
    for (module, used) in uses {
        let Some(&at) = layers.get(module) else {
            found.push(format!("module `{module}` is in no layer of src/lib.rs"));
            continue;
        };
        for (target, files) in used {
            let Some(&target_at) = layers.get(target) else {
                found.push(format!("`{module}` uses `{target}`, which is in no layer"));
                continue;
            };
            if target_at >= at {
                found.push(format!(
                    "`{module}` (layer {at}) uses `{target}` (layer {target_at}) in {files:?}"
                ));
            }
        }
    }
    found
}

#[test]
fn modules_use_only_lower_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).expect("src/lib.rs");
    let layers = layers(&lib);
    assert!(
        layers.len() >= 10,
        "layers not found in src/lib.rs: {layers:?}"
    );
    let uses = uses(&root.join("src"));
    let found = violations(&layers, &uses);
    assert!(found.is_empty(), "layering broken:\n{}", found.join("\n"));
}

/// The checker itself finds a cycle (two modules using each other: one of the two uses is
/// upward) and an unplaced module.
#[test]
fn the_checker_finds_a_cycle_and_an_unplaced_module() {
    let layers = layers(
        "//! Layers:\n//! 1. `wire` (framing), `auth` (proofs)\n//! 2. `net` (sockets)\n\
         //! 3. `config` (files)\n",
    );
    assert_eq!(
        layers.keys().collect::<Vec<_>>(),
        ["auth", "config", "net", "wire"]
    );
    let file = |f: &str| BTreeSet::from([f.to_string()]);
    let mut uses = BTreeMap::new();
    uses.insert(
        "net".to_string(),
        BTreeMap::from([("config".to_string(), file("net/tls.rs"))]),
    );
    uses.insert(
        "config".to_string(),
        BTreeMap::from([("net".to_string(), file("config/build.rs"))]),
    );
    uses.insert(
        "extra".to_string(),
        BTreeMap::from([("wire".to_string(), file("extra.rs"))]),
    );
    let found = violations(&layers, &uses);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].contains("`extra` is in no layer"), "{found:?}");
    assert!(
        found[1].contains("`net` (layer 2) uses `config` (layer 3)"),
        "{found:?}"
    );
}
