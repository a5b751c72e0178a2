//! Where the Docker engine is, and why it cannot be reached when it cannot:
//! bollard says only "client error (Connect)" for a socket the service may
//! not open, which leaves an operator guessing at group ids.

use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bollard::{Docker, API_DEFAULT_VERSION};

/// The engine's socket when neither `CD_DOCKER_HOST` nor `DOCKER_HOST` is set.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// An engine address, checked for its form but not reached: an engine that
/// is missing at start only makes `/readyz` answer 503 until it appears.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EngineAddress {
    Unix(PathBuf),
    /// `tcp://` or `http://` (a socket proxy, a remote engine).
    Http(String),
}

impl EngineAddress {
    /// `CD_DOCKER_HOST`, else `DOCKER_HOST`, else the default socket.
    pub fn resolve(setting: Option<&str>) -> Result<EngineAddress, String> {
        let from_env = std::env::var("DOCKER_HOST").ok().filter(|v| !v.is_empty());
        match setting.map(str::to_owned).or(from_env) {
            None => Ok(EngineAddress::Unix(PathBuf::from(DEFAULT_SOCKET))),
            Some(host) => EngineAddress::parse(&host),
        }
    }

    pub fn parse(host: &str) -> Result<EngineAddress, String> {
        if let Some(path) = host.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(format!("`{host}` names no socket"));
            }
            return Ok(EngineAddress::Unix(PathBuf::from(path)));
        }
        if host.starts_with("tcp://") || host.starts_with("http://") {
            return Ok(EngineAddress::Http(host.to_owned()));
        }
        Err(format!(
            "`{host}` must start with unix://, tcp:// or http://"
        ))
    }

    /// A client for the address; bollard checks that a socket exists here,
    /// so this is called again on every attempt until the engine answers.
    pub fn connect(&self, timeout_secs: u64) -> Result<Docker, String> {
        let connected = match self {
            EngineAddress::Unix(path) => Docker::connect_with_unix(
                &path.to_string_lossy(),
                timeout_secs,
                API_DEFAULT_VERSION,
            ),
            EngineAddress::Http(url) => {
                Docker::connect_with_http(url, timeout_secs, API_DEFAULT_VERSION)
            }
        };
        connected.map_err(|_| {
            self.diagnose()
                .unwrap_or_else(|| format!("cannot reach {self}"))
        })
    }

    /// Why the engine's socket cannot be opened, found by opening it
    /// ourselves; `None` where it opens (the fault is elsewhere) or for an
    /// address that is not a socket.
    pub fn diagnose(&self) -> Option<String> {
        let EngineAddress::Unix(path) = self else {
            return None;
        };
        let error = std::os::unix::net::UnixStream::connect(path).err()?;
        Some(match error.kind() {
            ErrorKind::NotFound => format!(
                "no socket at {} (mount the host's Docker socket there, or set CD_DOCKER_HOST)",
                path.display()
            ),
            ErrorKind::PermissionDenied => permission_denied(path),
            ErrorKind::ConnectionRefused => format!(
                "{} refuses connections: no engine listens on it",
                path.display()
            ),
            _ => format!("cannot open {}: {error}", path.display()),
        })
    }
}

impl std::fmt::Display for EngineAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineAddress::Unix(path) => write!(f, "unix://{}", path.display()),
            EngineAddress::Http(url) => f.write_str(url),
        }
    }
}

/// The socket's owner, group and mode against who we run as, and the group
/// that would let us in (compose: `group_add`, i.e. `DOCKER_GID`).
fn permission_denied(path: &Path) -> String {
    let us = format!(
        "uid {} with groups {}",
        current_uid(),
        list(&current_groups())
    );
    let Ok(meta) = std::fs::metadata(path) else {
        return format!(
            "permission denied on {} (this service runs as {us}; a directory on the way may be closed to it)",
            path.display()
        );
    };
    let kind = if meta.file_type().is_socket() {
        "socket"
    } else {
        "file (not a socket)"
    };
    format!(
        "permission denied on {} ({kind} owned by uid {} gid {}, mode {:04o}); this service runs as {us}: \
         add group {} to it (compose: DOCKER_GID={})",
        path.display(),
        meta.uid(),
        meta.gid(),
        meta.permissions().mode() & 0o777,
        meta.gid(),
        meta.gid(),
    )
}

fn current_uid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}

/// The effective gid first, then the supplementary groups.
fn current_groups() -> Vec<u32> {
    // SAFETY: getegid cannot fail.
    let mut groups = vec![unsafe { libc::getegid() }];
    // SAFETY: a zero-length call only counts; the second fills at most
    // `count` entries of a buffer that long.
    let count = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if let Ok(len) = usize::try_from(count) {
        let mut buffer = vec![0 as libc::gid_t; len];
        let filled = unsafe { libc::getgroups(count, buffer.as_mut_ptr()) };
        if let Ok(filled) = usize::try_from(filled) {
            buffer.truncate(filled);
            for gid in buffer {
                if !groups.contains(&gid) {
                    groups.push(gid);
                }
            }
        }
    }
    groups
}

fn list(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_sockets_or_http_and_nothing_else() {
        assert_eq!(
            EngineAddress::parse("unix:///run/docker.sock"),
            Ok(EngineAddress::Unix(PathBuf::from("/run/docker.sock")))
        );
        assert_eq!(
            EngineAddress::parse("tcp://proxy:2375"),
            Ok(EngineAddress::Http("tcp://proxy:2375".to_owned()))
        );
        for bad in [
            "unix://",
            "ssh://host",
            "/var/run/docker.sock",
            "npipe:////./pipe/x",
        ] {
            assert!(EngineAddress::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn a_missing_socket_is_named_and_connecting_waits_for_it() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let address = EngineAddress::Unix(dir.path().join("docker.sock"));

        let error = address.connect(5).expect_err("no socket yet");

        assert!(error.contains("no socket at"), "{error}");
        assert!(error.contains("docker.sock"), "{error}");
        let _listener = std::os::unix::net::UnixListener::bind(dir.path().join("docker.sock"))
            .expect("a socket");
        assert!(
            address.connect(5).is_ok(),
            "connects once the socket exists"
        );
        assert_eq!(address.diagnose(), None, "the socket opens");
    }

    #[test]
    fn a_socket_nobody_listens_on_is_told_apart() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("docker.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).expect("a socket"));

        let reason = EngineAddress::Unix(path).diagnose().expect("a reason");

        assert!(reason.contains("refuses connections"), "{reason}");
    }

    #[test]
    fn permission_denied_names_the_sockets_group_and_ours() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("docker.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&path).expect("a socket");
        let gid = std::fs::metadata(&path).expect("metadata").gid();

        let reason = permission_denied(&path);

        assert!(reason.contains("socket owned by"), "{reason}");
        assert!(reason.contains(&format!("add group {gid}")), "{reason}");
        assert!(
            reason.contains(&format!("uid {}", current_uid())),
            "{reason}"
        );
    }
}
