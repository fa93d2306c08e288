//! The module graph of `operator/src`: the crate's top-level modules and
//! which use which (`crate::x` paths, grouped imports included). It must have
//! no cycles, and the pure core must not reach the I/O shell or the CLI.
//! Test code (`#[cfg(test)]` modules, `tests.rs` files) is left out: tests
//! may build their fixtures with any module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Test support, not part of the graph: every module's tests use it.
const TEST_SUPPORT: &str = "testing";
/// The I/O shells (the operator's, the agent's) and the commands; everything
/// else is the core.
const SHELL: [&str; 4] = ["controller", "agent", "cli", "fuzzing"];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("operator/src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`lib.rs`/`main.rs`: none).
fn module_of(root: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(root).ok()?;
    let first = relative.components().next()?.as_os_str().to_string_lossy().into_owned();
    let name = first.trim_end_matches(".rs").to_owned();
    (name != "lib" && name != "main").then_some(name)
}

/// Text without comments and without `#[cfg(test)]` modules, so prose and
/// test fixtures name no edges.
fn code(text: &str) -> String {
    let text = text
        .lines()
        .map(|line| match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        // Up to the end of the item: a `;` (`mod tests;`) or its braces.
        let mut depth = 0usize;
        let mut end = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                ';' if depth == 0 => {
                    end = i + 1;
                    break;
                }
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Files that are test modules of their own.
fn is_test_file(file: &Path) -> bool {
    file.file_name().is_some_and(|n| n == "tests.rs") || file.components().any(|c| c.as_os_str() == "tests")
}

/// Top-level modules named after `crate::` in `text`, in `crate::x` and in
/// `crate::{x::y, z}` alike.
fn used_modules(text: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The group's top-level items, up to its closing brace.
            let (mut depth, mut item, mut end) = (0usize, String::new(), group.len());
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        end = i;
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        used.extend(first_segment(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    item.push(c);
                }
            }
            used.extend(first_segment(&item));
            rest = &group[end..];
        } else {
            used.extend(first_segment(rest));
        }
    }
    used
}

fn first_segment(path: &str) -> Option<String> {
    let name: String = path
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty() && name != "self").then_some(name)
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let Some(module) = module_of(&root, &file) else {
            continue;
        };
        if module == TEST_SUPPORT || is_test_file(file.strip_prefix(&root).unwrap_or(&file)) {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("source");
        let uses = graph.entry(module.clone()).or_default();
        for used in used_modules(&code(&text)) {
            if used != module && used != TEST_SUPPORT {
                uses.insert(used);
            }
        }
    }
    graph
}

