//! The accept loop: every connection has a header-read timeout (which also
//! closes a keep-alive connection idle that long), every request body a
//! read timeout, the number of open connections a cap, and a stop drains
//! what is in flight for at most a deadline. A half-sent request can hold
//! neither a descriptor nor a shutdown for long.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_http::timeout::RequestBodyTimeoutLayer;

/// `CD_HEADER_TIMEOUT`, `CD_BODY_TIMEOUT`, `CD_MAX_CONNECTIONS`, `CD_DRAIN_TIMEOUT`.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// A request head (or, on a kept-alive connection, the next one) must
    /// arrive within this.
    pub header_timeout: Duration,
    /// A request body must arrive within this.
    pub body_timeout: Duration,
    /// Connections open at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// How long a stop waits for requests in flight.
    pub drain_timeout: Duration,
}

/// Serves `router` on `listener` until `shutdown`, then drains.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = router.layer(RequestBodyTimeoutLayer::new(limits.body_timeout));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        // At the cap, stop accepting: new connections wait in the backlog.
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot,
            _ = &mut shutdown => break,
        };
        let Ok(slot) = slot else { break };
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors and the like: pause instead of spinning.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _ = connection.await;
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after the drain timeout: stopping without them");
    }
    Ok(())
}
