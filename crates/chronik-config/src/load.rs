//! File + environment + defaults into a validated [`Config`].

use std::path::{Path, PathBuf};

use toml::{Table, Value};

use crate::Config;
use crate::error::{ConfigError, ConfigErrors, Origin};
use crate::keys::{KEYS, Kind, SECTIONS};

/// Which file to read: `-c FILE`, else `CHRONIK_CONFIG`, else `./chronik.toml` or
/// `/etc/chronik/chronik.toml` if present, else none (defaults and environment only).
pub fn resolve_config_path(cli: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(p) = cli {
        return Some(p.to_path_buf());
    }
    if let Some(p) = env("CHRONIK_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    ["chronik.toml", "/etc/chronik/chronik.toml"].iter().map(PathBuf::from).find(|p| p.is_file())
}

/// Loads from the process environment.
pub fn load_from_env(path: Option<&Path>) -> Result<Config, ConfigErrors> {
    load(path, &|k| std::env::var(k).ok())
}

/// Loads `path` (if any), applies environment overrides from `env`, fills defaults, validates.
/// Returns every problem found, not just the first.
pub fn load(path: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let (text, mut table) = match path {
        Some(path) => match read_file(path) {
            Ok(v) => v,
            Err(e) => return Err(ConfigErrors(vec![e])),
        },
        None => (String::new(), Table::new()),
    };
    let file_origin = |key: &str| match path {
        Some(p) => Origin::File { path: p.to_path_buf(), line: line_of(&text, key) },
        None => Origin::Default,
    };

    check_keys(&table, "", &mut |key, message| {
        errors.push(ConfigError { key: Some(key.into()), origin: file_origin(key), message })
    });
    let mut from_env = Vec::new();
    for key in KEYS {
        let var = key.env_var();
        if let Some(raw) = env(&var) {
            match parse_env(key.kind, &raw) {
                Ok(v) => {
                    set_path(&mut table, key.path, v);
                    from_env.push((key.path, var));
                }
                Err(message) => {
                    errors.push(ConfigError { key: Some(key.path.into()), origin: Origin::Env(var), message })
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let origin = |key: &str| match from_env.iter().find(|(k, _)| *k == key) {
        Some((_, var)) => Origin::Env(var.clone()),
        None if get_path(&table, key).is_some() => file_origin(key),
        None => Origin::Default,
    };
    let config: Config = match Config::deserialize_table(table.clone()) {
        Ok(c) => c,
        Err(e) => {
            // A value of the right kind out of its type's range (a negative count, say): find
            // every key that fails on its own, so each is named with its line or variable.
            let mut per_key = Vec::new();
            for key in KEYS {
                let Some(value) = get_path(&table, key.path) else { continue };
                let mut alone = Table::new();
                set_path(&mut alone, key.path, value.clone());
                if let Err(message) = Config::deserialize_table(alone) {
                    per_key.push(ConfigError { key: Some(key.path.into()), origin: origin(key.path), message });
                }
            }
            if per_key.is_empty() {
                per_key.push(ConfigError { key: None, origin: file_origin(""), message: e });
            }
            return Err(ConfigErrors(per_key));
        }
    };
    crate::validate::validate(&config, &mut |key, message| {
        errors.push(ConfigError { key: Some(key.into()), origin: origin(key), message })
    });
    if errors.is_empty() { Ok(config) } else { Err(ConfigErrors(errors)) }
}

impl Config {
    fn deserialize_table(table: Table) -> Result<Config, String> {
        Value::Table(table).try_into::<Config>().map_err(|e| e.message().to_string())
    }
}

fn read_file(path: &Path) -> Result<(String, Table), ConfigError> {
    let origin = Origin::File { path: path.to_path_buf(), line: None };
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        key: None,
        origin: origin.clone(),
        message: format!("cannot read config file: {e}"),
    })?;
    let table = text.parse::<Table>().map_err(|e| {
        let line = e.span().map(|s| text[..s.start].lines().count().max(1));
        ConfigError {
            key: None,
            origin: Origin::File { path: path.to_path_buf(), line },
            message: format!("not valid TOML: {}", e.message()),
        }
    })?;
    Ok((text, table))
}

/// Reports unknown keys and values of the wrong kind, recursively.
fn check_keys(table: &Table, prefix: &str, report: &mut dyn FnMut(&str, String)) {
    for (name, value) in table {
        let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
        if SECTIONS.contains(&path.as_str()) {
            match value {
                Value::Table(t) => check_keys(t, &path, report),
                _ => report(&path, format!("`{path}` is a section and must be a table")),
            }
            continue;
        }
        let Some(key) = crate::keys::find(&path) else {
            report(&path, "unknown key".into());
            continue;
        };
        if let Err(message) = check_kind(key.kind, value) {
            report(&path, message);
        }
    }
}

fn check_kind(kind: Kind, value: &Value) -> Result<(), String> {
    let ok = match (kind, value) {
        (Kind::Str, Value::String(_)) | (Kind::Int, Value::Integer(_)) | (Kind::Bool, Value::Boolean(_)) => true,
        (Kind::StrList, Value::Array(items)) => items.iter().all(|v| v.is_str()),
        (Kind::Enum(options), Value::String(s)) => {
            if options.contains(&s.as_str()) {
                true
            } else {
                return Err(format!("`{s}` is not one of {}", options.join(", ")));
            }
        }
        _ => false,
    };
    if ok { Ok(()) } else { Err(format!("expected {}, found {}", kind_name(kind), value.type_str())) }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Str | Kind::Enum(_) => "a string",
        Kind::Int => "an integer",
        Kind::Bool => "true or false",
        Kind::StrList => "a list of strings",
    }
}

fn parse_env(kind: Kind, raw: &str) -> Result<Value, String> {
    let raw = raw.trim();
    match kind {
        Kind::Str => Ok(Value::String(raw.into())),
        Kind::Int => raw.parse::<i64>().map(Value::Integer).map_err(|_| format!("`{raw}` is not an integer")),
        Kind::Bool => match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(Value::Boolean(true)),
            "false" | "0" | "no" => Ok(Value::Boolean(false)),
            _ => Err(format!("`{raw}` is not true or false")),
        },
        Kind::StrList => Ok(Value::Array(
            raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| Value::String(s.into())).collect(),
        )),
        Kind::Enum(options) => {
            if options.contains(&raw) {
                Ok(Value::String(raw.into()))
            } else {
                Err(format!("`{raw}` is not one of {}", options.join(", ")))
            }
        }
    }
}

