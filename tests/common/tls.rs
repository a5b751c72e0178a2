//! A private CA made with `openssl`, a server certificate for 127.0.0.1 it
//! signed, and a TLS endpoint that carries connections to a plain server,
//! as a reverse proxy in front of a self-managed GitLab would.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

/// `ca.pem` (with its key) and `server.pem`/`server.key` for 127.0.0.1,
/// valid for two days, in a directory of their own.
pub struct TestCertificates {
    dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect(
            "\n*** openssl is needed to make the test's certificates (apt-get install openssl)\n",
        );
    assert!(status.success(), "openssl {args:?} failed");
}

impl TestCertificates {
    pub fn make() -> TestCertificates {
        let dir = tempfile::tempdir().expect("a dir for certificates");
        let path = dir.path();
        openssl(
            path,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=enac-cd test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        );
        openssl(
            path,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ],
        );
        std::fs::write(path.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("ext file");
        openssl(
            path,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "san.ext",
                "-out",
                "server.pem",
            ],
        );
        TestCertificates { dir }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA certificate, what `CD_CA_FILE` or `SSL_CERT_FILE` names.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn server_certificate(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    pub fn server_key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }

    fn acceptor(&self) -> TlsAcceptor {
        let pem = |path: PathBuf| std::fs::read(path).expect("certificate file read");
        let chain = rustls_pemfile::certs(&mut pem(self.server_certificate()).as_slice())
            .collect::<Result<Vec<_>, _>>()
            .expect("server certificate PEM");
        let key = rustls_pemfile::private_key(&mut pem(self.server_key()).as_slice())
            .expect("server key PEM")
            .expect("a private key");
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server TLS config");
        TlsAcceptor::from(Arc::new(config))
    }
}

/// HTTPS (any TLS) on a free loopback port, carried to the plain server on
/// `127.0.0.1:<target>`; stops accepting when dropped.
pub struct TlsProxy {
    pub port: u16,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsProxy {
    pub async fn start(certificates: &TestCertificates, target: u16) -> TlsProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the TLS proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let acceptor = certificates.acceptor();
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that refuses our certificate ends here.
                    let Ok(mut tls) = acceptor.accept(client).await else {
                        return;
                    };
                    let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
                });
            }
        });
        TlsProxy { port, accepting }
    }

    /// `https://127.0.0.1:<port>`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}
