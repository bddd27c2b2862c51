//! File tools confined to a root directory: `file_read`, `file_write`, `list_dir`,
//! `file_search`.
//!
//! Every file and directory they touch is opened through [`Sandbox`] (in `sandbox`), which
//! reaches it from a handle on the root, one component at a time, never following a link
//! out: `..` that climbs out, absolute paths outside the root, and symbolic links that lead
//! out are refused, even when the tree changes while a call runs. Only regular files are
//! read or written (a FIFO or device is refused, never waited on), and the search walks
//! directory handles without following links. Nothing here ever reads or writes outside
//! the root.
//!
//! Resources, for the planner's hazard rules: a file's content is `file:<path>`, a
//! directory's listing is `dir:<path>` (paths relative to the root, `/`-separated, `.` for
//! the root). `file_read` reads `file:`; `file_write` writes `file:` and intent-writes the
//! `dir:` of every ancestor, so it is ordered against listings and searches above it but
//! not against writes of other files; `list_dir` and `file_search` read `dir:`.
//!
//! All four block their thread (std I/O through cap-std handles) and are declared blocking,
//! so they run on the blocking pool, never on the scheduler's thread; `file_search` stops
//! when its call is cancelled.

mod sandbox;

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use cap_fs_ext::DirExt;
use cap_std::fs::Dir;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use toolgraph_core::{
    ApprovalClass, CallContext, CancelFlag, ResourceAccess, Tool, ToolError, ToolFuture, ToolSet,
    ToolSetError, ToolSpec,
};

pub use sandbox::Sandbox;
use sandbox::{FileMode, io_error, read_options};

/// Settings of the file tools.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesConfig {
    /// Offer the file tools (and `shell`, which runs in the root) at all (default: yes;
    /// `chat` turns them off when no root was given).
    pub enabled: bool,
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
            enabled: true,
            root: PathBuf::from("."),
            max_read_bytes: 1 << 20,
            max_search_results: 200,
            max_search_file_bytes: 4 << 20,
        }
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
    .approval_class(match kind {
        Kind::Write => ApprovalClass::Write,
        Kind::Read | Kind::List | Kind::Search => ApprovalClass::ReadOnly,
    })
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

    fn call<'a>(&'a self, args: Arc<Value>, ctx: CallContext) -> ToolFuture<'a> {
        Box::pin(async move {
            match self.kind {
                Kind::Read => self.read(&args),
                Kind::Write => self.write(&args),
                Kind::List => self.list(&args),
                Kind::Search => self.search(&args, &ctx.cancel),
            }
        })
    }
}

/// A subdirectory the search has yet to walk: opened from its parent's handle when its turn
/// comes, so the walk holds one handle per level, not one per pending directory.
struct Pending {
    parent: Arc<Dir>,
    name: OsString,
    rel: String,
}

impl FileTool {
    fn path_arg<'v>(args: &'v Value, default: Option<&'v str>) -> Result<&'v str, ToolError> {
        str_arg(args, "path")
            .or(default)
            .ok_or_else(|| ToolError::permanent("missing \"path\""))
    }

    fn read(&self, args: &Value) -> Result<Value, ToolError> {
        let path = Self::path_arg(args, None)?;
        let cap = args
            .get("max_bytes")
            .and_then(Value::as_u64)
            .map_or(self.config.max_read_bytes, |m| {
                (m as usize).min(self.config.max_read_bytes)
            });
        let opened = self.sandbox.open_file(path, FileMode::Read)?;
        let rel = opened.rel;
        let mut bytes = Vec::new();
        opened
            .file
            .take(cap as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| io_error(&rel, e))?;
        let truncated = bytes.len() > cap;
        bytes.truncate(cap);
        Ok(json!({
            "path": rel,
            "content": String::from_utf8_lossy(&bytes),
            "bytes": bytes.len(),
            "size": opened.meta.len(),
            "truncated": truncated,
        }))
    }

    fn write(&self, args: &Value) -> Result<Value, ToolError> {
        let content =
            str_arg(args, "content").ok_or_else(|| ToolError::permanent("missing \"content\""))?;
        let append = args.get("append").and_then(Value::as_bool) == Some(true);
        let path = Self::path_arg(args, None)?;
        if self.sandbox.relative(path).map_err(ToolError::permanent)? == "." {
            return Err(ToolError::permanent(
                "cannot write to the root directory itself",
            ));
        }
        let opened = self.sandbox.open_file(path, FileMode::Write { append })?;
        let (mut file, rel) = (opened.file, opened.rel);
        // Truncated only now that it is known to be a regular file.
        if !append {
            file.set_len(0).map_err(|e| io_error(&rel, e))?;
        }
        file.write_all(content.as_bytes())
            .map_err(|e| io_error(&rel, e))?;
        Ok(json!({
            "path": rel,
            "bytes_written": content.len(),
            "created": opened.created,
            "appended": append,
        }))
    }

