//! A real headless Chromium driven through chromedriver (WebDriver), both
//! Debian's packages (`scripts/test` installs them when missing).

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

use super::free_port;

/// A running chromedriver and one browser session on it; both end on drop.
pub struct Browser {
    pub client: Client,
    driver: Child,
}

const CHROMIUM: &str = "/usr/bin/chromium";

impl Browser {
    /// A headless Chromium `width` pixels wide.
    pub async fn start(width: u32) -> Browser {
        let port = free_port();
        // Its own process group: the browsers it starts end with it.
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "\n\n*** chromedriver cannot be started ({error}).\n*** The status page tests need a \
                     real browser: `apt-get install chromium chromium-driver` (scripts/test installs them).\n\n"
                )
            });
        let until = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < until, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            serde_json::json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", format!("--window-size={width},900")],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a browser session on chromedriver");
        Browser { client, driver }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("the page loads");
    }

    /// The first element matching `css`, waiting for it up to 10 s.
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|error| panic!("no element {css}: {error}"))
    }

    /// How many elements match `css` now.
    pub async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .expect("a query")
            .len()
    }

    /// Signs in with `token` on the login page.
    pub async fn sign_in(&self, base: &str, token: &str) {
        self.goto(&format!("{base}/ui/login")).await;
        let field = self.find("input[name=token]").await;
        field.send_keys(token).await.expect("typing the token");
        self.find("form.login button[type=submit]")
            .await
            .click()
            .await
            .expect("submitting");
    }

    pub async fn path(&self) -> String {
        self.client
            .current_url()
            .await
            .expect("the current url")
            .path()
            .to_owned()
    }

    /// Saves a PNG of the page to `path`.
    pub async fn screenshot(&self, path: &std::path::Path) {
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::write(path, png).expect("the screenshot is written");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SAFETY: kill(2) of the process group this test started.
        unsafe { libc::kill(-(self.driver.id() as i32), libc::SIGKILL) };
        let _ = self.driver.wait();
    }
}
