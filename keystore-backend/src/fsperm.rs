//! Owner-only files and directories for key material and metadata.
//!
//! Everything the keystore creates on disk for a store (backend directories,
//! sealed records, headers, lock files, temporaries, `metadata.sqlite` and
//! the files beside it) is a directory of mode 0700 or a file of mode 0600,
//! **whatever the process umask**:
//! - files are created with mode 0600 from the start (never written first
//!   and restricted afterwards), then set to exactly 0600 through the open
//!   descriptor, before any byte is written, in case the umask removed owner
//!   bits too;
//! - directories are created with mode 0700 and then set to exactly 0700.
//!
//! At open, each store checks the paths it owns with [`PermissionReport`]:
//! a path that is group- or world-accessible (any of the 0o077 bits) is
//! **tightened and reported**, never silently. The report is typed, so a
//! library user can log or refuse it; `keyctl` prints each entry to stderr.
//! The check is O(1) per store: it looks at the store's directories and fixed
//! files; only a directory found loose (a store from an older release) has
//! its whole subtree checked, once. Files inside a 0700 directory are out of
//! other users' reach whatever their own mode.
//!
//! On non-Unix targets these functions create plain files and directories
//! and the checks report nothing.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// Mode of every directory the keystore creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file the keystore creates.
pub const FILE_MODE: u32 = 0o600;
/// Bits that make a path accessible to other local users.
pub const LOOSE_BITS: u32 = 0o077;

/// Creates `path` (and any missing parent) as a directory of mode 0700.
/// An existing directory is left as it is: the open-time check
/// ([`PermissionReport::check_path`]) reports and tightens it.
pub fn ensure_private_dir(path: &Path) -> io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(DIR_MODE);
    }
    builder.create(path)?;
    set_mode(path, DIR_MODE)
}

/// Creates a new file at `path` (failing if it exists), open for reading and
/// writing, with mode exactly 0600 before anything is written to it.
pub fn create_private_file(path: &Path) -> io::Result<File> {
    let file = private_options().create_new(true).open(path)?;
    fix_fd_mode(&file)?;
    Ok(file)
}

/// Opens the file at `path` for reading and writing, creating it with mode
/// exactly 0600 if it does not exist. An existing file is neither truncated
/// nor re-moded (the open-time check does that). For lock files and files
/// shared by several processes (`<metadata>-lock`, `<metadata>-gen`).
pub fn open_private_file(path: &Path) -> io::Result<File> {
    loop {
        match create_private_file(path) {
            Ok(f) => return Ok(f),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => return Ok(f),
            // Removed between the two calls: try creating it again.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
}

fn private_options() -> OpenOptions {
    let mut opts = OpenOptions::new();
    opts.read(true).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(FILE_MODE);
    }
    opts
}

#[cfg(unix)]
fn fix_fd_mode(file: &File) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))
}

#[cfg(not(unix))]
fn fix_fd_mode(_file: &File) -> io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> io::Result<()> {
    Ok(())
}

/// Whether a reported path is a directory or a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathKind {
    /// A directory (expected mode 0700).
    Directory,
    /// A regular file (expected mode 0600).
    File,
}

impl PathKind {
    /// The mode the keystore gives this kind of path.
    pub fn private_mode(self) -> u32 {
        match self {
            PathKind::Directory => DIR_MODE,
            PathKind::File => FILE_MODE,
        }
    }
}

/// What was done about a loose path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tightening {
    /// Its mode was set to this (0700 or 0600).
    Tightened(u32),
    /// It could not be changed (for example it belongs to another user); it
    /// stays accessible to other users until an operator fixes it.
    Failed(String),
}

/// A store path that was accessible to other local users at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoosePermission {
    /// The path.
    pub path: PathBuf,
    /// Directory or file.
    pub kind: PathKind,
    /// The permission bits found (for example `0o644`).
    pub found_mode: u32,
    /// What was done about it.
    pub outcome: Tightening,
}

impl fmt::Display for LoosePermission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            PathKind::Directory => "directory",
            PathKind::File => "file",
        };
        write!(
            f,
            "{kind} {} had mode {:04o}, accessible to other local users; ",
            self.path.display(),
            self.found_mode
        )?;
        match &self.outcome {
            Tightening::Tightened(mode) => write!(f, "tightened to {mode:04o}"),
            Tightening::Failed(why) => write!(
                f,
                "could not tighten it ({why}): run `chmod {:04o}` on it",
                self.kind.private_mode()
            ),
        }
    }
}

