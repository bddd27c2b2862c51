//! File tools confined to a root directory: `file_read`, `file_write`, `list_dir`,
//! `file_search`.
//!
//! [`Sandbox`] is the one place that turns a user's path into a real one. It refuses `..`
//! that climbs out, absolute paths outside the root, and symbolic links that lead out
//! (checked on the real filesystem, for every existing part of the path). Nothing here ever
//! reads or writes outside the root.
//!
//! Resources, for the planner's hazard rules: a file's content is `file:<path>`, a
//! directory's listing is `dir:<path>` (paths relative to the root, `/`-separated, `.` for
//! the root). `file_read` reads `file:`; `file_write` writes `file:` and intent-writes the
//! `dir:` of every ancestor, so it is ordered against listings and searches above it but
//! not against writes of other files; `list_dir` and `file_search` read `dir:`.
//!
//! All four run on the blocking pool (`std::fs`), never on the scheduler's thread.

use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use toolgraph_core::{
    CallContext, ResourceAccess, Tool, ToolError, ToolFuture, ToolSet, ToolSetError, ToolSpec,
};

/// Settings of the file tools.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesConfig {
    /// The directory the tools are confined to (default: the current directory).
    pub root: PathBuf,
    /// Most bytes `file_read` returns (the rest is reported as truncated).
    pub max_read_bytes: usize,
    /// Most matches `file_search` returns.
    pub max_search_results: usize,
    /// Files larger than this are skipped by `file_search`.
    pub max_search_file_bytes: u64,
}

impl Default for FilesConfig {
    fn default() -> Self {
        FilesConfig {
            root: PathBuf::from("."),
            max_read_bytes: 1 << 20,
            max_search_results: 200,
            max_search_file_bytes: 4 << 20,
        }
    }
}

/// A root directory and the rules for staying inside it.
#[derive(Debug, Clone)]
pub struct Sandbox {
    root: PathBuf,
}

impl Sandbox {
    /// A sandbox rooted at `root`, which must be an existing directory.
    pub fn new(root: &Path) -> Result<Self, String> {
        let real = root
            .canonicalize()
            .map_err(|e| format!("file root {}: {e}", root.display()))?;
        if !real.is_dir() {
            return Err(format!("file root {} is not a directory", root.display()));
        }
        Ok(Sandbox { root: real })
    }

    /// The real root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path relative to the root, normalised (`a/b.txt`, `.` for the root), or why it
    /// leaves the root. Purely lexical: no filesystem access.
    pub fn relative(&self, path: &str) -> Result<String, String> {
        if path.contains('\0') {
            return Err("path contains a NUL byte".into());
        }
        let p = Path::new(path);
        let inside = if p.is_absolute() {
            p.strip_prefix(&self.root).map_err(|_| {
                format!(
                    "absolute path {path} is outside the root {}",
                    self.root.display()
                )
            })?
        } else {
            p
        };
        let mut parts: Vec<&str> = Vec::new();
        for component in inside.components() {
            match component {
                Component::Normal(c) => parts.push(c.to_str().ok_or("path is not valid UTF-8")?),
                Component::CurDir => {}
                Component::ParentDir => {
                    if parts.pop().is_none() {
                        return Err(format!("path {path} climbs out of the root with .."));
                    }
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(format!("path {path} is outside the root"));
                }
            }
        }
        Ok(if parts.is_empty() {
            ".".into()
        } else {
            parts.join("/")
        })
    }

