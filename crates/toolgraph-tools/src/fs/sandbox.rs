//! The file root and the only way into it.
//!
//! [`Sandbox`] opens the root directory once and reaches every path from that handle, one
//! component at a time: each directory is opened relative to the handle of its parent
//! without following a symbolic link (cap-std, `O_NOFOLLOW`), and a link met on the way is
//! read and followed by the sandbox itself, against the handles it already holds. A `..`
//! or an absolute target that would leave the root is refused, not followed. Nothing is
//! checked first and reopened by name later, so swapping a directory for a link while a
//! call runs cannot carry the call outside the root. Links that stay inside the root work;
//! links that lead out, dangling links and link loops are refused with a message naming
//! the path.
//!
//! Files are opened non-blocking and must turn out to be regular files: a FIFO, socket or
//! device inside the root is refused at once instead of blocking a thread for ever.
//!
//! It must never open anything by a path from outside the root handle. The one exception is
//! [`Sandbox::resolve`], for a program that must be handed a path (the shell's working
//! directory): its answer is true when it is given, not when the program uses it.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use cap_fs_ext::{DirExt, FollowSymlinks, OpenOptionsFollowExt};
use cap_std::ambient_authority;
use cap_std::fs::{Dir, File, Metadata, OpenOptions, OpenOptionsExt};
use rustix::fs::OFlags;
use rustix::io::Errno;
use toolgraph_core::ToolError;

/// Most symbolic links followed for one path (Linux's own limit): past it, a loop.
const MAX_LINKS: usize = 40;
/// Most times one part of a path is tried again because it changed while it was opened.
const MAX_RETRIES: usize = 100;

/// A root directory and the rules for staying inside it.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// The real (canonical) root: for absolute paths and absolute link targets.
    root: PathBuf,
    /// The root, opened once: every file and directory is reached from it.
    dir: Arc<Dir>,
}

/// How [`Sandbox::open_file`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileMode {
    /// For reading.
    Read,
    /// For writing, created (with missing parent directories) when it does not exist. The
    /// content is left as it was: the caller truncates or appends.
    Write {
        /// Open in append mode.
        append: bool,
    },
}

/// A file opened inside the root.
#[derive(Debug)]
pub(crate) struct OpenedFile {
    pub(crate) file: File,
    /// Its metadata, from the open handle: a regular file.
    pub(crate) meta: Metadata,
    /// The path relative to the root, normalised.
    pub(crate) rel: String,
    /// True when this open created the file.
    pub(crate) created: bool,
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
        let dir = Dir::open_ambient_dir(&real, ambient_authority())
            .map_err(|e| format!("file root {}: {e}", root.display()))?;
        Ok(Sandbox {
            root: real,
            dir: Arc::new(dir),
        })
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

    /// The real path for `path` with its relative form, for a program that must be handed a
    /// path: every existing part, symbolic links followed, is checked to stay inside the
    /// root; missing parts at the end are kept as given. The file tools never use it: they
    /// open through the root handle (`open_file`, `open_dir`), which a path handed on cannot
    /// be, so the answer holds when it is given, not necessarily when the path is used.
    pub fn resolve(&self, path: &str) -> Result<(PathBuf, String), String> {
        let rel = self.relative(path)?;
        let mut walk = Walk::new(self, path, &rel);
        let mut queue = parts_of(&rel);
        let mut missing: Vec<OsString> = Vec::new();
        while let Some(part) = walk.pop(&mut queue).map_err(|e| e.message)? {
            let Some(e) = walk
                .enter(&part, &mut queue, false)
                .map_err(|e| e.message)?
            else {
                continue;
            };
            let last = queue.is_empty();
            if e.kind() == io::ErrorKind::NotFound && part.origin == Origin::Given {
                missing.push(part.name);
                missing.extend(queue.drain(..).map(|p| p.name));
                break;
            }
            if errno(&e) == Some(Errno::NOTDIR) && last {
                missing.push(part.name); // an existing file: the path names it
                break;
            }
            return Err(walk.failure(e, part.origin).message);
        }
        let mut real = self.root.clone();
        real.extend(walk.names.iter().chain(&missing));
        Ok((real, rel))
    }

