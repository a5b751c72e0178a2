//! The embedded store on a disk that fills up: the service says it is not
//! ready while its store cannot write, and recovers by itself once space is
//! freed (redb refuses every write after one I/O error until the database is
//! reopened).

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(20);

/// Deploys tried on the full disk before one must be refused: the first may
/// still find room in pages the store file already holds.
const FULL_DISK_DEPLOYS: usize = 20;

/// A small tmpfs mounted on a temporary dir, lazily unmounted on drop (the
/// service's runtime may still hold the store file open).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (`4m`); `None`, after saying so in one loud
    /// line, where mounting is not permitted (not root), unless the
    /// environment demands the test (`ENAC_CD_REQUIRE_DOCKER=1`, set by
    /// `scripts/test` on CI machines): then it fails.
    fn mount(size: &str, test: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().expect("a temporary dir");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount runs");
        if mounted.status.success() {
            return Some(SmallDisk { dir });
        }
        let why = String::from_utf8_lossy(&mounted.stderr);
        let why = why.trim();
        assert!(
            std::env::var("ENAC_CD_REQUIRE_DOCKER").as_deref() != Ok("1"),
            "ENAC_CD_REQUIRE_DOCKER=1 but a tmpfs cannot be mounted ({why}): {test} cannot run"
        );
        // Straight to the process's stderr: libtest would swallow an
        // `eprintln!` of a passing test.
        let _ = writeln!(
            std::io::stderr(),
            "*** CANNOT MOUNT A TMPFS (root needed): full-disk test {test} did not run ***"
        );
        None
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a filler file until the disk is full; returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut filler = std::fs::File::create(&path).expect("filler created");
        let chunk = vec![0xA5_u8; 64 * 1024];
        loop {
            match filler.write_all(&chunk) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::StorageFull => return path,
                Err(error) => panic!("filling {}: {error}", path.display()),
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

/// Polls `/readyz` until it answers `wanted`; returns its body.
async fn wait_readyz(app: &TestApp, wanted: u16, what: &str) -> serde_json::Value {
    eventually(what, DEADLINE, || async {
        let (status, body) = read(app.get("/readyz").await).await;
        (status == wanted).then_some(body)
    })
    .await
}

#[tokio::test]
async fn a_full_disk_makes_the_embedded_store_unready_until_space_is_freed() {
    let test = "a_full_disk_makes_the_embedded_store_unready_until_space_is_freed";
    let Some(disk) = SmallDisk::mount("4m", test) else {
        return;
    };
    let app = TestApp::start(Backend::Embedded, &[], |settings| {
        settings.data_dir = disk.path().to_owned();
    })
    .await;
    // Each deploy on the full disk has its own inventory: one that still
    // starts a job must not turn the next into a busy answer, which only reads.
    let full: Vec<(String, String)> = (0..FULL_DISK_DEPLOYS)
        .map(|index| (format!("full-{index}"), format!("exit-ok-full-{index}")))
        .collect();
    let mut apps: Vec<(&str, &str)> = full
        .iter()
        .map(|(id, inventory)| (id.as_str(), inventory.as_str()))
        .collect();
    apps.push(("after", "ok-after"));
    app.set_apps(&apps).await;
    let (status, body) = read(app.get("/readyz").await).await;
    assert_eq!(status, 200, "{body}");

    let filler = disk.fill();
    let mut refused = None;
    for (id, _) in &full {
        let (status, body) = app
            .post(
                "/app-deploy/",
                &json!({"deployment_id": id, "deployment_secret": SECRET}),
            )
            .await;
        if status == 503 {
            refused = Some(body);
            break;
        }
        assert_eq!(status, 200, "{body}");
    }
    let refused = refused.unwrap_or_else(|| {
        panic!("none of {FULL_DISK_DEPLOYS} deploys on a full disk answered 503")
    });
    assert_error_body(&refused);
    // The store may reopen once and find room for its probe before it too
    // needs a page the disk cannot give.
    let unready = wait_readyz(&app, 503, "/readyz to answer 503 on the full disk").await;
    assert_error_body(&unready);

    std::fs::remove_file(&filler).expect("filler removed");
    wait_readyz(&app, 200, "/readyz to answer 200 once space is freed").await;
    let started = app.deploy("after").await;
    assert_eq!(started["status"], "starting", "{started}");
    let done = app
        .wait_final("after", &job_id_of(&started), DEADLINE)
        .await;
    assert_eq!(done["status"], "success", "{done}");
    assert_eq!(done["output"], "step 1\ndone\n");
}