    /// The real path for `path`, checked against the filesystem: every existing part,
    /// symbolic links followed, must stay inside the root. Returns it with the relative form.
    pub fn resolve(&self, path: &str) -> Result<(PathBuf, String), String> {
        let rel = self.relative(path)?;
        let full = if rel == "." {
            self.root.clone()
        } else {
            self.root.join(&rel)
        };
        // The deepest part of the path that exists decides where it really leads.
        let mut existing = full.clone();
        let mut missing: Vec<std::ffi::OsString> = Vec::new();
        loop {
            match std::fs::symlink_metadata(&existing) {
                Ok(meta) => {
                    let real = existing.canonicalize().map_err(|e| {
                        if meta.file_type().is_symlink() {
                            format!("{path}: symbolic link to a missing target")
                        } else {
                            format!("{path}: {e}")
                        }
                    })?;
                    if !real.starts_with(&self.root) {
                        return Err(format!(
                            "{path} leads outside the root through a symbolic link"
                        ));
                    }
                    let real = missing.iter().rev().fold(real, |p, part| p.join(part));
                    return Ok((real, rel));
                }
                Err(_) => {
                    let Some(name) = existing.file_name() else {
                        return Err(format!("{path}: no part of it exists"));
                    };
                    missing.push(name.to_owned());
                    if !existing.pop() {
                        return Err(format!("{path}: no part of it exists"));
                    }
                }
            }
        }
    }
}

fn io_error(what: &str, e: io::Error) -> ToolError {
    let message = format!("{what}: {e}");
    match e.kind() {
        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            ToolError::transient(message)
        }
        _ => ToolError::permanent(message),
    }
}

fn str_arg<'a>(args: &'a Value, key: &str) -> Option<&'a str> {
    args.get(key).and_then(Value::as_str)
}

/// The `dir:` keys of every ancestor of a relative path, the root included.
fn ancestor_dirs(rel: &str) -> Vec<String> {
    let mut dirs = vec!["dir:.".to_owned()];
    let parts: Vec<&str> = rel.split('/').collect();
    for k in 1..parts.len() {
        dirs.push(format!("dir:{}", parts[..k].join("/")));
    }
    dirs
}

/// Which file tool a [`FileTool`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    List,
    Search,
}

/// One of the four file tools, sharing a sandbox.
pub struct FileTool {
    kind: Kind,
    spec: ToolSpec,
    sandbox: Arc<Sandbox>,
    config: Arc<FilesConfig>,
}

/// Registers `file_read`, `file_write`, `list_dir` and `file_search` confined to
/// `config.root`.
pub fn register_file_tools(set: &mut ToolSet, config: &FilesConfig) -> Result<(), String> {
    let sandbox = Arc::new(Sandbox::new(&config.root)?);
    let config = Arc::new(config.clone());
    for kind in [Kind::Read, Kind::Write, Kind::List, Kind::Search] {
        let tool = FileTool {
            kind,
            spec: spec(kind),
            sandbox: sandbox.clone(),
            config: config.clone(),
        };
        set.register(tool)
            .map_err(|e: ToolSetError| e.to_string())?;
    }
    Ok(())
}

fn spec(kind: Kind) -> ToolSpec {
    let path = json!({"type": "string", "description": "Path relative to the file root."});
    match kind {
        Kind::Read => ToolSpec::new("file_read")
            .description("Reads a text file inside the file root.")
            .parameters(json!({
                "type": "object",
                "properties": {"path": path, "max_bytes": {"type": "integer", "minimum": 1, "description": "Read at most this many bytes."}},
                "required": ["path"],
                "additionalProperties": false
            }))
            .idempotent(),
        Kind::Write => ToolSpec::new("file_write")
            .description("Writes (or appends) text to a file inside the file root, creating parent directories.")
            .parameters(json!({
                "type": "object",
                "properties": {
                    "path": path,
                    "content": {"type": "string", "description": "The text to write."},
                    "append": {"type": "boolean", "description": "Append instead of replacing."}
                },
                "required": ["path", "content"],
                "additionalProperties": false
            })),
        Kind::List => ToolSpec::new("list_dir")
            .description("Lists a directory inside the file root (symbolic links are listed, not followed).")
            .parameters(json!({
                "type": "object",
                "properties": {"path": path},
                "additionalProperties": false
            }))
            .idempotent(),
        Kind::Search => ToolSpec::new("file_search")
            .description("Searches text files under a directory for lines matching a regular expression.")
            .parameters(json!({
                "type": "object",
                "properties": {
                    "path": path,
                    "pattern": {"type": "string", "description": "A regular expression (Rust regex syntax)."},
                    "max_results": {"type": "integer", "minimum": 1}
                },
                "required": ["pattern"],
                "additionalProperties": false
            }))
            .idempotent(),
    }
    .blocking()
}

