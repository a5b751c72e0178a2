//! `enac-cd healthcheck`: asks a running service whether it is ready, for a
//! container's `HEALTHCHECK` (the image then needs no curl).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use clap::Args;

/// Exit codes as Docker's `HEALTHCHECK` reads them.
pub const HEALTHY: i32 = 0;
pub const UNHEALTHY: i32 = 1;

/// The longest answer printed; `/readyz` answers a few lines at most.
const MAX_PRINTED: usize = 4096;

#[derive(Clone, Debug, Args)]
pub struct HealthcheckArgs {
    /// The service's address, as `serve` was given it; an unspecified
    /// address (`0.0.0.0`) is asked on the loopback.
    #[arg(long, env = "CD_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// Ask this URL instead of the one `--listen` gives.
    #[arg(long)]
    pub url: Option<String>,
    /// Ask `/healthz` (the process answers) instead of `/readyz` (the store
    /// and the launcher answer too).
    #[arg(long)]
    pub live: bool,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3)]
    pub timeout: u64,
}

impl HealthcheckArgs {
    fn url(&self) -> String {
        if let Some(url) = &self.url {
            return url.clone();
        }
        let ip = match self.listen.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let path = if self.live { "healthz" } else { "readyz" };
        format!("http://{}/{path}", SocketAddr::new(ip, self.listen.port()))
    }
}

/// Prints what the service answered (Docker keeps it in the container's
/// health log, so `docker inspect` shows why it is unhealthy) and returns
/// the exit code.
pub async fn healthcheck(args: HealthcheckArgs) -> i32 {
    let url = args.url();
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout))
        .build()
    {
        Ok(http) => http,
        Err(error) => {
            println!("unhealthy: {error}");
            return UNHEALTHY;
        }
    };
    let response = match http.get(&url).send().await {
        Ok(response) => response,
        Err(error) => {
            println!("unhealthy: {url}: {error}");
            return UNHEALTHY;
        }
    };
    let status = response.status();
    let mut body = response.text().await.unwrap_or_default();
    if body.len() > MAX_PRINTED {
        let mut end = MAX_PRINTED;
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        body.truncate(end);
    }
    if status.is_success() {
        println!("healthy: {body}");
        HEALTHY
    } else {
        println!("unhealthy: HTTP {status}: {body}");
        UNHEALTHY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(listen: &str, live: bool) -> HealthcheckArgs {
        HealthcheckArgs {
            listen: listen.parse().expect("a socket address"),
            url: None,
            live,
            timeout: 3,
        }
    }

    #[test]
    fn an_unspecified_listen_address_is_asked_on_the_loopback() {
        assert_eq!(
            args("0.0.0.0:8000", false).url(),
            "http://127.0.0.1:8000/readyz"
        );
        assert_eq!(args("[::]:9000", true).url(), "http://[::1]:9000/healthz");
        assert_eq!(
            args("10.1.2.3:8000", false).url(),
            "http://10.1.2.3:8000/readyz"
        );
    }
}