    /// Opens the directory `path` (links inside the root followed) through the root handle;
    /// returns it with the path relative to the root.
    pub(crate) fn open_dir(&self, path: &str) -> Result<(Dir, String), ToolError> {
        let rel = self.relative(path).map_err(ToolError::permanent)?;
        let mut walk = Walk::new(self, path, &rel);
        let mut queue = parts_of(&rel);
        while let Some(part) = walk.pop(&mut queue)? {
            if let Some(e) = walk.enter(&part, &mut queue, false)? {
                return Err(walk.failure(e, part.origin));
            }
        }
        let dir = match walk.dirs.pop() {
            Some(dir) => dir,
            None => self.dir.try_clone().map_err(|e| io_error(&rel, e))?,
        };
        Ok((dir, rel))
    }

    /// Opens the regular file `path` through the root handle: links inside the root are
    /// followed, anything that is not a regular file is refused, and nothing blocks. For
    /// [`FileMode::Write`] missing parent directories are created, and a missing file too —
    /// but never the missing target of a link.
    pub(crate) fn open_file(&self, path: &str, mode: FileMode) -> Result<OpenedFile, ToolError> {
        let rel = self.relative(path).map_err(ToolError::permanent)?;
        let writing = matches!(mode, FileMode::Write { .. });
        let mut walk = Walk::new(self, path, &rel);
        let mut queue = parts_of(&rel);
        loop {
            let Some(part) = walk.pop(&mut queue)? else {
                return Err(ToolError::permanent(format!(
                    "{rel} is a directory (use list_dir)"
                )));
            };
            if !queue.is_empty() {
                if let Some(e) = walk.enter(&part, &mut queue, writing)? {
                    return Err(walk.failure(e, part.origin));
                }
                continue;
            }
            let (opened, created) = open_here(walk.here(), &part, mode);
            let e = match opened {
                Ok(file) => {
                    let meta = file.metadata().map_err(|e| io_error(&rel, e))?;
                    if meta.is_dir() {
                        return Err(ToolError::permanent(format!(
                            "{rel} is a directory (use list_dir)"
                        )));
                    }
                    if !meta.is_file() {
                        return Err(not_regular(&rel));
                    }
                    return Ok(OpenedFile {
                        file,
                        meta,
                        rel,
                        created,
                    });
                }
                Err(e) => e,
            };
            if walk.follow(&part, &mut queue)? {
                continue;
            }
            // Deleted between the exclusive create and the plain open: create it again.
            let vanished =
                writing && part.origin == Origin::Given && e.kind() == io::ErrorKind::NotFound;
            if vanished || walk.changed(&part, &e, false) {
                walk.again(part, &mut queue)?;
                continue;
            }
            return Err(walk.failure(e, part.origin));
        }
    }
}

/// Options that open a file without following a link in its name and without blocking (a
/// FIFO with no writer, a device), for reading.
pub(crate) fn read_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.read(true);
    guarded(&mut options);
    options
}

fn guarded(options: &mut OpenOptions) {
    options.follow(FollowSymlinks::No);
    options.custom_flags(OFlags::NONBLOCK.bits() as i32);
}

/// Opens `part` in `dir` as the file of a call: created exclusively first when writing a
/// name the caller gave (so `created` is exact), otherwise opened as it is.
fn open_here(dir: &Dir, part: &Part, mode: FileMode) -> (io::Result<File>, bool) {
    let mut options = match mode {
        FileMode::Read => return (dir.open_with(&part.name, &read_options()), false),
        FileMode::Write { append } => {
            let mut options = OpenOptions::new();
            options.write(true).append(append);
            guarded(&mut options);
            options
        }
    };
    // The target of a link is never created: a dangling link stays an error.
    if part.origin == Origin::Given {
        options.create_new(true);
        match dir.open_with(&part.name, &options) {
            Ok(file) => return (Ok(file), true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return (Err(e), false),
        }
        options.create_new(false);
    }
    (dir.open_with(&part.name, &options), false)
}

/// A call's error for an I/O failure on `what`: interruptions and timeouts are transient.
pub(crate) fn io_error(what: &str, e: io::Error) -> ToolError {
    let message = format!("{what}: {e}");
    match e.kind() {
        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            ToolError::transient(message)
        }
        _ => ToolError::permanent(message),
    }
}

