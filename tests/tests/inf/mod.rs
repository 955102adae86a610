//! The INF reader both INF test files use: a small INI reader that
//! tolerates comments, quoting, line continuation and case the way the
//! setup API does, and substitutes `%strings%`.
//!
//! Shared by two test binaries (`inf_consistency`, `inf_rules`), each of
//! which uses a part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One line of a section: `key = v1, v2, ...` or just `v1, v2, ...`.
#[derive(Debug, Clone)]
pub struct Line {
    /// The key, trimmed, as written.
    pub key: Option<String>,
    /// The comma-separated values, trimmed and unquoted.
    pub values: Vec<String>,
}

/// An INF (or any INI-ish file), sections in file order.
#[derive(Debug, Default)]
pub struct Ini {
    /// `(name, lines)` per section header, repeated headers kept apart.
    pub sections: Vec<(String, Vec<Line>)>,
}

/// Splits `text` at `separator` outside double quotes.
pub fn split_unquoted(text: &str, separator: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in text.chars() {
        if c == '"' {
            quoted = !quoted;
            current.push(c);
        } else if c == separator && !quoted {
            parts.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    parts.push(current);
    parts
}

/// Removes a `;` comment (outside quotes).
pub fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ';' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

/// Trims and removes one pair of surrounding double quotes.
pub fn unquote(field: &str) -> String {
    let field = field.trim();
    field.strip_prefix('"').and_then(|f| f.strip_suffix('"')).unwrap_or(field).to_owned()
}

impl Ini {
    /// Reads `text`: sections, `key = values` lines and bare value lines;
    /// `;` comments and a `\` that continues a line on the next.
    pub fn parse(text: &str) -> Self {
        let mut ini = Self::default();
        let mut pending = String::new();
        for raw in text.lines() {
            let code = strip_comment(raw).trim_end();
            if let Some(continued) = code.strip_suffix('\\') {
                pending.push_str(continued);
                continue;
            }
            pending.push_str(code);
            let joined = std::mem::take(&mut pending);
            let line = joined.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                ini.sections.push((name.trim().to_owned(), Vec::new()));
                continue;
            }
            let Some((_, lines)) = ini.sections.last_mut() else {
                continue;
            };
            let parts = split_unquoted(line, '=');
            let (key, rest) = if parts.len() > 1 {
                (Some(parts[0].trim().to_owned()), parts[1..].join("="))
            } else {
                (None, line.to_owned())
            };
            let values = split_unquoted(&rest, ',').iter().map(|v| unquote(v)).collect();
            lines.push(Line { key, values });
        }
        ini
    }

    /// Reads the file at `path`.
    pub fn read(path: &Path) -> Self {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        Self::parse(&text)
    }

    /// The lines of section `name` (case-insensitive), merged if repeated.
    pub fn section(&self, name: &str) -> Vec<Line> {
        self.sections.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).flat_map(|(_, l)| l.clone()).collect()
    }

    /// Is there a section `name` (case-insensitive)?
    pub fn has_section(&self, name: &str) -> bool {
        self.sections.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// The values of `key` (case-insensitive) in section `name`.
    pub fn values(&self, section: &str, key: &str) -> Vec<Vec<String>> {
        self.section(section)
            .into_iter()
            .filter(|l| l.key.as_deref().is_some_and(|k| k.eq_ignore_ascii_case(key)))
            .map(|l| l.values)
            .collect()
    }

    /// The single value of `key` in section `name`.
    pub fn value(&self, section: &str, key: &str) -> String {
        let all = self.values(section, key);
        assert_eq!(all.len(), 1, "[{section}] {key}: expected one entry, found {all:?}");
        all[0].join(",")
    }
}

/// An INF with its `[Strings]` substituted.
pub struct Inf {
    /// The sections.
    pub ini: Ini,
    /// `[Strings]`, keys lower-cased.
    pub strings: HashMap<String, String>,
    /// The text it was read from.
    pub text: String,
}

impl Inf {
    /// `inf/<name>` of the repository.
    pub fn load(name: &str) -> Self {
        let path = workspace().join("inf").join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        Self::from_text(&text)
    }

    /// An INF read from `text`.
    pub fn from_text(text: &str) -> Self {
        let ini = Ini::parse(text);
        let strings = ini
            .section("Strings")
            .into_iter()
            .filter_map(|l| Some((l.key?.to_ascii_lowercase(), l.values.join(","))))
            .collect();
        Self { ini, strings, text: text.to_owned() }
    }

    /// `text` with every `%token%` that names a string replaced (DIRIDs
    /// such as `%13%` stay, `%%` is a `%`).
    ///
    /// # Errors
    /// The token that is not in `[Strings]`, or a lone `%`.
    pub fn try_expand(&self, text: &str) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find('%') {
            out.push_str(&rest[..start]);
            let after = &rest[start + 1..];
            let Some(end) = after.find('%') else {
                return Err(format!("unbalanced % in `{text}`"));
            };
            let token = &after[..end];
            if token.is_empty() {
                out.push('%');
            } else if token.chars().all(|c| c.is_ascii_digit()) {
                out.push('%');
                out.push_str(token);
                out.push('%');
            } else {
                match self.strings.get(&token.to_ascii_lowercase()) {
                    Some(value) => out.push_str(value),
                    None => return Err(format!("%{token}% is not in [Strings]")),
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// [`Inf::try_expand`]; an unknown token fails the test.
    pub fn expand(&self, text: &str) -> String {
        self.try_expand(text).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The single value of `key` in `section`, expanded.
    pub fn value(&self, section: &str, key: &str) -> String {
        self.expand(&self.ini.value(section, key))
    }

    /// Comma-separated list value, expanded and trimmed.
    pub fn list(&self, section: &str, key: &str) -> Vec<String> {
        self.ini.values(section, key).into_iter().flatten().map(|v| self.expand(&v).trim().to_owned()).collect()
    }

    /// Every `(install section, hardware IDs)` of the models sections the
    /// `[Manufacturer]` section names (each decoration), with its `$ARCH$`.
    pub fn models(&self) -> Vec<(String, Vec<String>)> {
        let mut found = Vec::new();
        for line in self.ini.section("Manufacturer") {
            let mut values = line.values.iter();
            let base = values.next().expect("a models section name").trim().to_owned();
            let decorations: Vec<&String> = values.collect();
            assert!(!decorations.is_empty(), "[Manufacturer] {base}: no target decoration");
            for decoration in decorations {
                assert!(decoration.contains("$ARCH$"), "decoration `{decoration}` has no $ARCH$ for stampinf");
                let section = format!("{base}.{}", decoration.trim());
                assert!(self.ini.has_section(&section), "models section [{section}] missing");
                for model in self.ini.section(&section) {
                    let mut fields = model.values.iter().map(|v| self.expand(v).trim().to_owned());
                    let install = fields.next().expect("an install section");
                    found.push((install, fields.collect()));
                }
            }
        }
        assert!(!found.is_empty(), "no models");
        found
    }

    /// The `(service name, install section)` pairs of `[<install>.NT.Services]`.
    pub fn services(&self, install: &str) -> Vec<(String, String)> {
        self.ini
            .values(&format!("{install}.NT.Services"), "AddService")
            .into_iter()
            .map(|v| (self.expand(&v[0]), self.expand(v.get(2).map_or("", String::as_str))))
            .collect()
    }

    /// Every `AddReg` line of the `AddReg` sections `section` lists, as
    /// `[root, subkey, value name, flags, value]`, expanded.
    pub fn add_reg(&self, section: &str) -> Vec<Vec<String>> {
        self.list(section, "AddReg")
            .iter()
            .flat_map(|name| {
                assert!(self.ini.has_section(name), "AddReg section [{name}] missing");
                self.ini.section(name)
            })
            .map(|line| line.values.iter().map(|v| self.expand(v).trim().to_owned()).collect())
            .collect()
    }
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the workspace").to_path_buf()
}

/// Parses an INF number (`0x…` or decimal).
pub fn parse_number(text: &str) -> Option<u32> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// [`parse_number`]; anything else fails the test.
pub fn number(text: &str) -> u32 {
    parse_number(text).unwrap_or_else(|| panic!("`{}` is not a number", text.trim()))
}
