//! `CD_CA_FILE`: CA certificates trusted on top of the system's trust store
//! (which `SSL_CERT_FILE`/`SSL_CERT_DIR` replace), for a self-managed GitLab,
//! GitHub Enterprise or Redis behind a private CA.

use std::path::Path;

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

use super::{invalid, SettingsError};

/// The certificates of `CD_CA_FILE`, checked at start.
#[derive(Clone)]
pub struct PrivateCas {
    der: Vec<CertificateDer<'static>>,
    certificates: Vec<reqwest::Certificate>,
}

/// Whether rustls takes `der` as a trust anchor.
fn is_usable_root(der: &CertificateDer<'static>) -> Result<(), rustls::Error> {
    RootCertStore::empty().add(der.clone())
}

impl PrivateCas {
    /// Reads and checks the file; the error names `CD_CA_FILE` and the path.
    pub fn load(path: &Path) -> Result<PrivateCas, SettingsError> {
        let bad = |reason: String| invalid("CD_CA_FILE", format!("`{}`: {reason}", path.display()));
        let pem = std::fs::read(path).map_err(|error| bad(format!("cannot read: {error}")))?;
        let der = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| bad(format!("not PEM: {error}")))?;
        if der.is_empty() {
            return Err(bad("no `BEGIN CERTIFICATE` block".into()));
        }
        let mut certificates = Vec::with_capacity(der.len());
        for (index, certificate) in der.iter().enumerate() {
            let unusable = |error: String| {
                bad(format!(
                    "certificate {} is not a usable CA certificate: {error}",
                    index + 1
                ))
            };
            is_usable_root(certificate).map_err(|error| unusable(error.to_string()))?;
            certificates.push(
                reqwest::Certificate::from_der(certificate)
                    .map_err(|error| unusable(error.to_string()))?,
            );
        }
        Ok(PrivateCas { der, certificates })
    }

    /// For `reqwest::ClientBuilder::add_root_certificate`, which adds to the
    /// system's roots.
    pub fn certificates(&self) -> &[reqwest::Certificate] {
        &self.certificates
    }

    /// The system's roots and these, as PEM: redis-rs takes one bundle that
    /// replaces its roots instead of adding to them.
    pub fn with_system_roots_pem(&self) -> Vec<u8> {
        // redis-rs refuses a whole bundle for one certificate rustls cannot
        // use, and system stores carry a few: those are left out, as reqwest does.
        let system = rustls_native_certs::load_native_certs()
            .certs
            .into_iter()
            .filter(|der| is_usable_root(der).is_ok());
        let mut pem = String::new();
        for der in system.chain(self.der.iter().cloned()) {
            let encoded = base64::engine::general_purpose::STANDARD.encode(der);
            pem.push_str("-----BEGIN CERTIFICATE-----\n");
            for line in encoded.as_bytes().chunks(64) {
                pem.push_str(&String::from_utf8_lossy(line));
                pem.push('\n');
            }
            pem.push_str("-----END CERTIFICATE-----\n");
        }
        pem.into_bytes()
    }
}

impl std::fmt::Debug for PrivateCas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateCas({} certificates)", self.der.len())
    }
}