fn not_regular(rel: &str) -> ToolError {
    ToolError::permanent(format!(
        "{rel} is not a regular file (a FIFO, socket or device): refused"
    ))
}

fn errno(e: &io::Error) -> Option<Errno> {
    Errno::from_io_error(e)
}

/// Where a part of the path being walked came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// The caller's path.
    Given,
    /// The target of a symbolic link.
    Link,
}

/// One component still to walk.
#[derive(Debug, Clone)]
struct Part {
    name: OsString,
    origin: Origin,
}

impl Part {
    fn is_parent(&self) -> bool {
        self.name == ".."
    }
}

fn parts_of(rel: &str) -> VecDeque<Part> {
    if rel == "." {
        return VecDeque::new();
    }
    rel.split('/')
        .map(|name| Part {
            name: name.into(),
            origin: Origin::Given,
        })
        .collect()
}

/// One walk from the root handle down a path: the handles of the directories entered so
/// far (the root's own is the sandbox's), which is also how far `..` may climb.
struct Walk<'a> {
    sandbox: &'a Sandbox,
    /// The path as the caller gave it, for refusals.
    given: &'a str,
    /// The path relative to the root, for I/O errors.
    rel: &'a str,
    dirs: Vec<Dir>,
    names: Vec<OsString>,
    links: usize,
    retries: usize,
}

impl<'a> Walk<'a> {
    fn new(sandbox: &'a Sandbox, given: &'a str, rel: &'a str) -> Self {
        Walk {
            sandbox,
            given,
            rel,
            dirs: Vec::new(),
            names: Vec::new(),
            links: 0,
            retries: 0,
        }
    }

    /// The directory the walk is in.
    fn here(&self) -> &Dir {
        self.dirs.last().unwrap_or(self.sandbox.dir.as_ref())
    }

    /// The next name to open, after climbing every `..` before it (never above the root).
    fn pop(&mut self, queue: &mut VecDeque<Part>) -> Result<Option<Part>, ToolError> {
        while let Some(part) = queue.pop_front() {
            if !part.is_parent() {
                return Ok(Some(part));
            }
            if self.dirs.pop().is_none() {
                return Err(self.outside());
            }
            self.names.pop();
        }
        Ok(None)
    }

    /// Enters the directory `part`, following it when it is a link (its target's parts are
    /// put in front of `queue`) and creating it when asked and missing. `Some(error)` when
    /// it cannot be entered.
    fn enter(
        &mut self,
        part: &Part,
        queue: &mut VecDeque<Part>,
        create: bool,
    ) -> Result<Option<io::Error>, ToolError> {
        let e = match self.here().open_dir_nofollow(&part.name) {
            Ok(dir) => {
                self.dirs.push(dir);
                self.names.push(part.name.clone());
                return Ok(None);
            }
            Err(e) => e,
        };
        if self.follow(part, queue)? {
            return Ok(None);
        }
        if create && part.origin == Origin::Given && e.kind() == io::ErrorKind::NotFound {
            match self.here().create_dir(&part.name) {
                Ok(()) => queue.push_front(part.clone()),
                Err(c) if c.kind() == io::ErrorKind::AlreadyExists => {
                    self.again(part.clone(), queue)?;
                }
                Err(c) => return Ok(Some(c)),
            }
            return Ok(None);
        }
        if self.changed(part, &e, true) {
            self.again(part.clone(), queue)?;
            return Ok(None);
        }
        Ok(Some(e))
    }

