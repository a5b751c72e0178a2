//! The status page's HTML (maud: escaped at compile time). Plain pages that
//! read without JavaScript; `app.js` adds relative times and the live log.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::ansi;
use super::session::Role;
use crate::domain::{rfc3339_of_ms, Job, JobStatus, Trigger};
use crate::http::jobs_api::Deployment;

/// Bumped with the assets, so that browsers caching them fetch the new ones.
pub const ASSET_VERSION: &str = env!("CARGO_PKG_VERSION");

fn page(title: &str, session: Option<(Role, &str)>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · enac-cd" }
                link rel="stylesheet" href={ "/ui/static/style.css?v=" (ASSET_VERSION) };
                script src={ "/ui/static/app.js?v=" (ASSET_VERSION) } defer {}
            }
            body {
                header {
                    nav aria-label="main" {
                        a href="/ui/" { "enac-cd" }
                    }
                    @if let Some((role, csrf)) = session {
                        form method="post" action="/ui/logout" class="logout" {
                            span { "signed in as " (role_name(role)) }
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Admin => "admin",
        Role::Viewer => "viewer",
    }
}

/// The login form; `error` after a wrong token.
pub fn login(error: Option<&str>) -> Markup {
    page(
        "Sign in",
        None,
        html! {
            h1 { "Sign in" }
            form method="post" action="/ui/login" class="login" {
                @if let Some(error) = error {
                    p class="error" role="alert" id="login-error" { (error) }
                }
                label for="token" { "Admin or viewer token" }
                input id="token" name="token" type="password" autocomplete="current-password" required autofocus;
                button type="submit" { "Sign in" }
            }
        },
    )
}

fn time(ms: i64) -> Markup {
    let stamp = rfc3339_of_ms(ms);
    html! { time datetime=(stamp) { (stamp[..16].replace('T', " ")) " UTC" } }
}

fn status_badge(status: JobStatus) -> Markup {
    html! { span class={ "status status-" (status.as_str()) } { (status.as_str()) } }
}

/// Who and what triggered a job, in a few words.
fn trigger_line(trigger: &Trigger) -> String {
    let mut words = vec![trigger.kind.as_str().to_owned()];
    if let Some(git_ref) = &trigger.git_ref {
        words.push(git_ref.trim_start_matches("refs/heads/").to_owned());
    }
    if let Some(sha) = &trigger.sha {
        words.push(sha.chars().take(7).collect());
    }
    if let Some(actor) = &trigger.actor {
        words.push(format!("by {actor}"));
    }
    words.join(" ")
}

fn duration(job: &Job) -> String {
    let (Some(started), Some(finished)) = (job.started_at, job.finished_at) else {
        return String::new();
    };
    let seconds = (finished - started).max(0) / 1000;
    if seconds < 60 {
        format!("{seconds} s")
    } else {
        format!("{} min {} s", seconds / 60, seconds % 60)
    }
}

pub fn deployments(role: Role, csrf: &str, deployments: &[Deployment]) -> Markup {
    page(
        "Deployments",
        Some((role, csrf)),
        html! {
            h1 { "Deployments" }
            @if deployments.is_empty() {
                p { "No deployment yet: the app list is empty." }
            } @else {
                table class="list" {
                    thead { tr { th scope="col" { "Deployment" } th scope="col" { "Inventory" } th scope="col" { "Last job" } th scope="col" { "When" } th scope="col" { "Trigger" } } }
                    tbody {
                        @for deployment in deployments {
                            @let id = &deployment.app.deployment_id;
                            tr data-deployment-id=(id) data-job-id=[deployment.last_job.as_ref().map(|job| &job.id)] data-status=[deployment.last_job.as_ref().map(|job| job.status.as_str())] {
                                td { a href={ "/ui/deployments/" (id) } { (id) } }
                                td { (deployment.app.inventory) }
                                @if let Some(job) = &deployment.last_job {
                                    td { a href={ "/ui/jobs/" (job.id) } { (status_badge(job.status)) } }
                                    td { (time(job.created_at)) }
                                    td { (trigger_line(&job.trigger)) }
                                } @else {
                                    td colspan="3" { "never deployed" }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

pub fn deployment(role: Role, csrf: &str, deployment_id: &str, jobs: &[Job]) -> Markup {
    page(
        deployment_id,
        Some((role, csrf)),
        html! {
            p { a href="/ui/" { "← Deployments" } }
            h1 { (deployment_id) }
            @if jobs.is_empty() {
                p { "No job kept for this deployment." }
            } @else {
                table class="list" {
                    thead { tr { th scope="col" { "Job" } th scope="col" { "Status" } th scope="col" { "Trigger" } th scope="col" { "Started" } th scope="col" { "Duration" } } }
                    tbody {
                        @for job in jobs {
                            tr data-job-id=(job.id) data-status=(job.status.as_str()) {
                                td { a href={ "/ui/jobs/" (job.id) } { code { (job.id) } } }
                                td { (status_badge(job.status)) }
                                td { (trigger_line(&job.trigger)) }
                                td { (time(job.started_at.unwrap_or(job.created_at))) }
                                td { (duration(job)) }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// The offset after the output a page shows: its live stream starts there.
fn output_offset(job: &Job) -> u64 {
    crate::store::output_since(job, 0).end
}

pub fn job(role: Role, csrf: &str, job: &Job) -> Markup {
    let live = !job.status.is_final();
    page(
        &job.id,
        Some((role, csrf)),
        html! {
            p { a href={ "/ui/deployments/" (job.deployment_id) } { "← " (job.deployment_id) } }
            article class="job" data-job-id=(job.id) data-status=(job.status.as_str())
                data-live=[live.then(|| format!("/ui/jobs/{}/output?from={}", job.id, output_offset(job)))] {
                h1 { "Job " code { (job.id) } }
                dl class="facts" {
                    dt { "Status" } dd { (status_badge(job.status)) }
                    dt { "Deployment" } dd { (job.deployment_id) " on " (job.inventory) }
                    dt { "Trigger" } dd { (trigger_line(&job.trigger)) }
                    @if let Some(repository) = &job.trigger.repository { dt { "Repository" } dd { (repository) } }
                    dt { "Created" } dd { (time(job.created_at)) }
                    @if let Some(finished) = job.finished_at { dt { "Finished" } dd { (time(finished)) " (" (duration(job)) ")" } }
                    @if let Some(code) = job.exit_code { dt { "Exit code" } dd { (code) } }
                    @if let Some(by) = &job.cancelled_by { dt { "Cancelled by" } dd { (by) } }
                    @for report in &job.reports {
                        dt { "Reported to " (report.target.name()) }
                        @let state = report.state_for(job).as_str();
                        dd class={ "report report-" (state) } {
                            (state)
                            @if report.attempts > 1 { " after " (report.attempts) " tries" }
                            @if let Some(error) = &report.last_error { ": " (error) }
                        }
                    }
                }
                @if live && role == Role::Admin {
                    form method="post" action={ "/ui/jobs/" (job.id) "/cancel" } class="cancel" {
                        input type="hidden" name="csrf" value=(csrf);
                        button id="cancel" type="submit" { "Cancel this job" }
                    }
                }
                h2 { "Output" }
                pre id="output" tabindex="0" aria-live="polite" { (PreEscaped(ansi::to_html(&job.output))) }
            }
        },
    )
}
