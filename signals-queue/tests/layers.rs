//! The crate's shape, kept by the build: the crate docs (`src/lib.rs`, "Layers") list the
//! modules bottom to top, and every module may name (by a `crate::…` or `super::…` path, in a
//! `use` line or inline) only modules of the layers below its own. A module missing from the
//! list fails too, so a new one is placed on purpose.
//!
//! Read as text: comments, string literals, `#[cfg(test)] mod tests` blocks and `$crate::`
//! paths of exported macros (which name the crate at the user's expansion site) are left out.

use std::collections::BTreeMap;
use std::path::Path;

/// Module path (`async_worker::producer`) → layer (1 = bottom), from the crate docs.
fn layers(lib: &str) -> BTreeMap<String, usize> {
    let mut layers = BTreeMap::new();
    let mut in_list = false;
    let mut layer = 0;
    for line in lib.lines() {
        let Some(doc) = line.strip_prefix("//!") else {
            continue;
        };
        let doc = doc.trim();
        if doc == "# Layers" {
            in_list = true;
            continue;
        }
        if !in_list {
            continue;
        }
        if doc.starts_with('#') {
            break;
        }
        // "3. `db`: ..." opens a layer; its modules are the code spans before the first ": ".
        let Some((number, rest)) = doc.split_once(". ") else {
            continue;
        };
        let Ok(number) = number.parse::<usize>() else {
            continue;
        };
        layer = number;
        let names = rest.split(": ").next().unwrap_or("");
        for name in names.split('`').skip(1).step_by(2) {
            layers.insert(name.to_owned(), layer);
        }
    }
    assert!(layer > 0, "no `# Layers` list in the crate docs");
    layers
}

