//! https and wss on `--listen`: the certificate pair, its reload, and the
//! per-core TLS connections ([`conns`]).
//!
//! One [`ServerConfig`] serves every core (TLS 1.3 and 1.2, rustls with its
//! default provider, ALPN `http/1.1`). Its certificate comes from a resolver
//! that hands every new handshake the pair in force: a reload (`SIGHUP`)
//! swaps that pair, so new handshakes get the new one while open connections,
//! whose keys were agreed already, go on. A pair is checked whole before it is
//! put in force (files readable, PEM well-formed, the key matching the
//! certificate's public key); a broken one at start stops the server, at a
//! reload it is logged and the previous pair keeps serving.
//!
//! The records themselves are sealed and opened by rustls's unbuffered
//! `UnbufferedServerConnection`, in the core's scratch buffers, driven from the
//! connection's own read path and from the core's flush ([`conns`]); kernel TLS
//! is probed at start ([`probe_ktls`]) and not used (see the README's plan).

pub mod conns;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::proto::x509;
use crate::{info, warn};

/// The pair `--tls-cert` and `--tls-key` name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM: the leaf certificate first, then its chain.
    pub cert: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: PathBuf,
}

/// Why a certificate pair cannot serve. Each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read TLS certificate {path}: {source}")]
    ReadCert { path: PathBuf, source: io::Error },
    #[error("cannot read TLS key {path}: {source}")]
    ReadKey { path: PathBuf, source: io::Error },
    #[error("TLS certificate {path}: no PEM certificate in it ({reason})")]
    NoCert { path: PathBuf, reason: String },
    #[error("TLS key {path}: no usable PEM private key in it ({reason})")]
    NoKey { path: PathBuf, reason: String },
    #[error("TLS certificate {path} is not a certificate rustls accepts: {reason}")]
    BadCert { path: PathBuf, reason: String },
    #[error("TLS key {key} does not match the certificate {cert} (their public keys differ)")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// A checked pair, ready to serve.
struct Pair {
    key: Arc<CertifiedKey>,
    /// The leaf's `notAfter`, Unix seconds.
    not_after: u64,
}

/// Reads and checks the pair at `settings`.
fn load_pair(settings: &TlsSettings, provider: &CryptoProvider) -> Result<Pair, TlsError> {
    let (cert_path, key_path) = (&settings.cert, &settings.key);
    let cert_pem = std::fs::read(cert_path).map_err(|source| TlsError::ReadCert {
        path: cert_path.clone(),
        source,
    })?;
    let key_pem = std::fs::read(key_path).map_err(|source| TlsError::ReadKey {
        path: key_path.clone(),
        source,
    })?;
    let no_cert = |reason: String| TlsError::NoCert {
        path: cert_path.clone(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| no_cert(e.to_string()))?;
    if chain.is_empty() {
        return Err(no_cert("the file holds no CERTIFICATE block".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::NoKey {
        path: key_path.clone(),
        reason: e.to_string(),
    })?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::NoKey {
            path: key_path.clone(),
            reason: e.to_string(),
        })?;
    let not_after = x509::not_after(&chain[0]).map_err(|e| TlsError::BadCert {
        path: cert_path.clone(),
        reason: format!("cannot read its notAfter: {e}"),
    })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => {}
        // The provider could not tell the key's public half: nothing to compare.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            warn!(
                "msg=\"cannot check that the TLS key matches the certificate\" key={}",
                key_path.display()
            );
        }
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(TlsError::KeyMismatch {
                cert: cert_path.clone(),
                key: key_path.clone(),
            })
        }
        Err(e) => {
            return Err(TlsError::BadCert {
                path: cert_path.clone(),
                reason: e.to_string(),
            })
        }
    }
    Ok(Pair {
        key: Arc::new(certified),
        not_after,
    })
}

/// The pair in force, handed to every new handshake.
#[derive(Debug)]
struct InForce(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for InForce {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // Nothing panics while the lock is held: a poisoned lock still holds a pair.
        let pair = self.0.read().unwrap_or_else(|e| e.into_inner());
        Some(pair.clone())
    }
}

