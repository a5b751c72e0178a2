//! A TCP proxy in front of a real server that can freeze the connections it
//! carries, as a dropped NAT entry or a partition does: nothing passes
//! either way, yet no socket closes. Connections opened later pass.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A proxy on a free loopback port, forwarding to `127.0.0.1:<target>`;
/// its connections close when it is dropped.
pub struct TcpProxy {
    pub port: u16,
    /// Cancelled to freeze the connections accepted since the last freeze.
    freeze: Arc<Mutex<CancellationToken>>,
    accepted: Arc<AtomicUsize>,
    closed: CancellationToken,
}

impl TcpProxy {
    pub async fn start(target: u16) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let proxy = TcpProxy {
            port,
            freeze: Arc::new(Mutex::new(CancellationToken::new())),
            accepted: Arc::new(AtomicUsize::new(0)),
            closed: CancellationToken::new(),
        };
        tokio::spawn(accept(
            listener,
            target,
            Arc::clone(&proxy.freeze),
            Arc::clone(&proxy.accepted),
            proxy.closed.clone(),
        ));
        proxy
    }

    /// A Redis URL through the proxy.
    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Stops forwarding on every connection open now, both ways, leaving
    /// their sockets open; connections accepted afterwards are forwarded.
    pub fn freeze_existing(&self) {
        let mut freeze = self.freeze.lock().expect("freeze token");
        freeze.cancel();
        *freeze = CancellationToken::new();
    }

    /// How many connections the proxy has accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

async fn accept(
    listener: TcpListener,
    target: u16,
    freeze: Arc<Mutex<CancellationToken>>,
    accepted: Arc<AtomicUsize>,
    closed: CancellationToken,
) {
    loop {
        let client = tokio::select! {
            () = closed.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => client,
                Err(_) => continue,
            },
        };
        accepted.fetch_add(1, Ordering::SeqCst);
        let frozen = freeze.lock().expect("freeze token").clone();
        tokio::spawn(forward(client, target, frozen, closed.clone()));
    }
}

async fn forward(
    mut client: TcpStream,
    target: u16,
    frozen: CancellationToken,
    closed: CancellationToken,
) {
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)).await else {
        return;
    };
    // Biased: once frozen, not one more byte passes, even one already waiting.
    tokio::select! {
        biased;
        () = frozen.cancelled() => {}
        () = closed.cancelled() => return,
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
    }
    // Frozen: both sockets stay open and silent until the proxy goes.
    closed.cancelled().await;
}