fn set_path(table: &mut Table, path: &str, value: Value) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().expect("non-empty path");
    let mut t = table;
    for p in parts {
        // A section that is not a table has already been reported; the override has nowhere to go.
        t = match t.entry(p).or_insert_with(|| Value::Table(Table::new())).as_table_mut() {
            Some(section) => section,
            None => return,
        };
    }
    t.insert(last.into(), value);
}

fn get_path<'a>(table: &'a Table, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.').peekable();
    let mut t = table;
    while let Some(p) = parts.next() {
        let v = t.get(p)?;
        if parts.peek().is_none() {
            return Some(v);
        }
        t = v.as_table()?;
    }
    None
}

/// The 1-based line where `path` is set in `text` (section headers plus `name =` lines).
pub(crate) fn line_of(text: &str, path: &str) -> Option<usize> {
    let mut section = String::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = header.trim().to_string();
            if section == path {
                return Some(i + 1);
            }
            continue;
        }
        let Some((name, _)) = line.split_once('=') else { continue };
        let name = name.trim().trim_matches('"');
        let full = if section.is_empty() { name.to_string() } else { format!("{section}.{name}") };
        if full == path {
            return Some(i + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_of_finds_keys_in_sections() {
        let text = "data_dir = \"/x\"\n\n[cluster]\nnode_id = 0\n[cluster.raft]\n  election_timeout_ms = 5\n";
        assert_eq!(line_of(text, "data_dir"), Some(1));
        assert_eq!(line_of(text, "cluster.node_id"), Some(4));
        assert_eq!(line_of(text, "cluster.raft.election_timeout_ms"), Some(6));
        assert_eq!(line_of(text, "node_id"), None);
    }
}