/// Store paths found accessible to other local users when a store was
/// opened, and what was done about each (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PermissionReport {
    /// Every loose path found, in the order checked.
    pub loose: Vec<LoosePermission>,
}

impl PermissionReport {
    /// An empty report.
    pub fn new() -> Self {
        Self::default()
    }

    /// True if every checked path was private.
    pub fn is_clean(&self) -> bool {
        self.loose.is_empty()
    }

    /// Appends another report's findings.
    pub fn extend(&mut self, other: PermissionReport) {
        self.loose.extend(other.loose);
    }

    /// Checks one path: a directory or file with any group or other bit is
    /// set to 0700 or 0600 and reported. A missing path, a symbolic link
    /// (never followed) or another kind of file is skipped. Returns true if
    /// the path was loose.
    pub fn check_path(&mut self, path: &Path) -> bool {
        self.check(path).is_some()
    }

    /// Checks a directory the store owns: if it is loose, it is tightened and
    /// everything below it is checked as well (once: the next open finds it
    /// private and looks no further). Returns true if the directory was loose.
    pub fn check_dir_tree(&mut self, dir: &Path) -> bool {
        if self.check(dir) != Some(PathKind::Directory) {
            return false;
        }
        self.check_below(dir);
        true
    }

    fn check_below(&mut self, dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            self.check(&path);
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                self.check_below(&path);
            }
        }
    }

    #[cfg(unix)]
    fn check(&mut self, path: &Path) -> Option<PathKind> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::symlink_metadata(path).ok()?;
        let kind = if meta.is_dir() {
            PathKind::Directory
        } else if meta.is_file() {
            PathKind::File
        } else {
            return None;
        };
        let found_mode = meta.permissions().mode() & 0o7777;
        if found_mode & LOOSE_BITS == 0 {
            return None;
        }
        let mode = kind.private_mode();
        let outcome = match set_mode(path, mode) {
            Ok(()) => Tightening::Tightened(mode),
            Err(e) => Tightening::Failed(e.to_string()),
        };
        self.loose.push(LoosePermission {
            path: path.to_path_buf(),
            kind,
            found_mode,
            outcome,
        });
        Some(kind)
    }

    #[cfg(not(unix))]
    fn check(&mut self, _path: &Path) -> Option<PathKind> {
        None
    }
}

impl fmt::Display for PermissionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, l) in self.loose.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{l}")?;
        }
        Ok(())
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn created_paths_are_private_and_loose_ones_are_tightened_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("a/b");
        ensure_private_dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
        assert_eq!(mode(&dir.path().join("a")) & LOOSE_BITS, 0, "parents too");
        let f = d.join("f");
        drop(create_private_file(&f).unwrap());
        assert_eq!(mode(&f), 0o600);
        assert!(create_private_file(&f).is_err(), "create_new");
        let g = d.join("g");
        drop(open_private_file(&g).unwrap());
        drop(open_private_file(&g).unwrap());
        assert_eq!(mode(&g), 0o600);

        let mut clean = PermissionReport::new();
        assert!(!clean.check_dir_tree(&d));
        assert!(!clean.check_path(&f));
        assert!(clean.is_clean());

        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut report = PermissionReport::new();
        assert!(report.check_dir_tree(&d));
        assert_eq!(report.loose.len(), 2, "{report}");
        assert_eq!(report.loose[0].path, d);
        assert_eq!(report.loose[0].found_mode, 0o755);
        assert_eq!(report.loose[0].outcome, Tightening::Tightened(0o700));
        assert_eq!(report.loose[1].path, f);
        assert_eq!(report.loose[1].kind, PathKind::File);
        assert!(report.to_string().contains("0644"), "{report}");
        assert_eq!(mode(&d), 0o700);
        assert_eq!(mode(&f), 0o600);
        // A symbolic link is never followed.
        let link = d.join("link");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(!PermissionReport::new().check_path(&link));
        assert_eq!(mode(&f), 0o644);
    }
}