/// The source without comments, string and char literals, and its `#[cfg(test)] mod tests`.
fn code(source: &str) -> String {
    let source = match source.find("#[cfg(test)]\nmod tests") {
        Some(tests) => &source[..tests],
        None => source,
    };
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < chars.len() {
        let rest = &chars[i..];
        if rest.starts_with(&['/', '/']) {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if rest.starts_with(&['/', '*']) {
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if rest.starts_with(&['r', '#']) || rest.starts_with(&['r', '"']) {
            // A raw string: r"…", r#"…"#, …
            let hashes = rest[1..].iter().take_while(|c| **c == '#').count();
            if rest.get(1 + hashes) != Some(&'"') {
                out.push(chars[i]);
                i += 1;
                continue;
            }
            i += 2 + hashes;
            while i < chars.len() {
                if chars[i] == '"' && chars[i + 1..].iter().take(hashes).all(|c| *c == '#') {
                    i += 1 + hashes;
                    break;
                }
                i += 1;
            }
            out.push_str("\"\"");
        } else if chars[i] == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if chars[i] == '\'' && rest.get(2) == Some(&'\'') {
            i += 3; // 'x'
        } else if chars[i] == '\'' && rest.get(1) == Some(&'\\') {
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1; // '\n', '\u{..}'
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// The identifiers of a path that starts at `at` (`a::b::c`), and whether `$` precedes it.
fn path_at(code: &str, at: usize) -> Vec<&str> {
    code[at..]
        .split("::")
        .map(|segment| {
            let end = segment
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(segment.len());
            &segment[..end]
        })
        .take_while(|segment| !segment.is_empty())
        .collect()
}

/// The paths that start at `at`: one, or each of a `{a::b, c}` group's.
fn paths_at(code: &str, at: usize) -> Vec<Vec<&str>> {
    if !code[at..].starts_with('{') {
        return vec![path_at(code, at)];
    }
    let mut depth = 0;
    let mut start = at + 1;
    let mut paths = Vec::new();
    for (i, c) in code[at..].char_indices() {
        let i = at + i;
        match c {
            '{' => depth += 1,
            '}' if depth == 1 => {
                paths.push(path_at(code, skip_space(code, start)));
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 1 => {
                paths.push(path_at(code, skip_space(code, start)));
                start = i + 1;
            }
            _ => {}
        }
    }
    paths.retain(|path| !path.is_empty()); // a trailing comma
    paths
}

fn skip_space(code: &str, at: usize) -> usize {
    at + code[at..].len() - code[at..].trim_start().len()
}

/// The byte ranges of the inline modules (`mod name { ... }`) of a file.
fn inline_modules(code: &str) -> Vec<std::ops::Range<usize>> {
    let mut spans = Vec::new();
    for (at, _) in code.match_indices("mod ") {
        let rest = &code[at + 4..];
        let name_end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if !rest[name_end..].trim_start().starts_with('{') {
            continue; // `mod name;`
        }
        let open = at + 4 + name_end + rest[name_end..].find('{').unwrap();
        let mut depth = 0;
        for (i, c) in code[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        spans.push(open..open + i);
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    spans
}

/// The module a path names, from where it is written: the longest list of segments that is a
/// module; a root item (`crate::Error`) is the crate root, `lib`, unless it is an exported
/// macro, which belongs to the module that defines it.
fn resolve(
    segments: &[&str],
    base: &[String],
    modules: &BTreeMap<String, usize>,
    macros: &BTreeMap<String, String>,
) -> String {
    let mut path: Vec<String> = base.to_vec();
    let mut found = if base.is_empty() {
        "lib".to_owned()
    } else {
        base.join("::")
    };
    for segment in segments {
        path.push((*segment).to_owned());
        let candidate = path.join("::");
        if modules.contains_key(&candidate) {
            found = candidate;
        } else {
            if path.len() == 1 {
                if let Some(module) = macros.get(*segment) {
                    return module.clone();
                }
            }
            break;
        }
    }
    found
}

/// Every path a module names that breaks the layering: `(module, named, why)`.
fn violations(sources: &BTreeMap<String, String>, lib: &str) -> Vec<String> {
    let layers = layers(lib);
    let mut macros = BTreeMap::new();
    for (module, source) in sources {
        let mut rest = source.as_str();
        while let Some(at) = rest.find("#[macro_export]") {
            rest = &rest[at..];
            if let Some(name) = rest.split("macro_rules!").nth(1) {
                let name = name.trim_start();
                let end = name.find(|c: char| !(c.is_alphanumeric() || c == '_'));
                macros.insert(name[..end.unwrap_or(0)].to_owned(), module.clone());
            }
            rest = &rest[1..];
        }
    }
    let mut problems = Vec::new();
    for (module, source) in sources {
        if module == "lib" {
            continue;
        }
        let Some(&own) = layers.get(module) else {
            problems.push(format!(
                "`{module}` is not in the crate docs' list of layers"
            ));
            continue;
        };
        let code = code(source);
        let segments: Vec<String> = module.split("::").map(str::to_owned).collect();
        // A `mod.rs` is its module; `super` of a file module is its parent.
        let parent = &segments[..segments.len() - 1];
        for (at, _) in code.match_indices("crate::") {
            if code[..at].ends_with('$') {
                continue;
            }
            for path in paths_at(&code, at + "crate::".len()) {
                let named = resolve(&path, &[], &layers, &macros);
                check(module, own, &named, &layers, &mut problems);
            }
        }
        let inline = inline_modules(&code);
        for (at, _) in code.match_indices("super::") {
            // Inside an inline `mod x { ... }`, `super` is this file's module.
            let base = match inline.iter().any(|span| span.contains(&at)) {
                true => &segments[..],
                false => parent,
            };
            for path in paths_at(&code, at + "super::".len()) {
                let named = resolve(&path, base, &layers, &macros);
                check(module, own, &named, &layers, &mut problems);
            }
        }
    }
    problems.sort();
    problems.dedup();
    problems
}

fn check(
    module: &str,
    own: usize,
    named: &str,
    layers: &BTreeMap<String, usize>,
    problems: &mut Vec<String>,
) {
    if named == module {
        return;
    }
    let layer = layers.get(named).copied().unwrap_or(usize::MAX);
    if layer >= own {
        problems.push(format!(
            "`{module}` (layer {own}) names `{named}` ({}): a module names only the layers \
             below its own",
            if layer == usize::MAX {
                "the crate root".to_owned()
            } else {
                format!("layer {layer}")
            }
        ));
    }
}

/// Every `.rs` file under `dir`, by module path.
fn read_modules(dir: &Path, prefix: &str, into: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        if path.is_dir() {
            read_modules(&path, &format!("{prefix}{name}::"), into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let module = match name.as_str() {
                "mod" => prefix.trim_end_matches("::").to_owned(),
                _ => format!("{prefix}{name}"),
            };
            into.insert(module, std::fs::read_to_string(&path).unwrap());
        }
    }
}

#[test]
fn every_module_names_only_the_layers_below_its_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut sources = BTreeMap::new();
    read_modules(&src, "", &mut sources);
    let lib = sources["lib"].clone();
    let problems = violations(&sources, &lib);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The checker itself finds what it is for: a circle, a child naming its parent, an upward
/// inline path, a module missing from the list; and it passes over comments and strings.
#[test]
fn the_checker_finds_upward_paths_circles_and_unlisted_modules() {
    let lib = "//! # Layers\n//!\n//! 1. `low`: data.\n//! 2. `mid`, `parent::child`: middle.\n\
               //! 3. `parent`: top.\n";
    let sources: BTreeMap<String, String> = [
        ("lib", lib),
        ("low", "// crate::parent in a comment\nconst X: &str = \"crate::mid\";\nfn f() { crate::mid::g() }"),
        ("mid", "use crate::{low::X, mid::Y};\nmod inner { use super::Y; }"),
        ("parent::child", "use super::Shared;"),
        ("parent", "pub struct Shared;\nuse crate::parent::child;"),
        ("stray", "use crate::low;"),
    ]
    .into_iter()
    .map(|(module, source)| (module.to_owned(), source.to_owned()))
    .collect();
    let problems = violations(&sources, lib);
    assert_eq!(
        problems,
        [
            "`low` (layer 1) names `mid` (layer 2): a module names only the layers below its own",
            "`parent::child` (layer 2) names `parent` (layer 3): a module names only the layers \
             below its own",
            "`stray` is not in the crate docs' list of layers",
        ],
    );
}
