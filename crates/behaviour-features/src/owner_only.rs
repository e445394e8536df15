//! Creating files that hold partner row-level data (rejects files, local
//! scores) readable and writable by their owner only.
//!
//! The default `File::create` leaves the mode to the umask, typically
//! `0o644`: every local account could read a partner's rows. One helper,
//! in the lowest crate every row writer depends on, so the rule is written
//! once.

use std::fs::File;
use std::io;
use std::path::Path;

/// Creates (or truncates) `path` for writing with mode `0o600` on Unix.
///
/// The mode is given at creation, so the file is never briefly readable by
/// others; and because `mode` only applies to a newly created file, an
/// existing file's permissions are also narrowed through the open handle
/// (no window in which the path could be swapped). Elsewhere this is
/// `File::create`.
///
/// Missing parent folders are created owner-only too ([`create_owner_only_dir_all`]):
/// a partner who points `rejects_path` or `--out` at a new folder gets the
/// folder, not an exit after the whole log was read.
pub fn create_owner_only(path: &Path) -> io::Result<File> {
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        create_owner_only_dir_all(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let file = options.open(path)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        Ok(file)
    }
    #[cfg(not(unix))]
    {
        options.open(path)
    }
}

/// Creates `dir` and any missing parents; the folders it creates get mode
/// `0o700` on Unix. Existing folders keep their mode: they are the partner's
/// own choice.
pub fn create_owner_only_dir_all(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

#[cfg(all(test, unix))]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .map(|metadata| metadata.permissions().mode())
            .unwrap_or(0o777)
    }

    #[test]
    fn new_files_are_owner_only() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("rows.csv");
        let mut file = create_owner_only(&path)?;
        file.write_all(b"row\n")?;
        assert_eq!(mode(&path) & 0o077, 0, "mode {:o}", mode(&path));
        Ok(())
    }

    #[test]
    fn missing_parent_folders_are_created_owner_only() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("new").join("deeper").join("rows.csv");
        drop(create_owner_only(&path)?);
        assert!(path.is_file());
        for folder in [
            dir.path().join("new"),
            dir.path().join("new").join("deeper"),
        ] {
            assert_eq!(
                mode(&folder) & 0o077,
                0,
                "{}: mode {:o}",
                folder.display(),
                mode(&folder)
            );
        }
        Ok(())
    }

    #[test]
    fn an_existing_world_readable_file_is_narrowed_and_truncated() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("rows.csv");
        std::fs::write(&path, b"old rows\n")?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        drop(create_owner_only(&path)?);
        assert_eq!(mode(&path) & 0o077, 0, "mode {:o}", mode(&path));
        assert_eq!(std::fs::read(&path)?, b"");
        Ok(())
    }
}
