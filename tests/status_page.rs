//! The status page (contract §11): sessions over real HTTP (cookie flags,
//! logout that really ends a session, CSRF, who may cancel), then the pages
//! in a real headless Chromium: login, the lists after a deploy, output
//! appearing without a reload, cancel from the page, a viewer without the
//! cancel button, logout.
//!
//! Jobs run the fake program on a `hang*` inventory: it reports `running`
//! with `hanging\n`, then sleeps.

mod common;

use std::time::Duration;

use common::browser::Browser;
use common::program::{hanging_program, report};
use common::*;

const VIEWER_TOKEN: &str = "test-viewer-token-0123456789";
const DEADLINE: Duration = Duration::from_secs(20);

async fn service() -> TestApp {
    let viewer = format!("--viewer-token={VIEWER_TOKEN}");
    TestApp::start(Backend::Embedded, &[&viewer, "--job-timeout=60s"], |_| {}).await
}

/// A client that keeps cookies to itself and shows redirects as they are.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client")
}

/// Signs in with `token`; the answer as is.
async fn sign_in(app: &TestApp, http: &reqwest::Client, token: &str) -> reqwest::Response {
    http.post(app.url("/ui/login"))
        .form(&[("token", token)])
        .send()
        .await
        .expect("the login is sent")
}

/// The `name=value` part of the session cookie a login set.
fn session_cookie(response: &reqwest::Response) -> String {
    let set = response.headers()["set-cookie"].to_str().expect("ASCII");
    set.split(';').next().expect("a cookie").to_owned()
}

async fn page(app: &TestApp, http: &reqwest::Client, path: &str, cookie: &str) -> (u16, String) {
    let response = http
        .get(app.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .expect("the page is asked for");
    let status = response.status().as_u16();
    (status, response.text().await.expect("a body"))
}

/// The CSRF token a page's forms carry.
fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token");
    html[at + 19..at + 19 + 64].to_owned()
}

#[tokio::test]
async fn a_session_is_opened_by_a_token_and_ended_for_good_by_logout() {
    let app = service().await;
    let http = no_redirects();

    let (status, _) = page(&app, &http, "/ui/", "").await;
    assert_eq!(status, 303, "no session: to the login");
    let wrong = sign_in(&app, &http, "not-the-token").await;
    assert_eq!(wrong.status(), 401);
    assert!(
        wrong.headers().get("set-cookie").is_none(),
        "no session for a wrong token"
    );
    assert!(wrong
        .text()
        .await
        .expect("a body")
        .contains("not the admin or the viewer token"));

    let login = sign_in(&app, &http, ADMIN_TOKEN).await;
    assert_eq!(login.status(), 303);
    assert_eq!(login.headers()["location"], "/ui/");
    let set = login.headers()["set-cookie"]
        .to_str()
        .expect("ASCII")
        .to_owned();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=43200"] {
        assert!(set.contains(flag), "{flag} in {set}");
    }
    assert!(
        !set.contains(ADMIN_TOKEN),
        "the cookie holds only a random id"
    );
    let cookie = session_cookie(&login);
    let (status, html) = page(&app, &http, "/ui/", &cookie).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("signed in as admin"), "{html}");

    // A logout without the session's CSRF token is refused and ends nothing.
    let forged = http
        .post(app.url("/ui/logout"))
        .header("cookie", &cookie)
        .form(&[("csrf", "0".repeat(64))])
        .send()
        .await
        .expect("sent");
    assert_eq!(forged.status(), 403);
    assert_eq!(page(&app, &http, "/ui/", &cookie).await.0, 200);

    let logout = http
        .post(app.url("/ui/logout"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf_of(&html))])
        .send()
        .await
        .expect("sent");
    assert_eq!(logout.status(), 303);
    assert!(logout.headers()["set-cookie"]
        .to_str()
        .expect("ASCII")
        .contains("Max-Age=0"));
    let (status, _) = page(&app, &http, "/ui/", &cookie).await;
    assert_eq!(status, 303, "the old cookie, replayed, no longer works");
}