/// The process's TLS: the shared config, the pair in force, and the facts
/// `/metrics` shows about them.
pub struct Tls {
    settings: TlsSettings,
    provider: Arc<CryptoProvider>,
    in_force: Arc<InForce>,
    pub config: Arc<ServerConfig>,
    /// The leaf's `notAfter` of the pair in force, Unix seconds.
    not_after: AtomicU64,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("settings", &self.settings)
            .finish()
    }
}

impl Tls {
    /// Loads and checks the pair, builds the server config.
    pub fn load(settings: &TlsSettings) -> Result<Arc<Tls>, TlsError> {
        let provider = CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
        let pair = load_pair(settings, &provider)?;
        let in_force = Arc::new(InForce(RwLock::new(pair.key)));
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(in_force.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // Tickets are written right after the handshake, while the connection
        // is new; resumption keeps a reconnect storm from paying a full
        // signature per client. Two is rustls's default; one is enough for a
        // browser's next connection.
        config.send_tls13_tickets = 1;
        Ok(Arc::new(Tls {
            settings: settings.clone(),
            provider,
            in_force,
            config: Arc::new(config),
            not_after: AtomicU64::new(pair.not_after),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
        }))
    }

    /// Reads the pair again and, if it is whole, puts it in force for new
    /// handshakes; otherwise the pair in force stays. Logs either way.
    pub fn reload(&self) -> Result<(), TlsError> {
        match load_pair(&self.settings, &self.provider) {
            Ok(pair) => {
                *self.in_force.0.write().unwrap_or_else(|e| e.into_inner()) = pair.key;
                self.not_after.store(pair.not_after, Ordering::Relaxed);
                self.reloads_ok.fetch_add(1, Ordering::Relaxed);
                info!(
                    "msg=\"TLS pair reloaded\" cert={} not_after={}",
                    self.settings.cert.display(),
                    pair.not_after
                );
                Ok(())
            }
            Err(e) => {
                self.reloads_failed.fetch_add(1, Ordering::Relaxed);
                warn!("msg=\"TLS reload refused, the previous pair keeps serving\" error=\"{e}\"");
                Err(e)
            }
        }
    }

    /// The leaf's `notAfter` of the pair in force, Unix seconds.
    pub fn not_after(&self) -> u64 {
        self.not_after.load(Ordering::Relaxed)
    }

    /// Reloads that put a pair in force, and reloads refused.
    pub fn reloads(&self) -> (u64, u64) {
        (
            self.reloads_ok.load(Ordering::Relaxed),
            self.reloads_failed.load(Ordering::Relaxed),
        )
    }

    pub fn cert_path(&self) -> &Path {
        &self.settings.cert
    }
}

/// Whether the kernel offers kernel TLS: `setsockopt(TCP_ULP, "tls")` on a
/// fresh TCP socket fails with `ENOENT` when the `tls` module is absent
/// (CONFIG_TLS off), and with `ENOTCONN` when it is there (a ULP attaches only
/// to a connected socket). ringcast seals records with rustls either way; this
/// is logged once at start so the operator knows what the kernel could do.
pub fn probe_ktls() -> Result<(), io::Error> {
    // SAFETY: plain socket(2); the descriptor is closed below on every path.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let name = b"tls";
    // SAFETY: `name` is valid for `name.len()` bytes for the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_ULP,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    let err = io::Error::last_os_error();
    // SAFETY: `fd` is ours and closed once.
    unsafe { libc::close(fd) };
    match (rc, err.raw_os_error()) {
        (0, _) | (_, Some(libc::ENOTCONN)) => Ok(()),
        _ => Err(err),
    }
}

/// Probes kernel TLS and logs what was found, once per process.
pub fn log_ktls() {
    match probe_ktls() {
        Ok(()) => info!("msg=\"kernel TLS is available; records are still sealed by rustls (kTLS offload is planned, see README)\""),
        Err(e) => info!("msg=\"kernel TLS unavailable (setsockopt TCP_ULP tls: {e}); records are sealed by rustls\""),
    }
}