impl Tool for FileTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn resources(&self, args: &Value) -> Vec<ResourceAccess> {
        let path = str_arg(args, "path").unwrap_or(".");
        // A path that leaves the root touches nothing: the call fails when it runs.
        let Ok(rel) = self.sandbox.relative(path) else {
            return Vec::new();
        };
        match self.kind {
            Kind::Read => vec![ResourceAccess::read(format!("file:{rel}"))],
            Kind::Write => {
                let mut out = vec![ResourceAccess::write(format!("file:{rel}"))];
                out.extend(
                    ancestor_dirs(&rel)
                        .into_iter()
                        .map(ResourceAccess::intent_write),
                );
                out
            }
            Kind::List | Kind::Search => vec![ResourceAccess::read(format!("dir:{rel}"))],
        }
    }

    fn is_idempotent(&self, args: &Value) -> bool {
        match self.kind {
            // Replacing a file's content twice gives the same file; appending does not.
            Kind::Write => args.get("append").and_then(Value::as_bool) != Some(true),
            _ => true,
        }
    }

    fn call<'a>(&'a self, args: std::sync::Arc<Value>, _ctx: CallContext) -> ToolFuture<'a> {
        Box::pin(async move {
            match self.kind {
                Kind::Read => self.read(&args),
                Kind::Write => self.write(&args),
                Kind::List => self.list(&args),
                Kind::Search => self.search(&args),
            }
        })
    }
}

impl FileTool {
    fn resolve(&self, args: &Value, default: Option<&str>) -> Result<(PathBuf, String), ToolError> {
        let path = str_arg(args, "path")
            .or(default)
            .ok_or_else(|| ToolError::permanent("missing \"path\""))?;
        self.sandbox.resolve(path).map_err(ToolError::permanent)
    }

    fn read(&self, args: &Value) -> Result<Value, ToolError> {
        let (real, rel) = self.resolve(args, None)?;
        let cap = args
            .get("max_bytes")
            .and_then(Value::as_u64)
            .map_or(self.config.max_read_bytes, |m| {
                (m as usize).min(self.config.max_read_bytes)
            });
        let file = std::fs::File::open(&real).map_err(|e| io_error(&rel, e))?;
        let meta = file.metadata().map_err(|e| io_error(&rel, e))?;
        if meta.is_dir() {
            return Err(ToolError::permanent(format!(
                "{rel} is a directory (use list_dir)"
            )));
        }
        let mut bytes = Vec::new();
        file.take(cap as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| io_error(&rel, e))?;
        let truncated = bytes.len() > cap;
        bytes.truncate(cap);
        Ok(json!({
            "path": rel,
            "content": String::from_utf8_lossy(&bytes),
            "bytes": bytes.len(),
            "size": meta.len(),
            "truncated": truncated,
        }))
    }