    /// When `part` is a symbolic link, puts the parts of its target in front of `queue`
    /// (an absolute target restarts from the root) and says true. Refuses a target outside
    /// the root and a loop.
    fn follow(&mut self, part: &Part, queue: &mut VecDeque<Part>) -> Result<bool, ToolError> {
        let Ok(target) = self.here().read_link_contents(&part.name) else {
            return Ok(false);
        };
        self.links += 1;
        if self.links > MAX_LINKS {
            return Err(self.looped());
        }
        let rest = if target.is_absolute() {
            let Ok(inside) = target.strip_prefix(&self.sandbox.root) else {
                return Err(self.outside());
            };
            self.dirs.clear();
            self.names.clear();
            inside
        } else {
            &target
        };
        let mut parts = Vec::new();
        for component in rest.components() {
            match component {
                Component::Normal(name) => parts.push(name.to_owned()),
                Component::ParentDir => parts.push("..".into()),
                Component::CurDir => {}
                Component::RootDir | Component::Prefix(_) => return Err(self.outside()),
            }
        }
        for name in parts.into_iter().rev() {
            queue.push_front(Part {
                name,
                origin: Origin::Link,
            });
        }
        Ok(true)
    }

    /// Whether an open failed because `part` changed under the walk (a link that was
    /// swapped back for a directory or file before it could be read): worth trying again.
    fn changed(&self, part: &Part, e: &io::Error, want_dir: bool) -> bool {
        match errno(e) {
            // `O_NOFOLLOW` met a link, and it is no longer a link.
            Some(Errno::LOOP) => true,
            // A directory opened with `O_NOFOLLOW` says this for a link too.
            Some(Errno::NOTDIR) if want_dir => self
                .here()
                .symlink_metadata(&part.name)
                .is_ok_and(|m| m.is_dir()),
            _ => false,
        }
    }

    fn again(&mut self, part: Part, queue: &mut VecDeque<Part>) -> Result<(), ToolError> {
        self.retries += 1;
        if self.retries > MAX_RETRIES {
            return Err(ToolError::transient(format!(
                "{}: kept changing while it was being opened",
                self.given
            )));
        }
        queue.push_front(part);
        Ok(())
    }

    /// The error for a part that cannot be opened.
    fn failure(&self, e: io::Error, origin: Origin) -> ToolError {
        if e.kind() == io::ErrorKind::NotFound && origin == Origin::Link {
            return ToolError::permanent(format!(
                "{}: symbolic link to a missing target",
                self.given
            ));
        }
        match errno(&e) {
            Some(Errno::LOOP) => self.looped(),
            // Only FIFOs without a reader, sockets and missing devices say this.
            Some(Errno::NXIO) => not_regular(self.rel),
            _ => io_error(self.rel, e),
        }
    }

    fn outside(&self) -> ToolError {
        ToolError::permanent(format!(
            "{} leads outside the root through a symbolic link",
            self.given
        ))
    }

    fn looped(&self) -> ToolError {
        ToolError::permanent(format!(
            "{}: symbolic link loop (more than {MAX_LINKS} links followed)",
            self.given
        ))
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
    fn resolve_follows_links_inside_and_keeps_missing_parts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("a/b")).expect("mkdir");
        std::fs::write(root.join("a/f.txt"), "x").expect("write");
        std::os::unix::fs::symlink("a/b", root.join("to_b")).expect("symlink");
        std::os::unix::fs::symlink("..", root.join("up")).expect("symlink");
        let sb = Sandbox::new(&root).expect("sandbox");
        let real = sb.root().to_path_buf();
        assert_eq!(sb.resolve("."), Ok((real.clone(), ".".into())));
        assert_eq!(
            sb.resolve("to_b/new/x.txt"),
            Ok((real.join("a/b/new/x.txt"), "to_b/new/x.txt".into()))
        );
        assert_eq!(
            sb.resolve("a/f.txt"),
            Ok((real.join("a/f.txt"), "a/f.txt".into()))
        );
        assert!(
            sb.resolve("up/x")
                .is_err_and(|e| e.contains("leads outside the root"))
        );
    }
}