    fn list(&self, args: &Value) -> Result<Value, ToolError> {
        let (dir, rel) = self.sandbox.open_dir(Self::path_arg(args, Some("."))?)?;
        let mut entries = Vec::new();
        for entry in dir.entries().map_err(|e| io_error(&rel, e))? {
            let entry = entry.map_err(|e| io_error(&rel, e))?;
            let kind = entry.file_type().map_err(|e| io_error(&rel, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let (kind, size) = if kind.is_symlink() {
                ("symlink", None)
            } else if kind.is_dir() {
                ("dir", None)
            } else if kind.is_file() {
                // The entry's own metadata: a link in its place is not followed.
                ("file", entry.metadata().ok().map(|m| m.len()))
            } else {
                ("other", None)
            };
            entries.push(json!({"name": name, "kind": kind, "size": size}));
        }
        entries.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        Ok(json!({"path": rel, "entries": entries}))
    }

    fn search(&self, args: &Value, cancel: &CancelFlag) -> Result<Value, ToolError> {
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
        let (start, rel) = self.sandbox.open_dir(Self::path_arg(args, Some("."))?)?;
        let cancelled = |files: usize| {
            ToolError::permanent(format!("{rel}: search cancelled after {files} files"))
        };
        let mut matches = Vec::new();
        let mut truncated = false;
        let mut files = 0usize;
        // Depth-first, sorted. Each directory is opened from its parent's handle and never
        // through a symbolic link, each file likewise: the walk cannot leave the root, even
        // when a directory is swapped for a link while it runs.
        let mut next = Some((start, rel.clone()));
        let mut pending: Vec<Pending> = Vec::new();
        'walk: loop {
            if cancel.is_cancelled() {
                return Err(cancelled(files));
            }
            let (dir, dir_rel) = match next.take() {
                Some(start) => start,
                None => match pending.pop() {
                    None => break,
                    Some(sub) => match sub.parent.open_dir_nofollow(&sub.name) {
                        Ok(dir) => (dir, sub.rel),
                        Err(_) => continue, // gone, or no longer a directory
                    },
                },
            };
            let mut entries: Vec<_> = match dir.entries() {
                Ok(rd) => rd.filter_map(Result::ok).collect(),
                Err(e) if dir_rel == rel => return Err(io_error(&rel, e)),
                Err(_) => continue,
            };
            entries.sort_by_key(|e| e.file_name());
            let dir = Arc::new(dir);
            let mut subdirs = Vec::new();
            for entry in entries {
                if cancel.is_cancelled() {
                    return Err(cancelled(files));
                }
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                let name = entry.file_name();
                let child_rel = if dir_rel == "." {
                    name.to_string_lossy().into_owned()
                } else {
                    format!("{dir_rel}/{}", name.to_string_lossy())
                };
                if kind.is_dir() {
                    subdirs.push(Pending {
                        parent: dir.clone(),
                        name,
                        rel: child_rel,
                    });
                    continue;
                }
                if !kind.is_file() {
                    continue;
                }
                let Some(bytes) = self.searchable(&dir, &name) else {
                    continue;
                };
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
            pending.extend(subdirs.into_iter().rev());
        }
        Ok(json!({
            "path": rel,
            "pattern": pattern,
            "matches": matches,
            "files_searched": files,
            "truncated": truncated,
        }))
    }

    /// The content of `name` in `dir` when it is a regular text file no larger than the
    /// search's limit (opened without following a link and without blocking).
    fn searchable(&self, dir: &Dir, name: &OsStr) -> Option<Vec<u8>> {
        let file = dir.open_with(name, &read_options()).ok()?;
        let meta = file.metadata().ok()?;
        let max = self.config.max_search_file_bytes;
        if !meta.is_file() || meta.len() > max {
            return None;
        }
        let mut bytes = Vec::new();
        file.take(max + 1).read_to_end(&mut bytes).ok()?;
        if bytes.len() as u64 > max || bytes.iter().take(8192).any(|b| *b == 0) {
            return None; // grew past the limit, or binary
        }
        Some(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_cover_every_directory_above_a_file() {
        assert_eq!(ancestor_dirs("a.txt"), ["dir:."]);
        assert_eq!(ancestor_dirs("a/b/c.txt"), ["dir:.", "dir:a", "dir:a/b"]);
    }
}