    fn write(&self, args: &Value) -> Result<Value, ToolError> {
        let content =
            str_arg(args, "content").ok_or_else(|| ToolError::permanent("missing \"content\""))?;
        let append = args.get("append").and_then(Value::as_bool) == Some(true);
        let (real, rel) = self.resolve(args, None)?;
        if rel == "." {
            return Err(ToolError::permanent(
                "cannot write to the root directory itself",
            ));
        }
        if let Some(parent) = real.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_error(&rel, e))?;
            // Creating directories may not have moved anything outside; check again.
            self.sandbox.resolve(&rel).map_err(ToolError::permanent)?;
        }
        let created = !real.exists();
        let mut options = std::fs::OpenOptions::new();
        options.create(true);
        if append {
            options.append(true)
        } else {
            options.write(true).truncate(true)
        };
        let mut file = options.open(&real).map_err(|e| io_error(&rel, e))?;
        std::io::Write::write_all(&mut file, content.as_bytes()).map_err(|e| io_error(&rel, e))?;
        Ok(
            json!({"path": rel, "bytes_written": content.len(), "created": created, "appended": append}),
        )
    }

    fn list(&self, args: &Value) -> Result<Value, ToolError> {
        let (real, rel) = self.resolve(args, Some("."))?;
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(&real).map_err(|e| io_error(&rel, e))? {
            let entry = entry.map_err(|e| io_error(&rel, e))?;
            let kind = entry.file_type().map_err(|e| io_error(&rel, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let (kind, size) = if kind.is_symlink() {
                ("symlink", None)
            } else if kind.is_dir() {
                ("dir", None)
            } else if kind.is_file() {
                ("file", entry.metadata().ok().map(|m| m.len()))
            } else {
                ("other", None)
            };
            entries.push(json!({"name": name, "kind": kind, "size": size}));
        }
        entries.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        Ok(json!({"path": rel, "entries": entries}))
    }

    fn search(&self, args: &Value) -> Result<Value, ToolError> {
        let pattern =
            str_arg(args, "pattern").ok_or_else(|| ToolError::permanent("missing \"pattern\""))?;
        let regex = regex::Regex::new(pattern)
            .map_err(|e| ToolError::permanent(format!("invalid pattern {pattern:?}: {e}")))?;
        let limit = args
            .get("max_results")
            .and_then(Value::as_u64)
            .map_or(self.config.max_search_results, |m| {
                (m as usize).min(self.config.max_search_results)
            });
        let (real, rel) = self.resolve(args, Some("."))?;
        let mut matches = Vec::new();
        let mut truncated = false;
        let mut files = 0usize;
        // Depth-first, sorted, never following symbolic links: the walk cannot leave the root.
        let mut stack = vec![(real, rel.clone())];
        'walk: while let Some((dir, dir_rel)) = stack.pop() {
            let mut entries: Vec<_> = match std::fs::read_dir(&dir) {
                Ok(rd) => rd.filter_map(Result::ok).collect(),
                Err(e) if dir_rel == rel => return Err(io_error(&rel, e)),
                Err(_) => continue,
            };
            entries.sort_by_key(|e| e.file_name());
            let mut subdirs = Vec::new();
            for entry in entries {
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                let name = entry.file_name().to_string_lossy().into_owned();
                let child_rel = if dir_rel == "." {
                    name
                } else {
                    format!("{dir_rel}/{name}")
                };
                if kind.is_dir() {
                    subdirs.push((entry.path(), child_rel));
                    continue;
                }
                if !kind.is_file() {
                    continue;
                }
                let Ok(meta) = entry.metadata() else { continue };
                if meta.len() > self.config.max_search_file_bytes {
                    continue;
                }
                let Ok(bytes) = std::fs::read(entry.path()) else {
                    continue;
                };
                if bytes.iter().take(8192).any(|b| *b == 0) {
                    continue; // binary
                }
                files += 1;
                let text = String::from_utf8_lossy(&bytes);
                for (n, line) in text.lines().enumerate() {
                    if regex.is_match(line) {
                        if matches.len() == limit {
                            truncated = true;
                            break 'walk;
                        }
                        let shown: String = line.chars().take(300).collect();
                        matches.push(json!({"path": child_rel, "line": n + 1, "text": shown}));
                    }
                }
            }
            stack.extend(subdirs.into_iter().rev());
        }
        Ok(
            json!({"path": rel, "pattern": pattern, "matches": matches, "files_searched": files, "truncated": truncated}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_normalised_and_escapes_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sb = Sandbox::new(dir.path()).expect("sandbox");
        assert_eq!(sb.relative("a/./b/../c.txt"), Ok("a/c.txt".into()));
        assert_eq!(sb.relative(""), Ok(".".into()));
        assert_eq!(sb.relative("."), Ok(".".into()));
        let inside = sb.root().join("x/y.txt");
        assert_eq!(
            sb.relative(inside.to_str().expect("utf-8")),
            Ok("x/y.txt".into())
        );
        assert!(sb.relative("../etc/passwd").is_err());
        assert!(sb.relative("a/../../b").is_err());
        assert!(sb.relative("/etc/passwd").is_err());
        assert!(sb.relative("a\0b").is_err());
    }

    #[test]
    fn ancestors_cover_every_directory_above_a_file() {
        assert_eq!(ancestor_dirs("a.txt"), ["dir:."]);
        assert_eq!(ancestor_dirs("a/b/c.txt"), ["dir:.", "dir:a", "dir:a/b"]);
    }
}