#[tokio::test]
async fn only_an_admin_session_with_its_csrf_token_cancels() {
    let app = service().await;
    app.set_apps(&[("app-hang", "hang-ui-csrf")]).await;
    let job = job_id_of(&app.deploy("app-hang").await);
    let _program = hanging_program(&app, &job, DEADLINE).await;
    let http = no_redirects();
    let viewer = session_cookie(&sign_in(&app, &http, VIEWER_TOKEN).await);
    let admin = session_cookie(&sign_in(&app, &http, ADMIN_TOKEN).await);
    let job_path = format!("/ui/jobs/{job}");

    let (_, viewer_page) = page(&app, &http, &job_path, &viewer).await;
    assert!(
        !viewer_page.contains("id=\"cancel\""),
        "a viewer sees no cancel button"
    );
    let (_, admin_page) = page(&app, &http, &job_path, &admin).await;
    assert!(admin_page.contains("id=\"cancel\""), "{admin_page}");
    let cancel = |cookie: String, csrf: String| {
        let request = http
            .post(app.url(&format!("{job_path}/cancel")))
            .header("cookie", cookie)
            .form(&[("csrf", csrf)]);
        async move { request.send().await.expect("sent").status().as_u16() }
    };
    assert_eq!(
        cancel(viewer.clone(), csrf_of(&viewer_page)).await,
        403,
        "a viewer"
    );
    assert_eq!(
        cancel(admin.clone(), csrf_of(&viewer_page)).await,
        403,
        "another session's token"
    );
    assert_eq!(
        app.job(&job).await.status.as_str(),
        "running",
        "nothing changed"
    );

    assert_eq!(cancel(admin, csrf_of(&admin_page)).await, 303);
    let done = app.wait_final("app-hang", &job, DEADLINE).await;
    assert_eq!(done["status"], "error", "{done}");
}

#[tokio::test]
async fn assets_are_embedded_and_cached_pages_are_not() {
    let app = service().await;
    let http = no_redirects();
    for (path, kind) in [
        ("/ui/static/style.css", "text/css"),
        ("/ui/static/app.js", "text/javascript"),
    ] {
        let response = http.get(app.url(path)).send().await.expect("sent");
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"]
            .to_str()
            .expect("ASCII")
            .starts_with(kind));
        assert!(response.headers()["cache-control"]
            .to_str()
            .expect("ASCII")
            .contains("max-age"));
    }
    let login = http.get(app.url("/ui/login")).send().await.expect("sent");
    assert_eq!(login.headers()["cache-control"], "no-store");
}

/// Where screenshots go when `ENAC_CD_SCREENSHOTS` names a directory.
fn screenshot_dir() -> Option<std::path::PathBuf> {
    std::env::var_os("ENAC_CD_SCREENSHOTS").map(std::path::PathBuf::from)
}

