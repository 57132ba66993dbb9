//! File-system steps of the file output: directories and files created with the configured mode
//! and owner, the identity used to notice a file that was moved or deleted, writes that report how
//! far they got, and user/group name lookups for the config.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::SystemTime;

/// Mode and ownership of the files and directories an output creates (rsyslog's FileCreateMode,
/// DirCreateMode, FileOwner, FileGroup). Existing files and directories are left as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perms {
    /// Permission bits of new files (applied exactly, whatever the umask).
    pub file_mode: u32,
    /// Permission bits of new directories.
    pub dir_mode: u32,
    /// Owner of new files and directories; `None` keeps sluice's own.
    pub owner: Option<u32>,
    /// Group of new files and directories; `None` keeps sluice's own.
    pub group: Option<u32>,
}

impl Default for Perms {
    fn default() -> Perms {
        Perms {
            // Logs often hold secrets: group-readable only (Debian's adm convention).
            file_mode: 0o640,
            dir_mode: 0o755,
            owner: None,
            group: None,
        }
    }
}

/// Which file a path named when it was opened: compared with the path's current target to
/// notice that logrotate (or a person) moved or deleted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    /// The identity of the file `m` describes.
    pub fn of(m: &Metadata) -> FileId {
        FileId {
            dev: m.dev(),
            ino: m.ino(),
        }
    }

    /// True while `path` still names this file.
    pub fn is_at(self, path: &Path) -> bool {
        std::fs::metadata(path).is_ok_and(|m| FileId::of(&m) == self)
    }
}

/// A file opened for appending.
#[derive(Debug)]
pub struct Opened {
    /// The open file (O_APPEND: every write lands at the current end, even after copytruncate).
    pub file: File,
    /// Its identity.
    pub id: FileId,
    /// Its size when opened.
    pub size_bytes: u64,
    /// When it was last written before this open (for a file that already held lines).
    pub modified: SystemTime,
    /// True when this open created it.
    pub created: bool,
}

/// Opens `path` for appending. A missing file (and its missing directories) is created with
/// `perms` when `may_create`; otherwise `Ok(None)`.
pub fn open_append(path: &Path, perms: &Perms, may_create: bool) -> io::Result<Option<Opened>> {
    let mut created = false;
    let file = match OpenOptions::new().append(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if !may_create {
                return Ok(None);
            }
            if let Some(dir) = path.parent() {
                create_dirs(dir, perms)?;
            }
            // create_new: only the open that creates the file sets its mode and owner.
            match OpenOptions::new()
                .append(true)
                .create_new(true)
                .mode(perms.file_mode)
                .open(path)
            {
                Ok(f) => {
                    created = true;
                    // The umask may have cleared bits the config asked for.
                    f.set_permissions(std::fs::Permissions::from_mode(perms.file_mode))?;
                    if perms.owner.is_some() || perms.group.is_some() {
                        std::os::unix::fs::fchown(&f, perms.owner, perms.group)?;
                    }
                    f
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    OpenOptions::new().append(true).open(path)?
                }
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    Ok(Some(Opened {
        id: FileId::of(&meta),
        size_bytes: meta.len(),
        modified: meta.modified().unwrap_or_else(|_| SystemTime::now()),
        created,
        file,
    }))
}

/// Creates `dir` and its missing ancestors with `perms` (existing ones are left alone).
pub fn create_dirs(dir: &Path, perms: &Perms) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs(parent, perms)?;
    }
    match std::fs::DirBuilder::new().mode(perms.dir_mode).create(dir) {
        Ok(()) => {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(perms.dir_mode))?;
            if perms.owner.is_some() || perms.group.is_some() {
                std::os::unix::fs::chown(dir, perms.owner, perms.group)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes `buf` with as few `write` calls as the kernel allows (one, normally). Returns how many
/// bytes reached the file, and the error that stopped it short, so a retry neither repeats nor
/// skips a byte (a disk that fills mid-buffer takes a prefix).
pub fn write_counted(file: &mut File, buf: &[u8]) -> (usize, Option<io::Error>) {
    let mut done = 0;
    while done < buf.len() {
        match file.write(&buf[done..]) {
            Ok(0) => return (done, Some(io::ErrorKind::WriteZero.into())),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (done, Some(e)),
        }
    }
    (done, None)
}

/// Makes a rename or unlink in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)?.sync_all()
}

/// `path` with `suffix` appended to its file name (`auth.log` + `.1` = `auth.log.1`).
pub fn with_suffix(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    s.into()
}

/// The file name of `path` as bytes (empty when it has none).
pub fn file_name_bytes(path: &Path) -> &[u8] {
    path.file_name().map_or(&[][..], |n| n.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privileges::{lookup_group, lookup_user};

    #[test]
    fn users_and_groups_resolve_by_name_or_number() {
        assert_eq!(lookup_user("root"), Ok(0));
        assert_eq!(lookup_user("4242"), Ok(4242));
        assert_eq!(lookup_group("root"), Ok(0));
        let e = lookup_user("no-such-user-sluice").unwrap_err();
        assert_eq!(e, "unknown user \"no-such-user-sluice\"");
        assert!(lookup_group("no-such-group-sluice").is_err());
    }

    #[test]
    fn created_files_and_dirs_get_exact_modes_despite_umask() {
        let dir = tempfile::tempdir().unwrap();
        let perms = Perms {
            file_mode: 0o664,
            dir_mode: 0o770,
            owner: None,
            group: None,
        };
        let path = dir.path().join("a/b/x.log");
        let o = open_append(&path, &perms, true).unwrap().unwrap();
        assert!(o.created);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&path), 0o664);
        assert_eq!(mode(&dir.path().join("a")), 0o770);
        assert_eq!(mode(&dir.path().join("a/b")), 0o770);
        assert!(o.id.is_at(&path));
        let again = open_append(&path, &perms, false).unwrap().unwrap();
        assert!(!again.created);
        assert!(
            open_append(&dir.path().join("nope"), &perms, false)
                .unwrap()
                .is_none()
        );
        std::fs::rename(&path, dir.path().join("moved")).unwrap();
        assert!(!o.id.is_at(&path));
    }
}
