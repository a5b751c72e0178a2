//! Files that hold keys, jobs or logs are the service user's alone: the
//! embedded store keeps the generated signing key, and anyone who reads it
//! can forge job tokens. Directories are made 0700 and files 0600; looser
//! modes found on existing ones are tightened, and said so in the log.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// Sets `mode` on `path` when its group or other bits go beyond it.
fn tighten(path: &Path, mode: u32) -> io::Result<()> {
    let current = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if current & !mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        tracing::warn!(path = %path.display(), was = format!("{current:o}"), now = format!("{mode:o}"),
                       "tightened the mode of a file other users could read");
    }
    Ok(())
}

/// Creates `dir` (and its parents) if needed; `dir` itself is made 0700.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    tighten(dir, DIR_MODE)
}

/// Opens `path` for writing, created 0600 (an existing file is truncated
/// and its mode tightened).
pub fn create_private_file(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    tighten(path, FILE_MODE)?;
    Ok(file)
}

/// Makes sure `path` exists (empty if new) with mode 0600, without touching
/// its content.
pub fn ensure_private_file(path: &Path) -> io::Result<()> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(path)?;
    tighten(path, FILE_MODE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn new_and_loose_files_and_dirs_end_private() {
        let root = tempfile::tempdir().expect("temp dir");
        let dir = root.path().join("data");
        private_dir(&dir).expect("dir");
        assert_eq!(mode(&dir), 0o700);
        let file = dir.join("store");
        ensure_private_file(&file).expect("file");
        assert_eq!(mode(&file), 0o600);

        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::write(&file, b"kept").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        private_dir(&dir).expect("dir");
        ensure_private_file(&file).expect("file");
        assert_eq!((mode(&dir), mode(&file)), (0o700, 0o600));
        assert_eq!(std::fs::read(&file).expect("read"), b"kept", "content kept");

        let log = dir.join("job.log");
        drop(create_private_file(&log).expect("log"));
        assert_eq!(mode(&log), 0o600);
    }
}