#[tokio::test]
async fn in_a_browser_an_admin_follows_a_running_job_live_and_cancels_it() {
    let app = service().await;
    app.set_apps(&[("app-hang", "hang-ui"), ("app-idle", "idle-inv")])
        .await;
    let job = job_id_of(&app.deploy("app-hang").await);
    let _program = hanging_program(&app, &job, DEADLINE).await;
    report(
        &app,
        &job,
        "running",
        "\u{1b}[0;32mok: [web1]\u{1b}[0m\n",
        true,
    )
    .await;
    let base = app.url("");
    let browser = Browser::start(1200).await;

    browser.sign_in(&base, "a-wrong-token").await;
    let error = browser.find("#login-error").await;
    assert!(error.text().await.expect("text").contains("not the admin"));
    browser.sign_in(&base, ADMIN_TOKEN).await;

    let row = browser.find("tr[data-deployment-id=app-hang]").await;
    assert_eq!(
        row.attr("data-job-id").await.expect("attr"),
        Some(job.clone())
    );
    assert_eq!(
        row.attr("data-status").await.expect("attr").as_deref(),
        Some("running")
    );
    assert_eq!(browser.count("tr[data-deployment-id=app-idle]").await, 1);
    if let Some(dir) = screenshot_dir() {
        browser
            .screenshot(&dir.join("status-deployments.png"))
            .await;
    }
    browser
        .find("a[href='/ui/deployments/app-hang']")
        .await
        .click()
        .await
        .expect("click");
    let job_row = browser.find(&format!("tr[data-job-id='{job}']")).await;
    assert_eq!(
        job_row.attr("data-status").await.expect("attr").as_deref(),
        Some("running")
    );
    if let Some(dir) = screenshot_dir() {
        browser.screenshot(&dir.join("status-deployment.png")).await;
    }
    browser
        .find(&format!("a[href='/ui/jobs/{job}']"))
        .await
        .click()
        .await
        .expect("click");
    let output = browser.find("#output").await;
    assert!(output.text().await.expect("text").contains("ok: [web1]"));
    assert_eq!(
        browser.count("#output span.ansi-32").await,
        1,
        "colours rendered"
    );

    // New output appears without a reload.
    report(&app, &job, "running", "TASK [restart] changed\n", true).await;
    eventually("the new output on the page", DEADLINE, || async {
        let text = browser.find("#output").await.text().await.expect("text");
        text.contains("TASK [restart] changed").then_some(())
    })
    .await;
    assert_eq!(
        output
            .text()
            .await
            .expect("text")
            .matches("ok: [web1]")
            .count(),
        1,
        "the stream starts where the page's output ends"
    );
    if let Some(dir) = screenshot_dir() {
        browser.screenshot(&dir.join("status-job.png")).await;
    }

    browser.find("#cancel").await.click().await.expect("click");
    eventually("the job to show as ended", DEADLINE, || async {
        let article = browser.find("article[data-job-id]").await;
        let status = article.attr("data-status").await.expect("attr");
        (status.as_deref() == Some("error")).then_some(())
    })
    .await;
    assert!(browser
        .find("#output")
        .await
        .text()
        .await
        .expect("text")
        .contains("cancelled by admin"));
    assert_eq!(
        browser.count("#cancel").await,
        0,
        "no cancel button on an ended job"
    );

    browser
        .find("form.logout button")
        .await
        .click()
        .await
        .expect("click");
    browser.find("input[name=token]").await;
    browser.goto(&format!("{base}/ui/")).await;
    assert_eq!(browser.path().await, "/ui/login", "signed out");
}

#[tokio::test]
async fn in_a_browser_a_viewer_on_a_phone_sees_no_cancel_button() {
    let app = service().await;
    app.set_apps(&[("app-hang", "hang-ui-viewer")]).await;
    let job = job_id_of(&app.deploy("app-hang").await);
    let _program = hanging_program(&app, &job, DEADLINE).await;
    let base = app.url("");
    let browser = Browser::start(375).await;
    browser.sign_in(&base, VIEWER_TOKEN).await;
    browser.find("tr[data-deployment-id=app-hang]").await;

    browser.goto(&format!("{base}/ui/jobs/{job}")).await;
    let article = browser.find("article[data-job-id]").await;
    assert_eq!(
        article.attr("data-status").await.expect("attr").as_deref(),
        Some("running")
    );
    assert_eq!(browser.count("#cancel").await, 0);
    let overflow = browser
        .client
        .execute(
            "const root = document.documentElement; \
             const wide = [...document.querySelectorAll('body *')] \
               .filter((e) => e.getBoundingClientRect().right > root.clientWidth + 1) \
               .map((e) => e.tagName + '.' + e.className); \
             return [root.scrollWidth - root.clientWidth, wide];",
            vec![],
        )
        .await
        .expect("a script");
    let sideways = overflow[0].as_f64().unwrap_or(f64::MAX);
    assert!(
        sideways <= 0.0,
        "no sideways scrolling on a phone (and what sticks out): {overflow}"
    );
}