/// A cycle through `start`, if there is one (depth-first).
fn cycle_from(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        node: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in graph.get(node).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if visit(graph, start, next, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_owned()];
    visit(graph, start, start, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn the_module_graph_has_no_cycles() {
    let graph = graph();
    assert!(graph.len() > 10, "the graph was read: {graph:?}");
    assert!(graph["declaration"].contains("planner"), "edges were read: {graph:?}");
    let cycles: Vec<String> = graph
        .keys()
        .filter_map(|module| cycle_from(&graph, module))
        .map(|cycle| cycle.join(" -> "))
        .collect();
    assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_core_uses_neither_the_shell_nor_a_client() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = graph();
    for (module, uses) in &graph {
        if SHELL.contains(&module.as_str()) {
            continue;
        }
        let shell: Vec<&String> = uses.iter().filter(|u| SHELL.contains(&u.as_str())).collect();
        assert!(shell.is_empty(), "the core module {module} uses {shell:?}");
    }
    let mut files = Vec::new();
    sources(&root, &mut files);
    // The verifier crate is core through and through.
    let verifier = root.join("../../verifier/src");
    let mut verifier_files = Vec::new();
    sources(&verifier, &mut verifier_files);
    assert!(verifier_files.len() > 5, "the verifier crate's sources were read");
    for file in files.into_iter().chain(verifier_files) {
        let module = module_of(&root, &file).unwrap_or_else(|| "verifier".to_owned());
        if SHELL.contains(&module.as_str()) || file.ends_with("lib.rs") || file.ends_with("main.rs") {
            continue;
        }
        let text = code(&std::fs::read_to_string(&file).expect("source"));
        for io in [
            "kube::runtime",
            "kube::Api",
            "kube::Client",
            "tokio::",
            "Timestamp::now()",
        ] {
            assert!(!text.contains(io), "{} (core) uses {io}", file.display());
        }
    }
}

#[test]
fn grouped_imports_name_their_modules() {
    let text = "use crate::{facts::{self, Defect}, rules, thumbprint::Thumbprint};\nlet x = crate::names::names_match(a, b);\n#[cfg(test)]\nmod tests {\n    use crate::planner::Plan;\n}\n";
    assert_eq!(
        used_modules(&code(text)),
        ["facts", "names", "rules", "thumbprint"].map(String::from).into()
    );
    let mut cyclic = BTreeMap::new();
    cyclic.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    cyclic.insert("b".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert_eq!(cycle_from(&cyclic, "a"), Some(vec!["a".into(), "b".into(), "a".into()]));
}

/// The verifier crate is what Rust applications depend on: it must not pull
/// in a Kubernetes client, an async runtime, the CLI's parser, templates or
/// Linux-only file watching.
#[test]
fn the_verifier_crate_pulls_in_no_client_runtime_or_cli() {
    let output = std::process::Command::new(env!("CARGO"))
        .args(["tree", "-p", "certshift-verifier", "-e", "normal", "--prefix", "none"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree");
    let tree = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let crates: BTreeSet<&str> = tree.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(
        crates.contains("rustls") && crates.contains("x509-parser"),
        "the tree was read: {crates:?}"
    );
    for forbidden in ["kube", "tokio", "clap", "minijinja", "inotify", "k8s-openapi"] {
        let found: Vec<&&str> = crates
            .iter()
            .filter(|c| **c == forbidden || c.starts_with(&format!("{forbidden}-")))
            .collect();
        assert!(found.is_empty(), "certshift-verifier depends on {found:?}");
    }
}

/// `certshift plan` must run exactly what the operator runs: the CLI builds
/// the store's inputs and calls `declaration::store`'s assembly; it never
/// assembles a store (a trust pool, CRLs in force) of its own.
#[test]
fn the_cli_assembles_stores_only_through_the_operator_s_assemble() {
    let cli = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/cli");
    let mut files = Vec::new();
    sources(&cli, &mut files);
    let mut calls = 0;
    for file in files {
        let text = code(&std::fs::read_to_string(&file).expect("source"));
        for copy in [
            "TrustPool",
            "add_anchor",
            "add_authority",
            "put_crls_in_force",
            "parse_crls",
            "parse_bundle",
        ] {
            assert!(
                !text.contains(copy),
                "{} assembles a store itself ({copy})",
                file.display()
            );
        }
        // `assemble`, or its two halves as the operator's shell calls them
        // (collect, then finish with the distribution points' CRLs).
        calls += text.matches("store::assemble(").count() + text.matches("store::collect(").count();
    }
    assert!(calls >= 1, "the CLI calls declaration::store's assembly");
}

/// The controllers' decisions read as a few named steps: no function of the
/// decide modules (the declaration's, the ObservedCertificate's, the
/// CertificatePolicy's) is longer than 80 lines. Test code is left out.
#[test]
fn no_decide_function_is_longer_than_80_lines() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root.join("declaration"), &mut files);
    files.extend([root.join("observed.rs"), root.join("policy/mod.rs")]);
    let mut measured = 0;
    let mut long = Vec::new();
    for file in files
        .iter()
        .filter(|f| !is_test_file(f.strip_prefix(&root).unwrap_or(f)))
    {
        let text = code(&std::fs::read_to_string(file).expect("source"));
        let lines: Vec<&str> = text.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let line = lines[i];
            let trimmed = line.trim_start();
            let is_fn = ["fn ", "pub fn ", "pub(super) fn ", "pub(crate) fn "]
                .iter()
                .any(|p| trimmed.starts_with(p));
            if is_fn && line.trim_end().ends_with('{') {
                let indent = &line[..line.len() - trimmed.len()];
                let close = format!("{indent}}}");
                let end = (i + 1..lines.len()).find(|&j| lines[j] == close).unwrap_or(i);
                measured += 1;
                if end - i + 1 > 80 {
                    let name: String = trimmed
                        .split("fn ")
                        .nth(1)
                        .unwrap_or("")
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    long.push(format!("{}: {name} ({} lines)", file.display(), end - i + 1));
                }
                i = end;
            }
            i += 1;
        }
    }
    assert!(measured > 30, "functions were measured: {measured}");
    assert!(long.is_empty(), "decide functions over 80 lines:\n{}", long.join("\n"));
}
