//! Which files a tail listener follows: its `paths` globs less its `exclude` globs, found by
//! walking the directories the globs can reach. Compressed files are never followed.

use std::path::{Component, Path, PathBuf};

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

/// Names of compressed files: never read as text, whatever the globs say.
const COMPRESSED: &[&str] = &[".gz", ".bz2", ".xz", ".zst", ".lz4", ".zip", ".Z"];
/// How deep a `**` pattern walks below its fixed directory.
const MAX_DEPTH_RECURSIVE: usize = 16;

/// The compiled `paths` and `exclude`.
#[derive(Debug, Clone)]
pub struct Patterns {
    include: GlobSet,
    exclude: GlobSet,
    /// Per pattern: the directory before its first wildcard, and how many levels below it a
    /// matching file may be.
    roots: Vec<(PathBuf, usize)>,
}

/// Compiles one `paths` glob: absolute, `*` not crossing `/`.
pub fn include_glob(pattern: &str) -> Result<Glob, String> {
    if !Path::new(pattern).is_absolute() {
        return Err(format!("{pattern:?} is not an absolute path"));
    }
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map_err(|e| e.kind().to_string())
}

/// Compiles one `exclude` glob: matched against the whole path, `*` crossing `/`, so `*.gz`
/// excludes every `.gz` file.
pub fn exclude_glob(pattern: &str) -> Result<Glob, String> {
    Glob::new(pattern).map_err(|e| e.kind().to_string())
}

impl Patterns {
    /// Builds the matcher from globs already checked by [`include_glob`] and [`exclude_glob`].
    pub fn new(paths: &[String], exclude: &[String]) -> Result<Patterns, String> {
        let mut inc = GlobSetBuilder::new();
        let mut roots = Vec::new();
        for p in paths {
            inc.add(include_glob(p)?);
            roots.push(root_of(p));
        }
        let mut exc = GlobSetBuilder::new();
        for p in exclude {
            exc.add(exclude_glob(p)?);
        }
        Ok(Patterns {
            include: inc.build().map_err(|e| e.to_string())?,
            exclude: exc.build().map_err(|e| e.to_string())?,
            roots,
        })
    }

    /// Whether `path` is one to follow.
    pub fn matches(&self, path: &Path) -> bool {
        let name = path.as_os_str().to_string_lossy();
        self.include.is_match(path) && !self.exclude.is_match(path) && !is_compressed(&name)
    }

    /// The matching regular files now (symbolic links followed), and every directory walked
    /// (to be watched). Directories that cannot be read are skipped: they may appear later.
    pub fn scan(&self) -> (Vec<PathBuf>, Vec<PathBuf>) {
        let mut files = Vec::new();
        let mut dirs = Vec::new();
        for (root, depth) in &self.roots {
            if dirs.contains(root) {
                continue;
            }
            self.walk(root, *depth, &mut files, &mut dirs);
        }
        files.sort();
        files.dedup();
        (files, dirs)
    }

    fn walk(&self, dir: &Path, depth: usize, files: &mut Vec<PathBuf>, dirs: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        dirs.push(dir.to_path_buf());
        for e in entries.flatten() {
            let path = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                if depth > 1 && !dirs.contains(&path) {
                    self.walk(&path, depth - 1, files, dirs);
                }
                continue;
            }
            if self.matches(&path) && std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
                files.push(path);
            }
        }
    }
}

/// Whether a file's name says it is compressed (never read as text).
pub fn is_compressed(name: &str) -> bool {
    COMPRESSED.iter().any(|s| name.ends_with(s))
}

/// The fixed directory of a glob (the components before the first with a wildcard) and the
/// depth below it its files may be at.
fn root_of(pattern: &str) -> (PathBuf, usize) {
    let mut root = PathBuf::new();
    let mut rest = 0;
    let mut recursive = false;
    let mut in_glob = false;
    let comps: Vec<Component> = Path::new(pattern).components().collect();
    for c in &comps {
        let s = c.as_os_str().to_string_lossy();
        if !in_glob && !s.contains(['*', '?', '[', '{']) {
            root.push(c);
        } else {
            in_glob = true;
            rest += 1;
            recursive |= s.contains("**");
        }
    }
    if !in_glob {
        // A plain path: its directory, one level.
        let dir = root.parent().map(Path::to_path_buf).unwrap_or(root);
        return (dir, 1);
    }
    (root, if recursive { MAX_DEPTH_RECURSIVE } else { rest })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_find_files_less_excluded_and_compressed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("sub/deeper")).unwrap();
        for f in [
            "a.log",
            "b.log",
            "b.log.1",
            "b.log.2.gz",
            "skip.log",
            "sub/c.log",
            "sub/deeper/d.log",
        ] {
            std::fs::write(d.join(f), b"x\n").unwrap();
        }
        let base = d.to_str().unwrap();
        let p = Patterns::new(
            &[format!("{base}/*.log*"), format!("{base}/sub/**/*.log")],
            &["*/skip.log".to_string()],
        )
        .unwrap();
        let (files, dirs) = p.scan();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.strip_prefix(d).unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            vec!["a.log", "b.log", "b.log.1", "sub/c.log", "sub/deeper/d.log"]
        );
        assert!(dirs.contains(&d.to_path_buf()));
        assert!(dirs.contains(&d.join("sub/deeper")));
    }

    #[test]
    fn roots_and_bad_globs() {
        assert_eq!(root_of("/var/log/*.log"), (PathBuf::from("/var/log"), 1));
        assert_eq!(root_of("/var/log/*/x.log"), (PathBuf::from("/var/log"), 2));
        assert_eq!(root_of("/var/log/app.log"), (PathBuf::from("/var/log"), 1));
        assert!(include_glob("var/*.log").unwrap_err().contains("absolute"));
        assert!(include_glob("/var/[a.log").is_err());
    }
}
